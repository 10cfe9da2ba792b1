"""Printing the benchmark: plain tables, ASCII bar charts, and a PNG chart when matplotlib is there."""

from __future__ import annotations

from pathlib import Path


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict], cols: list[tuple[str, str]]) -> str:
    """A markdown table of `rows` with (key, heading) columns."""
    head = "| " + " | ".join(h for _, h in cols) + " |"
    rule = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def bars(pairs: list[tuple[str, float]], unit: str, width: int = 40) -> str:
    """An ASCII bar chart, one line per (label, value)."""
    pairs = [(k, v) for k, v in pairs if v is not None]
    if not pairs:
        return ""
    top = max(v for _, v in pairs) or 1.0
    pad = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k:<{pad}} {'#' * max(1, round(width * v / top)):<{width}} {v:.3f} {unit}"
                     for k, v in pairs)


HTTP_COLS = [("shape", "shape"), ("size", "size"), ("steps", "steps"), ("engine_s", "engine s"),
             ("inference", "inference s"), ("encode", "encode s"), ("http_s", "HTTP s"),
             ("overhead_pct", "overhead %"), ("upload_s", "upload s"), ("queue_s", "batch wait s"),
             ("decode_s", "input decode s"), ("base64_s", "base64 s"), ("other_s", "other s")]
ENC_COLS = [("size", "size"), ("content", "content"), ("format", "format"),
            ("encode_ms", "encode ms"), ("decode_ms", "decode ms"), ("base64_ms", "base64 ms"),
            ("kib", "KiB")]
LOAD_COLS = [("batching", "batching"), ("clients", "clients"), ("requests", "requests"),
             ("errors", "errors"), ("images_per_s", "images/s"), ("p50_s", "p50 s"),
             ("p95_s", "p95 s"), ("health_p95_ms", "/health p95 ms"),
             ("health_max_ms", "/health max ms"), ("wall_s", "wall s")]
BATCH_COLS = [("how", "how"), ("images", "images"), ("pipeline_calls", "pipeline calls"),
              ("seconds", "seconds"), ("images_per_s", "images/s"),
              ("max_pixel_diff", "max diff /255")]
ARCH_COLS = [("rung", "rung"), ("image_s", "s / image"), ("unet_it_s", "UNet it/s"),
             ("vae_s", "VAE s"), ("first_call_s", "first call s"),
             ("fraction_of_limit", "of limit"), ("unet_fraction", "UNet of peak")]


def render(results: dict) -> str:
    """The whole report as markdown text."""
    meta = results["meta"]
    out = [f"# sdgate bench — {meta['summary']}"]
    if "loadavg_start" in meta:  # other processes on the machine move every figure
        out.append(f"load average (1 min) at start {meta['loadavg_start'][0]:.2f}, at end "
                   f"{meta.get('loadavg_end', [float('nan')])[0]:.2f}; "
                   f"{meta.get('bench_s', 0):.0f} s in all")
    if "http" in results:
        h = results["http"]
        out += ["", "## Engine-only vs HTTP, same request (medians of "
                f"{h['reps']})", table(h["rows"], HTTP_COLS)]
        if h["missing"]:
            out.append(f"(not registered in this app: {', '.join(h['missing'])})")
        out += ["", "```", bars([(r["shape"], r.get("overhead_pct")) for r in h["rows"]],
                                "% over engine"), "```"]
    if "serving" in results:
        s = results["serving"]
        c = s["cold_start"]
        out += ["", "## Cold start (`sdgate serve` as a child process)",
                table([c], [("ready_s", "spawn -> /health s"), ("model_load_s", "model load s"),
                            ("first_image_s", "spawn -> first image s"),
                            ("first_request_s", "first request s"),
                            ("second_request_s", "second request s"),
                            ("model_loads", "model loads"), ("reloaded", "reloaded")]),
                "", "## Concurrent clients (127.0.0.1)", table(s["load"], LOAD_COLS)]
    if "batching" in results:
        b = results["batching"]
        out += ["", f"## Batching {b.get('images', '')} compatible requests",
                table(b.get("rows", []), BATCH_COLS)]
        if b.get("speedup"):
            out.append(f"batched / one by one: {b['speedup']:.2f}x images/s")
        if b.get("note"):
            out.append(b["note"])
    if "encoding" in results:
        out += ["", "## Output encoding", table(results["encoding"]["rows"], ENC_COLS)]
    if "arch" in results:
        a = results["arch"]
        out += ["", f"## GPU path ladder: {a['arch']} on {a['device']}, {a['size']}², "
                f"{a['steps']} steps, {a['dtype']}"]
        keys = ("parameters_m", "transformer_tflop", "cfg_passes", "unet_tflop",
                "vae_decode_tflop", "limit_s", "build_s", "smoke",
                "smoke_image_s", "unet_tflop_at_256", "vae_decode_tflop_at_256")
        out += [f"- {k}: {fmt(a[k])}" for k in keys if k in a]
        if a.get("rungs"):
            out += [table(a["rungs"], ARCH_COLS), "", "```",
                    bars([(r["rung"], r["image_s"]) for r in a["rungs"]], "s / image"), "```"]
    return "\n".join(out) + "\n"


def png_chart(results: dict, path: Path) -> bool:
    """Write a chart of the main figures; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    panels = [k for k in ("http", "encoding", "batching", "arch") if results.get(k)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for ax, key in zip(axes[:, 0], panels):
        if key == "http":
            rows = [r for r in results["http"]["rows"] if r.get("ok")]
            names = [r["shape"] for r in rows]
            ax.barh(names, [r["engine_s"] for r in rows], label="engine")
            ax.barh(names, [max(0.0, r["overhead_s"]) for r in rows],
                    left=[r["engine_s"] for r in rows], label="HTTP overhead")
            ax.set_xlabel("seconds per request")
            ax.set_title("Engine-only vs end-to-end HTTP")
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
        elif key == "encoding":
            rows = [r for r in results["encoding"]["rows"] if r["content"] == "photo-like"]
            for size in sorted({r["size"] for r in rows}):
                sel = [r for r in rows if r["size"] == size]
                ax.barh([f"{r['format']} @{size}" for r in sel], [r["encode_ms"] for r in sel])
            ax.set_xlabel("encode ms (photo-like content)")
            ax.set_title("Output encoding")
        elif key == "batching":
            rows = results["batching"].get("rows", [])
            ax.barh([r["how"] for r in rows], [r["images_per_s"] for r in rows])
            ax.set_xlabel("images/s")
            ax.set_title("Batching compatible requests")
        elif key == "arch" and results["arch"].get("rungs"):
            rows = results["arch"]["rungs"]
            ax.barh([r["rung"] for r in rows], [r["image_s"] for r in rows])
            ax.set_xlabel("seconds per image")
            ax.set_title(f"GPU path ladder ({results['arch']['arch']} on "
                         f"{results['arch']['device']})")
        ax.invert_yaxis()
    fig.suptitle(results["meta"]["summary"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
