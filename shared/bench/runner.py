"""`sdgate bench`: runs the sections in one process on one machine, prints, writes JSON."""

from __future__ import annotations

import base64
import gc
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

SECTIONS = ("encoding", "serving", "http", "batching", "arch")


def resolve_device(want: str) -> str:
    import torch

    return "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"


def machine(device: str) -> dict:
    import diffusers
    import torch

    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "cpus": os.cpu_count(), "device": device,
            "gpu": gpu, "platform": platform.platform(), "torch_threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = os.getloadavg()
    return info


def prepare_model(args, device: str, work: Path) -> tuple[Path, str | None, str]:
    """(models dir, model name, description) the serving sections use."""
    if args.models_dir:
        return Path(args.models_dir), args.model, f"model {args.model or '(default)'} from {args.models_dir}"
    if args.arch in ("sd15", "sdxl") and device == "cuda":
        from shared.engine.accel import AccelOptions
        from shared.engine.archs import write_random_model

        root = Path(args.cache_dir)
        name = f"random-{args.arch}"
        write_random_model(args.arch, root / name, device, AccelOptions().torch_dtype(device))
        return root, name, f"{args.arch} architecture, random weights ({root / name})"
    from shared.engine.tiny import TINY_NAME, write_tiny_model

    write_tiny_model(work / "models" / TINY_NAME)
    return work / "models", TINY_NAME, "tiny random-weight model (shared/engine/tiny.py)"


def init_png_b64(size: int) -> str:
    from shared.bench.encoding import photo_like

    buf = io.BytesIO()
    photo_like(size).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode()


def main(args) -> dict:
    """Run the sections asked for; temporary models, outputs and logs are removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix="sdgate-bench-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> dict:
    from shared.bench import report
    from shared.bench.arch import DEFAULT_STEPS, NATIVE
    from shared.bench.shapes import Params

    device = resolve_device(args.device)
    sections = args.sections.split(",") if args.sections else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    reps = 1 if args.quick else 3
    # full size on a CPU: smoke only; SD3 / Flux serve the tiny model (ladder only)
    serving_arch = args.arch if device == "cuda" and args.arch in ("sd15", "sdxl") else "tiny"
    size = args.size or NATIVE.get(serving_arch, 512)
    steps = args.steps or DEFAULT_STEPS[serving_arch]
    meta = machine(device)
    results: dict = {"meta": meta, "args": {k: v for k, v in vars(args).items() if k != "func"}}
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[bench {time.perf_counter() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    models_dir, model, described = ([None] * 3)
    if {"serving", "http", "batching"} & set(sections):
        log("preparing the model")
        models_dir, model, described = prepare_model(args, device, work)
    meta["model"] = described
    meta["summary"] = f"{meta['gpu'] or 'CPU'} ({meta['cpus']} cores), torch {meta['torch']}, " + (
        f"{described}, {size}x{size}, {steps} steps" if described else f"--arch {args.arch}")
    params = Params(size=size, steps=steps, seed=1234, init_b64=init_png_b64(size))

    if "encoding" in sections:
        from shared.bench import encoding

        log("encoding")
        sizes = (512,) if args.quick else (512, 1024)
        contents = ("photo-like",) if args.quick else ("photo-like", "noise")
        results["encoding"] = encoding.run(sizes, contents, reps=max(reps, 3))

    if "serving" in sections:
        log("serving: cold start and concurrent clients")
        results["serving"] = serving(args, models_dir, model, device, work, params, log)

    if {"http", "batching"} & set(sections):
        from shared.app import create_app, local_backend
        from shared.config import Settings

        settings = Settings(models_dir=models_dir, default_model=model, device=device,
                            output_dir=work / "outputs", public_url="http://127.0.0.1",
                            jobs_db=work / "jobs.sqlite3")
        backend = local_backend(settings)
        backend.engine.warm(model)
        if "http" in sections:
            from shared.bench import http

            log("engine vs HTTP per API shape")
            results["http"] = http.run(lambda b: create_app(settings, b), backend, params,
                                       reps=1 if args.quick else 5)  # small differences: more reps
        if "batching" in sections:
            from shared.bench import batch

            log("batching")
            results["batching"] = batch.run(backend.engine, params, images=4, reps=reps)
        del backend
        gc.collect()
        if device == "cuda":
            import torch

            torch.cuda.empty_cache()

    if "arch" in sections:
        from shared.bench import arch

        log(f"GPU path ladder on {args.arch}")
        compile_mode = args.compile_mode if (device == "cuda" or args.compile) else None
        results["arch"] = arch.run(args.arch, device, args.size, args.steps, reps, args.dtype,
                                   compile_mode, args.compile_cache_dir)

    if hasattr(os, "getloadavg"):
        meta["loadavg_end"] = os.getloadavg()
    meta["bench_s"] = time.perf_counter() - t_start
    text = report.render(results)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))
        log(f"wrote {args.out}")
    if args.chart:
        if report.png_chart(results, Path(args.chart)):
            log(f"wrote {args.chart}")
        else:
            log("matplotlib is not installed (pip install 'sdgate[bench]'): no PNG chart")
    return results


def serving(args, models_dir, model, device, work, params, log) -> dict:
    """Cold start of a child `sdgate serve`, then concurrent clients against it.

    In a full run a second server without batching answers the same load; the two take turns
    level by level (an idle server costs nothing), so a busy neighbour hits both alike.
    """
    from contextlib import ExitStack

    from shared.bench.server import Child
    from shared.bench.serving import cold_start, load_test
    from shared.bench.shapes import SHAPES
    from shared.config import Settings

    shape = next(s for s in SHAPES if s.path == "/txt2img")  # the foundation's shape: always there
    requests = 4 if args.quick else 8
    limit = 120.0 if args.quick else 600.0
    batch = Settings().max_batch  # the children read the same environment
    out = {"load": []}
    with ExitStack() as stack:
        first = stack.enter_context(Child(models_dir, work / "serve", model, device))
        out["cold_start"] = cold_start(first, shape, params)
        servers = [(f"max_batch={batch}", first)]
        if not args.quick and batch > 1:
            off = stack.enter_context(Child(models_dir, work / "serve-off", model, device,
                                            {"SDGATE_MAX_BATCH": "1"}))
            cold_start(off, shape, params)  # its first-request warm-up stays out of the figures
            servers.append(("max_batch=1 (off)", off))
        for clients in (1, 4):
            for label, child in servers:
                log(f"  {clients} client(s), {label}")
                row = load_test(child.url, shape, params, clients, requests, limit)
                out["load"].append({"batching": label, **row})
    return out
