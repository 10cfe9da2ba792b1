"""The `sdgate` command: serve | tiny-model (bench arrives with the benchmark)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("sdgate")


def ensure_model(settings) -> None:
    """Build the embedded tiny model when no model is configured and the models dir is empty."""
    from shared.engine.registry import ModelRegistry
    from shared.engine.tiny import TINY_NAME, write_tiny_model

    if settings.default_model or ModelRegistry(settings.models_dir).models():
        return
    target = Path(settings.models_dir) / TINY_NAME
    print(f"sdgate: no model configured; building the tiny random-weight model in {target} "
          "(it draws noise; see README to use real weights)", file=sys.stderr)
    write_tiny_model(target)


def cmd_serve(args) -> None:
    import uvicorn

    from shared.app import create_app
    from shared.config import Settings

    overrides = {k: v for k, v in {
        "models_dir": args.models_dir, "default_model": args.model, "api_keys": args.api_keys,
        "device": args.device, "output_dir": args.output_dir,
    }.items() if v is not None}
    if args.public_url or not os.environ.get("SDGATE_PUBLIC_URL"):
        overrides["public_url"] = args.public_url or f"http://{args.host}:{args.port}"
    settings = Settings(**overrides)
    ensure_model(settings)
    if not settings.keys() and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s with no API keys: anyone who can reach it can generate",
                    args.host)
    app = create_app(settings)
    app.state.backend.engine.warm(settings.default_model)  # first request must not pay the load
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def cmd_tiny_model(args) -> None:
    from shared.engine.tiny import write_tiny_model

    out = write_tiny_model(Path(args.dir))
    print(f"wrote tiny random-weight SD pipeline to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--models-dir", help="folder of models (env SDGATE_MODELS_DIR)")
    serve.add_argument("--model", help="default model name (env SDGATE_DEFAULT_MODEL)")
    serve.add_argument("--api-keys", help="comma-separated keys (env SDGATE_API_KEYS)")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"], help="env SDGATE_DEVICE")
    serve.add_argument("--output-dir", help="local result files (env SDGATE_OUTPUT_DIR)")
    serve.add_argument("--public-url", help="base URL of local result files "
                       "(default http://HOST:PORT; env SDGATE_PUBLIC_URL)")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)

    tiny = sub.add_parser("tiny-model", help="write the tiny random-weight SD pipeline to DIR")
    tiny.add_argument("dir")
    tiny.set_defaults(func=cmd_tiny_model)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
