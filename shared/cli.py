"""The `sdgate` command: serve | tiny-model | pull | bench | keys | db | usage | webhook-secret."""

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
    ensure_model(settings)  # the README's first start: the embedded tiny model, no weights needed
    if not settings.keys() and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s with no API keys: anyone who can reach it can generate",
                    args.host)
    from shared.observability import configure_logging
    # sdgate's own lines (model loads, jobs) at INFO; --log-level is uvicorn's access/error log
    log_config = configure_logging(settings.log_format, logging.INFO)
    if args.worker == "external":
        app = split_web_app(settings)
    else:
        app = create_app(settings)
        app.state.backend.warm(settings.default_model)  # first request must not pay the load
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                log_config=log_config)


def cmd_pull(args) -> None:
    """`sdgate pull ...`: infra.weights' filler into the local models folder."""
    from infra import weights
    from shared.config import Settings

    items, force = weights.parse(args.rest, prog="sdgate pull")
    root = Settings().models_dir
    try:
        lines = weights.fill(root, items, force, log=lambda line: print(line, flush=True))
    except weights.WeightsError as e:
        raise SystemExit(f"sdgate pull: {e}") from e
    print(f"{len(lines)} item(s) in {root}")


def split_web_app(settings):
    """The web tier alone (as a Modal web container): generation, jobs and webhooks run in a
    worker process (`python -m functions.local_worker`) reached only through the state store."""
    from shared.app import create_app
    from shared.remote import remote_backend
    from shared.state import make_state
    from shared.worker import HandoffRunner, QueueLauncher, StateRPC

    state = make_state(settings)
    rpc = StateRPC(state)
    backend = remote_backend(settings, rpc.call, rpc.op_call, rpc.memory)
    return create_app(settings, backend, state=state,
                      job_runner=HandoffRunner(state, settings, QueueLauncher(state)))


def cmd_tiny_model(args) -> None:
    from shared.engine.tiny import write_tiny_model

    out = write_tiny_model(Path(args.dir))
    print(f"wrote tiny random-weight SD pipeline to {out}")


def cmd_bench(args) -> None:
    from diffusers.utils import logging as diffusers_logging

    from shared.bench.runner import main as bench

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    diffusers_logging.disable_progress_bar()
    bench(args)


def add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="measure engine, HTTP, cold start, load, batching, "
                           "encoding and the GPU path (docs/bench.md)")
    bench.add_argument("--size", type=int, help="image side (default: 512; 1024 for sdxl)")
    bench.add_argument("--steps", type=int, help="steps (default: tiny 20, sd15 25, sdxl 30)")
    bench.add_argument("--arch", choices=["tiny", "sd15", "sdxl", "sd3", "flux"], default="tiny",
                       help="architecture for the GPU-path ladder (and, on a GPU, the served "
                       "model); full sizes use random weights built from shared/engine/archs")
    bench.add_argument("--model", help="serve this model from --models-dir instead")
    bench.add_argument("--models-dir", help="models folder for --model")
    bench.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    bench.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto")
    bench.add_argument("--quick", action="store_true", help="one repetition, fewer requests")
    bench.add_argument("--sections", help="comma-separated subset of encoding,serving,http,"
                       "batching,arch (default: all)")
    bench.add_argument("--compile", action="store_true",
                       help="include the torch.compile rung on a CPU too (slow to compile)")
    bench.add_argument("--compile-mode", default="max-autotune-no-cudagraphs")
    bench.add_argument("--compile-cache-dir", help="inductor cache (env SDGATE_COMPILE_CACHE_DIR)",
                       default=os.environ.get("SDGATE_COMPILE_CACHE_DIR"))
    bench.add_argument("--cache-dir", default=".sdgate/bench-models",
                       help="where random full-size models are written on a GPU")
    bench.add_argument("--out", help="write the results as JSON here")
    bench.add_argument("--chart", help="write a PNG chart here (needs matplotlib)")
    bench.set_defaults(func=cmd_bench)


def _database_url(args) -> str:
    """--database-url, else SDGATE_DATABASE_URL, else the local SQLite file under .sdgate/."""
    from shared.accounts import store
    from shared.config import Settings

    return args.database_url or Settings().database_url or store.default_url()


def cmd_keys(args) -> None:
    """`sdgate keys create|list|revoke` against SDGATE_DATABASE_URL (default: .sdgate/ SQLite)."""
    from shared.accounts import store
    url = _database_url(args)
    if args.action == "create":
        from shared.accounts.access import parse_scopes
        try:
            scopes = parse_scopes(args.scopes)
        except ValueError as e:
            raise SystemExit(str(e)) from e
        secret, rec = store.create(url, args.name or "unnamed", scopes)
        print(f"{rec.id}\t{secret}")  # the only time the secret is shown
    elif args.action == "list":
        for rec in store.list_keys(url):
            limits = " ".join(f"{n}={getattr(rec, n)}" for n in store.LIMITS
                              if getattr(rec, n) is not None and n != "quota_period")
            if rec.quota_images is not None or rec.quota_gpu_seconds is not None:
                limits += f" per {rec.quota_period}"
            print(f"{rec.id}\t{rec.name}\t{rec.status}\t{rec.scopes}\t{limits.strip()}")
    elif args.action == "limit":
        limits = {n: getattr(args, n) for n in store.LIMITS if getattr(args, n) is not None}
        if not limits:
            raise SystemExit("name a limit: --rpm, --max-concurrent, --quota-images, "
                             "--quota-gpu-seconds, --period (a value of none: unlimited)")
        if not store.set_limit(url, args.id, **{n: None if v == "none" else v
                                                 for n, v in limits.items()}):
            raise SystemExit(f"no key {args.id}")
    elif args.action == "revoke":
        if not store.revoke(url, args.id):
            raise SystemExit(f"no key {args.id}")


def _limit(kind):
    """An argparse type: a number, or `none` for unlimited."""
    def parse(text: str):
        return "none" if text.lower() in ("none", "unlimited") else kind(text)
    parse.__name__ = kind.__name__
    return parse


def add_keys(sub) -> None:
    keys = sub.add_parser("keys", help="manage API keys in the key database")
    keys.add_argument("action", choices=["create", "list", "revoke", "limit"])
    keys.add_argument("id", nargs="?", help="key id (revoke)")
    keys.add_argument("--name")
    keys.add_argument("--scopes", help="comma-separated API shapes, or admin")
    keys.add_argument("--rpm", type=_limit(int), help="requests per minute (none: unlimited)")
    keys.add_argument("--max-concurrent", dest="max_concurrent", type=_limit(int),
                      help="generations running at once")
    keys.add_argument("--quota-images", dest="quota_images", type=_limit(int),
                      help="images per --period")
    keys.add_argument("--quota-gpu-seconds", dest="quota_gpu_seconds", type=_limit(float),
                      help="GPU-seconds per --period")
    keys.add_argument("--period", dest="quota_period", choices=["day", "month"],
                      help="the quota's period, UTC calendar (default month)")
    keys.add_argument("--database-url", help="env SDGATE_DATABASE_URL")
    keys.set_defaults(func=cmd_keys)


def cmd_usage(args) -> None:
    """`sdgate usage [export --csv]`: totals per key, or every record for billing."""
    import csv
    import json

    from shared.accounts import store, usage
    from shared.accounts.api import parse_time
    url = _database_url(args)
    try:
        since, until = parse_time("since", args.since), parse_time("until", args.until, end=True)
    except Exception as e:  # noqa: BLE001 - ValidationFailed: the message is what matters
        raise SystemExit(str(e)) from e
    rows = list(reversed(usage.query(url, args.key, since, until)))  # oldest first
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        if args.action == "export" and args.json:
            for r in rows:
                out.write(json.dumps(usage.as_dict(r)) + "\n")
        elif args.action == "export":
            w = csv.writer(out)
            w.writerow(usage.COLUMNS)
            for r in rows:
                d = usage.as_dict(r)
                w.writerow([d[c] for c in usage.COLUMNS])
        else:
            names = {k.id: k.name for k in store.list_keys(url)}
            by_key: dict[str, list] = {}
            for r in rows:
                by_key.setdefault(r.key_id, []).append(r)
            out.write("key_id\tname\tgenerations\tok\tfailed\trefused\tinterrupted\timages"
                      "\tgpu_seconds\n")
            for kid, mine in sorted(by_key.items()):
                t = usage.totals(mine)
                counts = "\t".join(str(t["by_status"].get(s, 0))
                                   for s in ("ok", "failed", "refused", "interrupted"))
                out.write(f"{kid or '(open)'}\t{names.get(kid, '')}\t{t['generations']}\t"
                          f"{counts}\t{t['images']}\t{t['gpu_seconds']}\n")
    finally:
        if args.out:
            out.close()


def add_usage(sub) -> None:
    u = sub.add_parser("usage", help="usage records: totals per key, or export for billing")
    u.add_argument("action", nargs="?", choices=["summary", "export"], default="summary")
    u.add_argument("--csv", action="store_true", help="export as CSV (the default)")
    u.add_argument("--json", action="store_true", help="export as JSON lines")
    u.add_argument("--key", help="only this key id")
    u.add_argument("--since", help="ISO date or datetime, UTC (inclusive)")
    u.add_argument("--until", help="ISO date (inclusive) or datetime (exclusive), UTC")
    u.add_argument("--out", help="write here instead of stdout")
    u.add_argument("--database-url", help="env SDGATE_DATABASE_URL")
    u.set_defaults(func=cmd_usage)


def cmd_db(args) -> None:
    """`sdgate db upgrade|current`: the key/usage database schema, through Alembic."""
    from shared.accounts import store
    url = _database_url(args)
    if args.action == "upgrade":
        store.migrate(store.make_engine(url), args.revision)
    print(store.revision_of(url))


def add_db(sub) -> None:
    db = sub.add_parser("db", help="migrate the key and usage database (Alembic)")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("--revision", default="head", help="target revision (upgrade)")
    db.add_argument("--database-url", help="env SDGATE_DATABASE_URL")
    db.set_defaults(func=cmd_db)


def cmd_webhook_secret(args) -> None:
    """Print the webhook signing secret (generated and stored on first use when none is set)."""
    from shared import webhooks
    from shared.config import Settings

    settings = Settings()
    if settings.webhook_secret and not args.modal:
        print(settings.webhook_secret)
        return
    if args.modal:  # the deployed app's store: the sdgate-state Dict
        import modal

        from shared.deploy import DeployConfig
        from shared.state import ModalState

        config = DeployConfig()
        state = ModalState(modal.Dict.from_name(config.modal_state_dict, create_if_missing=True),
                           modal.Queue.from_name(config.modal_state_queue, create_if_missing=True))
    else:
        from shared.state import make_state

        state = make_state(Settings(**({"state_db": args.state_db} if args.state_db else {})))
    print(webhooks.secret_for(state))


def add_webhook_secret(sub) -> None:
    ws = sub.add_parser("webhook-secret", help="print the secret webhooks are signed with "
                        "(verify them with it; generated on first use unless "
                        "SDGATE_WEBHOOK_SECRET is set)")
    ws.add_argument("--state-db", help="the local state store (env SDGATE_STATE_DB)")
    ws.add_argument("--modal", action="store_true",
                    help="read the deployed Modal app's store (needs modal credentials)")
    ws.set_defaults(func=cmd_webhook_secret)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["pull"]:  # its options are the filler's own (infra.weights.parse)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return cmd_pull(argparse.Namespace(rest=argv[1:]))
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
    serve.add_argument("--worker", choices=["inline", "external"], default="inline",
                       help="inline: the engine in this process (default); external: only the "
                       "web tier, a `python -m functions.local_worker` process generates "
                       "(they share SDGATE_STATE_DB; docs/modal.md)")
    serve.set_defaults(func=cmd_serve)

    tiny = sub.add_parser("tiny-model", help="write the tiny random-weight SD pipeline to DIR")
    tiny.add_argument("dir")
    tiny.set_defaults(func=cmd_tiny_model)

    pull = sub.add_parser("pull", help="fill the local models folder (SDGATE_MODELS_DIR) as "
                          "the Modal weights filler does: --model, --checkpoint, --lora, "
                          "--embedding, --repo, --configs FAMILY (infra/weights.py)",
                          add_help=False)
    pull.add_argument("rest", nargs=argparse.REMAINDER)
    pull.set_defaults(func=cmd_pull)

    add_bench(sub)
    add_keys(sub)
    add_webhook_secret(sub)
    add_db(sub)
    add_usage(sub)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.func(args)


if __name__ == "__main__":
    main()
