"""Loading models into diffusers pipelines, kept warm in a bounded LRU cache keyed by model.

img2img and inpaint pipelines are derived with `from_pipe`, sharing the loaded weights.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from shared.engine import accel as speed
from shared.engine import families, memory, samplers
from shared.engine.accel import AccelOptions
from shared.engine.registry import ModelInfo
from shared.errors import GenerationFailed, SdgateError, Unsupported
from shared.generation import Mode, Variant

log = logging.getLogger(__name__)


def pick_device(want: str = "auto", accel: AccelOptions | None = None):
    """cuda when a GPU is present (or asked for), else CPU; dtype per accel (fp16 on cuda)."""
    import torch

    device = "cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu"
    return device, (accel or AccelOptions()).torch_dtype(device)


@dataclass
class LoadedModel:
    """One model's warm pipelines; `lock` serialises work on them."""

    info: ModelInfo
    pipe: object  # the text-to-image pipeline that owns the weights
    native: int
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    derived: dict = field(default_factory=dict)  # Mode -> pipeline sharing pipe's weights
    schedulers: dict = field(default_factory=dict)  # SamplerSpec -> scheduler
    safety_checker: object = None  # detached; run only when a request asks for it
    feature_extractor: object = None
    speedups: list = field(default_factory=list)  # what accel.apply did
    bytes: int = 0  # estimated from its files before loading (shared.engine.memory)
    offload: str = ""  # "model": diffusers' model CPU offload hooks place the weights
    offload_device: str = ""  # where those hooks run each part

    def pipeline(self, mode: Mode):
        """The pipeline for a mode, derived once from the loaded one without copying weights."""
        if mode is Mode.txt2img:
            if "txt2img" not in families.get(self.info.family).modes:
                raise Unsupported(f"{self.info.name} is a {self.info.family} model: it refines "
                                  "an image (img2img, inpaint, or as refiner_checkpoint) and "
                                  "draws no picture from text alone", param="model")
            return self.pipe
        if mode not in self.derived:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

            auto = AutoPipelineForImage2Image if mode is Mode.img2img else AutoPipelineForInpainting
            self.derived[mode] = auto.from_pipe(self.pipe)
            self.derived[mode].set_progress_bar_config(disable=True)
        return self.derived[mode]

    def variant(self, variant: Variant):
        """A panorama / self-attention guidance pipeline sharing the loaded weights (SD 1.x/2.x)."""
        if variant not in self.derived:
            from diffusers import (StableDiffusionPanoramaPipeline, StableDiffusionPipeline,
                                   StableDiffusionSAGPipeline)

            if not isinstance(self.pipe, StableDiffusionPipeline):
                raise Unsupported(f"{variant.value} needs a Stable Diffusion 1.x/2.x model; "
                                  f"{self.info.name} is a {type(self.pipe).__name__}",
                                  param=variant.value)
            cls = {Variant.panorama: StableDiffusionPanoramaPipeline,
                   Variant.self_attention: StableDiffusionSAGPipeline}[variant]
            self.derived[variant] = cls.from_pipe(self.pipe)
            self.derived[variant].set_progress_bar_config(disable=True)
        return self.derived[variant]

    def scheduler(self, spec: samplers.SamplerSpec | None):
        """The scheduler for a sampler spec (the model's own for None), built once."""
        if spec not in self.schedulers:
            base = self.schedulers[None]
            sdxl = "XL" in type(self.pipe).__name__  # Align Your Steps has SDXL's own sigmas
            self.schedulers[spec] = samplers.build(spec, base.config, sdxl=sdxl)
        return self.schedulers[spec]


# Single-file checkpoints: the pipeline class of each family (folders name their own).
SINGLE_FILE_CLASSES = {
    "sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline",
    "sd2-v": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline", "sd3": "StableDiffusion3Pipeline",
    "flux-dev": "FluxPipeline", "flux-schnell": "FluxPipeline",
}


def family_dtype(family: str, device: str, dtype):
    """bf16 for SD3 / Flux on GPUs that have it: their activations overflow fp16."""
    import torch

    if (dtype == torch.float16 and device == "cuda" and families.get(family).flow
            and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return dtype


def load_pipeline(info: ModelInfo, device: str, dtype):
    """Load a model folder with from_pretrained, or a single checkpoint with from_single_file,
    as the pipeline class of its detected family."""
    import diffusers
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    family = families.get(info.family)  # an unknown family is refused here, clearly
    dtype = family_dtype(info.family, device, dtype)
    if info.single_file:
        pipe = load_single_file(info, dtype)
    elif "txt2img" not in family.modes:  # the SDXL refiner: an img2img pipeline owns the weights
        pipe = AutoPipelineForImage2Image.from_pretrained(str(info.path), dtype=dtype)
    else:
        extra = {}
        if info.family == "sd3" and not (info.path / "text_encoder_3").is_dir():
            extra = dict(text_encoder_3=None, tokenizer_3=None)  # T5 is optional for SD3
        pipe = AutoPipelineForText2Image.from_pretrained(str(info.path), dtype=dtype, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def single_file_configs(info: ModelInfo):
    """<models_dir>/configs/<repo>/ for a single file (None: not filled; diffusers then fetches
    the configs from the hub itself, which needs the network)."""
    from shared.engine.registry import CONFIGS_DIR

    folder = info.path.parent / CONFIGS_DIR / info.config_repo
    return folder if info.config_repo and (folder / "model_index.json").is_file() else None


def load_single_file(info: ModelInfo, dtype):
    """A single-file checkpoint with from_single_file, built from its family's hub configs in
    <models_dir>/configs/<repo> (offline). The UNet / transformer / VAE come from the file
    when it holds them (original or diffusers key names), else from that folder: BFL's Flux and
    most SD3.5 files hold the transformer only."""
    import diffusers
    import transformers
    from diffusers.loaders.single_file_utils import (is_clip_model_in_single_file,
                                                     is_t5_in_single_file,
                                                     load_single_file_checkpoint)

    cls = getattr(diffusers, SINGLE_FILE_CLASSES[info.family])
    config = single_file_configs(info)
    if config is None:
        try:  # diffusers' own way: configs from the hub (cached by huggingface_hub)
            return cls.from_single_file(str(info.path), dtype=dtype)
        except Exception as e:
            raise Unsupported(
                f"{info.name} is a single-file {info.family} checkpoint; loading it needs the "
                f"configs of {info.config_repo or 'its base model'} (fill them with `sdgate pull "
                f"--configs {info.family}` into {info.path.parent}/configs/): {e}",
                param="model") from e
    checkpoint = load_single_file_checkpoint(str(info.path), local_files_only=True)
    index = cls.load_config(str(config))
    parts = {}
    for name, spec in index.items():
        if not (isinstance(spec, list) and spec[1]):
            continue
        if spec[0] == "transformers":  # text encoders: diffusers reads them from the file when
            part_cls = getattr(transformers, spec[1], None)  # they are there, else the folder
            if (part_cls is not None and issubclass(part_cls, transformers.PreTrainedModel)
                    and not is_clip_model_in_single_file(part_cls, checkpoint)
                    and not ("T5" in spec[1] and is_t5_in_single_file(checkpoint))):
                parts[name] = part_cls.from_pretrained(str(config / name), torch_dtype=dtype,
                                                       local_files_only=True)
            continue
        part_cls = getattr(diffusers, spec[1], None) if spec[0] == "diffusers" else None
        if part_cls is None or not hasattr(part_cls, "from_single_file"):
            continue  # schedulers; text encoders are diffusers' (file first, then the folder)
        try:
            parts[name] = part_cls.from_single_file(dict(checkpoint), config=str(config),
                                                    subfolder=name, torch_dtype=dtype,
                                                    local_files_only=True)
        except Exception as e:  # not in the file: the configs folder's own weights
            if not any((config / name).glob("*.safetensors")):
                raise Unsupported(f"{info.name} holds no {name} weights and {config / name} "
                                  f"has none either: {e}", param="model") from e
            parts[name] = part_cls.from_pretrained(str(config), subfolder=name,
                                                   torch_dtype=dtype, local_files_only=True)
    if info.family == "sd3" and not (config / "text_encoder_3").is_dir():
        parts.update(text_encoder_3=None, tokenizer_3=None)  # T5 is optional for SD3
    return cls.from_single_file(str(info.path), config=str(config), local_files_only=True,
                                torch_dtype=dtype, **parts)


class PipelineCache:
    """At most `capacity` models warm at once, and together at most `budget` bytes (each
    model's size estimated from its files before it loads); the least recently used ones are
    dropped before a load, not after, and their memory returned."""

    def __init__(self, device: str, dtype, capacity: int = 2, native_size=lambda info: 512,
                 accel: AccelOptions | None = None, budget_gb: float | None = None,
                 cpu_offload: str = "off"):
        self.device, self.dtype, self.capacity = device, dtype, capacity
        self.budget_gb = budget_gb  # None: 80% of the GPU on CUDA, the count alone on CPU
        self.cpu_offload = cpu_offload  # memory.OFFLOAD_MODES
        self.accel = accel or AccelOptions()
        self.native_size = native_size
        self._models: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0  # how many times a model was loaded from disk (tests, benchmark)
        self.evictions: list[str] = []  # names in eviction order (tests, logs)

    @property
    def budget(self) -> int | None:
        """The byte budget for the current device (shared.engine.memory.budget_bytes)."""
        return memory.budget_bytes(self.device, self.budget_gb)

    def resident_bytes(self) -> int:
        """The estimated size of the warm models."""
        return sum(m.bytes for m in self._models.values())

    def _itemsize(self, info: ModelInfo) -> int:
        import torch

        return torch.empty(0, dtype=family_dtype(info.family, self.device,
                                                 self.dtype)).element_size()

    def _make_room(self, need: int) -> None:
        """Evict least recently used models until one more of `need` bytes fits."""
        dropped, budget = False, self.budget
        with self._lock:
            while self._models and (len(self._models) >= self.capacity or (
                    budget is not None and self.resident_bytes() + need > budget)):
                name, _ = self._models.popitem(last=False)
                self.evictions.append(name)
                dropped = True
                log.info("unloaded model %s (budget %s bytes, %s needed)", name, budget, need)
        if dropped:
            memory.free(self.device)
        if budget is not None and need > budget:
            log.warning("a model of ~%.1f GiB exceeds the %.1f GiB budget; loading it alone",
                        need / (1 << 30), budget / (1 << 30))

    def loaded(self) -> list[str]:
        return list(self._models)

    def to(self, device: str) -> None:
        """Move every warm model to `device`; later loads go there too."""
        with self._lock:
            self.device = device
            for loaded in self._models.values():
                if self._place(loaded, device):  # derived pipelines share these modules
                    loaded.speedups += speed.for_device(loaded.pipe, self.accel, device,
                                                        loaded.speedups)
                if loaded.safety_checker is not None:
                    loaded.safety_checker.to(device)

    def get(self, info: ModelInfo) -> LoadedModel:
        """The warm model, loading it (once, even under concurrent requests) if needed."""
        with self._lock:
            if info.name in self._models:
                self._models.move_to_end(info.name)
                return self._models[info.name]
            gate = self._loading.setdefault(info.name, threading.Lock())
        with gate:
            with self._lock:
                if info.name in self._models:
                    return self._models[info.name]
            need = memory.estimate_bytes(info, self._itemsize(info))
            self._make_room(need)  # before loading: the old weights leave first
            loaded = self._load(info, need)
            with self._lock:
                self._models[info.name] = loaded
                while len(self._models) > self.capacity:  # concurrent loads of others
                    name, _ = self._models.popitem(last=False)
                    self.evictions.append(name)
                    log.info("unloaded model %s", name)
                self._loading.pop(info.name, None)
            return loaded

    def _place(self, loaded: LoadedModel, device: str) -> bool:
        """Move a model's weights to `device`, or hand them to diffusers' CPU offload when the
        setting asks for it (`memory.offload_mode`); True when the whole model moved."""
        mode = memory.offload_mode(self.cpu_offload, loaded.bytes, self.budget)
        if mode and (loaded.offload, loaded.offload_device) != (mode, device):
            if loaded.offload:
                loaded.pipe.remove_all_hooks()
            # weights wait in RAM; each part moves to `device` to run, then back
            loaded.pipe.enable_model_cpu_offload(device=device)
            loaded.offload, loaded.offload_device = mode, device
            log.info("model %s (~%.1f GiB) runs with %s CPU offload on %s", loaded.info.name,
                     loaded.bytes / (1 << 30), mode, device)
            return False
        if mode:
            return False
        if loaded.offload:
            loaded.pipe.remove_all_hooks()
            loaded.offload = loaded.offload_device = ""
        loaded.pipe.to(device)
        return True

    def _load(self, info: ModelInfo, need: int = 0) -> LoadedModel:
        t0 = time.perf_counter()
        try:
            pipe = load_pipeline(info, self.device, self.dtype)
        except SdgateError:  # refused clearly (unknown family, configs missing)
            raise
        except Exception as e:
            raise GenerationFailed(f"could not load model {info.name!r}: {e}") from e
        checker = getattr(pipe, "safety_checker", None)
        extractor = getattr(pipe, "feature_extractor", None)
        if checker is not None:
            pipe.safety_checker = None
        loaded = LoadedModel(info, pipe, self.native_size(info), 0.0, safety_checker=checker,
                             feature_extractor=extractor, bytes=need)
        if self._place(loaded, self.device):
            try:  # the speed options assume the weights live on the device
                loaded.speedups = speed.apply(pipe, self.accel, self.device)
            except Exception as e:
                raise GenerationFailed(
                    f"could not apply speed options to {info.name!r}: {e}") from e
        self.loads += 1
        loaded.load_seconds = time.perf_counter() - t0
        loaded.schedulers[None] = pipe.scheduler
        log.info("loaded model %s in %.2fs on %s", info.name, loaded.load_seconds, self.device)
        return loaded
