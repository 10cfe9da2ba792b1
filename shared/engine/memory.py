"""Model sizes known before loading (from safetensors headers) and the device memory budget the
pipeline cache keeps its warm models under. Torch-free except the device queries."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# bytes per element of the stored safetensors dtypes
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
VARIANTS = (".fp16.", ".bf16.", ".fp32.", ".non_ema.", ".ema.")
CUDA_SHARE = 0.8  # default budget on a GPU: this share of its memory (the rest: activations)
# SDGATE_CPU_OFFLOAD: off; auto (only a model larger than the budget); model (every model), with
# diffusers' enable_model_cpu_offload. (Sequential offload is not offered: accelerate's per-layer
# hooks fail on this torch's parameters, seen on the tiny models.)
OFFLOAD_MODES = ("off", "auto", "model")


def _tensors(path: Path):
    """(dtype, element count) of each tensor in a safetensors file, from its header."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        n = 1
        for d in meta["shape"]:
            n *= d
        yield meta["dtype"], n


def file_bytes(path: Path, itemsize: int | None = None) -> int:
    """Bytes a safetensors file takes once loaded: floats at `itemsize` (the load dtype), the
    rest as stored."""
    total = 0
    for dtype, n in _tensors(path):
        floating = dtype in ("F64", "F32", "F16", "BF16")
        total += n * (itemsize if itemsize and floating else _ITEMSIZE.get(dtype, 4))
    return total


def _weights(folder: Path) -> list[Path]:
    """A diffusers folder's weight files, one variant each (plain files over .fp16. ones)."""
    files = sorted(folder.rglob("*.safetensors"))
    plain = {f for f in files if not any(v in f.name for v in VARIANTS)}
    dirs = {f.parent for f in plain}
    return [f for f in files if f in plain or f.parent not in dirs]


def estimate_bytes(info, itemsize: int | None = None) -> int:
    """A model's loaded size before loading it: its weights (a single file plus the configs
    folder's components it loads with) at the load dtype's item size."""
    from shared.engine.registry import CONFIGS_DIR

    if not info.single_file:
        return sum(file_bytes(f, itemsize) for f in _weights(info.path))
    total = file_bytes(info.path, itemsize) if info.path.suffix == ".safetensors" else \
        info.path.stat().st_size
    config = info.path.parent / CONFIGS_DIR / info.config_repo
    if info.config_repo and config.is_dir():  # components the file lacks (an upper bound)
        total += sum(file_bytes(f, itemsize) for f in _weights(config))
    return total


def budget_bytes(device: str, configured_gb: float | None) -> int | None:
    """The budget in bytes: the configured GiB, else on CUDA a share of the GPU's memory (asked
    when the first model loads: on Modal the GPU appears only after the memory snapshot);
    None on CPU (the model count alone bounds the cache)."""
    if configured_gb:
        return int(configured_gb * (1 << 30))
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory * CUDA_SHARE)
    return None


def offload_mode(setting: str, need: int, budget: int | None) -> str:
    """How a model of `need` bytes is placed on its device: "" (moved whole) or "model"
    (diffusers' model CPU offload). `auto` offloads only what exceeds the budget (there is none
    on the CPU unless configured); `model` applies on every device (on the CPU it gains
    nothing)."""
    if setting not in OFFLOAD_MODES:
        raise ValueError(f"SDGATE_CPU_OFFLOAD={setting!r}; choices: {', '.join(OFFLOAD_MODES)}")
    if setting == "off":
        return ""
    if setting == "auto":
        return "model" if budget is not None and need > budget else ""
    return setting


def free(device: str) -> None:
    """Return freed memory now (evicted pipelines), so the next load fits."""
    import gc

    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
