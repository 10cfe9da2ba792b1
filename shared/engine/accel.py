"""The GPU fast path as engine options, applied once to each freshly loaded pipeline.

fp16/bf16, SDPA attention, channels_last, fused QKV projections, torch.compile of the UNet with
a persistent inductor cache, TAESD decode and DeepCache step caching. Each is a setting
(shared/config.py, SDGATE_*). Defaults are on only where they help without changing images or
breaking a feature: SDPA everywhere, fp16 and channels_last on a GPU; the rest on request.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)

DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TAESD_DIRS = {"sd": "taesd", "sdxl": "taesdxl"}  # folders in the models dir


@dataclass(frozen=True)
class AccelOptions:
    """Which optimizations to apply; see shared/config.py for each setting's meaning."""

    dtype: str = "auto"
    sdpa: bool = True
    channels_last: str | bool = "auto"
    fuse_qkv: bool = False
    compile: bool = False
    compile_mode: str = "max-autotune-no-cudagraphs"
    compile_cache_dir: Path | None = None
    tiny_vae: bool = False
    models_dir: Path | None = None  # TAESD weights live in <models_dir>/taesd or /taesdxl
    random_tiny_vae: bool = False  # random TAESD weights: speed tests only, draws garbage
    deepcache_interval: int = 0

    def __post_init__(self):
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: choose auto, {', '.join(DTYPES)}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile mode {self.compile_mode!r}: choose {', '.join(COMPILE_MODES)}")

    @classmethod
    def from_settings(cls, settings) -> "AccelOptions":
        return cls(dtype=settings.dtype, sdpa=settings.sdpa, channels_last=settings.channels_last,
                   fuse_qkv=settings.fuse_qkv, compile=settings.compile,
                   compile_mode=settings.compile_mode,
                   compile_cache_dir=settings.compile_cache_dir, tiny_vae=settings.tiny_vae,
                   models_dir=settings.models_dir,
                   deepcache_interval=settings.deepcache_interval)

    def torch_dtype(self, device: str):
        """auto: fp16 on cuda (every SD checkpoint ships fp16 weights), fp32 on the CPU."""
        import torch

        if self.dtype == "auto":
            return torch.float16 if device == "cuda" else torch.float32
        return getattr(torch, DTYPES[self.dtype])

    def for_device(self, device: str) -> "AccelOptions":
        """The options with every "auto" decided for `device`."""
        on_gpu = device == "cuda"
        return replace(self, channels_last=on_gpu if self.channels_last == "auto"
                       else bool(self.channels_last))


def family(pipe) -> str:
    """"sdxl" for SDXL pipelines (two text encoders), else "sd"."""
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"


def set_compile_cache(path: Path | None) -> None:
    """Point inductor's on-disk caches (FX graphs, autotuning, Triton kernels) at `path`."""
    if path is None:
        return
    import torch._inductor.config as inductor

    Path(path).mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)  # read when inductor first needs it
    inductor.fx_graph_cache = True
    inductor.autotune_local_cache = True


def tiny_vae(pipe, opts: AccelOptions):
    """TAESD for this pipeline's family, with real weights from the models dir (or random)."""
    from shared.engine.archs import build_tiny_vae

    if opts.random_tiny_vae:
        return build_tiny_vae(None)
    folder = TAESD_DIRS[family(pipe)]
    where = Path(opts.models_dir or ".") / folder
    if not (where / "diffusion_pytorch_model.safetensors").is_file():
        raise ValueError(f"SDGATE_TINY_VAE is on but {where} has no "
                         "diffusion_pytorch_model.safetensors (madebyollin/" + folder + ")")
    return build_tiny_vae(where)


def set_attention(pipe, sdpa: bool = True) -> None:
    """torch's fused scaled_dot_product_attention, or the classic matmul-softmax-matmul."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    processor = AttnProcessor2_0() if sdpa else AttnProcessor()
    pipe.unet.set_attn_processor(processor)
    if getattr(pipe.vae, "attn_processors", None):
        pipe.vae.set_attn_processor(processor)


def to_channels_last(pipe) -> None:
    """NHWC convolutions: what cuDNN's fp16 tensor-core kernels want."""
    import torch

    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)


def fuse_qkv(pipe) -> None:
    """One matmul for q, k and v (k and v for cross-attention)."""
    pipe.unet.fuse_qkv_projections()
    if type(pipe.vae).__name__ == "AutoencoderKL":
        pipe.vae.fuse_qkv_projections()


def add_deepcache(pipe, interval: int):
    from shared.engine.deepcache import DeepCache

    pipe.unet._sdgate_deepcache = DeepCache(pipe.unet, interval).enable()
    return pipe.unet._sdgate_deepcache


def compile_unet(pipe, mode: str, cache_dir: Path | None = None) -> None:
    """torch.compile in place (nn.Module.compile), so pipe.unet keeps its type and config.

    Compiles lazily on the first call, and again for each new latent shape or batch size.
    """
    set_compile_cache(cache_dir)
    pipe.unet.compile(mode=mode, fullgraph=False)


def for_device(pipe, opts: AccelOptions, device: str, done: list[str] = ()) -> list[str]:
    """The options that depend on the device, for a pipeline now on `device`.

    Also called when warm pipelines move (Modal loads on the CPU before its memory snapshot
    and moves to the GPU after the restore), so "auto" follows the device that runs them.
    """
    opts = opts.for_device(device)
    if not hasattr(pipe, "unet"):  # SD3 / Flux transformers: see apply
        return []
    if opts.channels_last and "channels_last" not in done:
        to_channels_last(pipe)
        return ["channels_last"]
    return []


def apply(pipe, opts: AccelOptions, device: str) -> list[str]:
    """Apply the options to a loaded pipeline (once); returns what was applied, in order."""
    opts = opts.for_device(device)
    if not hasattr(pipe, "unet"):
        # SD3 / Flux: these options are written for UNets (attention processors, DeepCache,
        # channels-last convs, TAESD's SD latents); their transformers keep diffusers' own SDPA.
        log.info("speed options: transformer model, UNet options not applied")
        return [f"dtype={str(pipe.transformer.dtype).removeprefix('torch.')}", "transformer"]
    done = [f"dtype={str(pipe.unet.dtype).removeprefix('torch.')}"]
    if opts.tiny_vae:
        pipe.vae = tiny_vae(pipe, opts).to(device, pipe.unet.dtype)
        done.append("tiny_vae")
    set_attention(pipe, opts.sdpa)
    done.append("sdpa" if opts.sdpa else "classic_attention")
    done += for_device(pipe, opts, device)
    if opts.fuse_qkv:
        fuse_qkv(pipe)
        done.append("fuse_qkv")
    if opts.deepcache_interval > 1:
        add_deepcache(pipe, opts.deepcache_interval)
        done.append(f"deepcache={opts.deepcache_interval}")
    if opts.compile:
        compile_unet(pipe, opts.compile_mode, opts.compile_cache_dir)
        done.append(f"compile={opts.compile_mode}")
    log.info("speed options: %s", ", ".join(done))
    return done
