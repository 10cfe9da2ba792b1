"""Model families as data, and detecting a model's family from its files (never its name).

A diffusers folder names its pipeline class in model_index.json; a single-file checkpoint is
recognised by its state-dict keys with diffusers' own single-file detection
(`infer_diffusers_model_type`), read lazily from the safetensors header so no weight loads.
Step-distilled models (LCM, TCD, Turbo/Lightning/Hyper-SD's "trailing" spacing, Flux schnell)
are recognised from their own scheduler / transformer configs. Torch-free at import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import SamplerNotFound, Unsupported


@dataclass(frozen=True)
class Family:
    """What one model family needs; the engine and docs/families.md read this table."""

    key: str
    label: str
    pipeline: str  # diffusers text-to-image class (img2img / inpaint come from from_pipe)
    native: int  # native image side, pixels (a folder's own config wins, see native_size)
    steps: int  # defaults documented per family (GET /sdapi/v1/sd-models shows the family)
    guidance: float
    sampler: str  # A1111 name of the default sampler
    flow: bool = False  # flow matching: FlowMatchEulerDiscreteScheduler, not DDPM samplers
    clip_skip: bool = True  # clip skip > 1 allowed
    prompt_weights: bool = True  # A1111 (x:1.2) / BREAK / 75-token chunks (CLIP encoders)
    max_tokens: int | None = None  # None: unlimited (75-token chunks concatenated)
    negative_prompt: bool = True
    modes: tuple = ("txt2img", "img2img", "inpaint")
    distilled: bool = False  # few steps, guidance off
    unet: bool = True  # a UNet denoises (token merging applies); False: a transformer
    notes: str = ""


FAMILIES: dict[str, Family] = {f.key: f for f in (
    Family("sd1", "Stable Diffusion 1.x", "StableDiffusionPipeline", 512, 20, 7.0, "Euler"),
    Family("sd2", "Stable Diffusion 2.x", "StableDiffusionPipeline", 512, 20, 7.0, "Euler"),
    Family("sd2-v", "Stable Diffusion 2.x (v-prediction)", "StableDiffusionPipeline", 768, 20,
           7.0, "Euler", notes="prediction_type v_prediction from its scheduler config"),
    Family("sdxl", "Stable Diffusion XL", "StableDiffusionXLPipeline", 1024, 30, 7.0, "Euler"),
    Family("sdxl-refiner", "Stable Diffusion XL refiner", "StableDiffusionXLImg2ImgPipeline",
           1024, 30, 7.0, "Euler", modes=("img2img", "inpaint"),
           notes="second text encoder only; img2img / refiner pass"),
    Family("sd3", "Stable Diffusion 3 / 3.5", "StableDiffusion3Pipeline", 1024, 28, 7.0, "Euler",
           flow=True, clip_skip=False, prompt_weights=False, max_tokens=256, unet=False,
           notes="two CLIPs + optional T5 (256 tokens); plain prompts"),
    Family("flux-dev", "FLUX.1 dev", "FluxPipeline", 1024, 28, 3.5, "Euler", flow=True,
           unet=False, clip_skip=False, prompt_weights=False, max_tokens=512,
           negative_prompt=False,
           notes="guidance is the distilled guidance embedding; true CFG (negative prompt) off"),
    Family("flux-schnell", "FLUX.1 schnell", "FluxPipeline", 1024, 4, 0.0, "Euler", flow=True,
           unet=False, clip_skip=False, prompt_weights=False, max_tokens=256,
           negative_prompt=False,
           distilled=True, notes="timestep-distilled: 1-4 steps, no guidance"),
)}
UNKNOWN = "unknown"

# model_index.json `_class_name` -> family (SD1/SD2 and dev/schnell are split by configs)
PIPELINE_CLASSES = {
    "StableDiffusionPipeline": "sd1", "StableDiffusionImg2ImgPipeline": "sd1",
    "StableDiffusionInpaintPipeline": "sd1", "LatentConsistencyModelPipeline": "sd1",
    "StableDiffusionXLPipeline": "sdxl", "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3", "StableDiffusion3Img2ImgPipeline": "sd3",
    "StableDiffusion3InpaintPipeline": "sd3",
    "FluxPipeline": "flux-dev", "FluxImg2ImgPipeline": "flux-dev",
    "FluxInpaintPipeline": "flux-dev",
}
# diffusers' infer_diffusers_model_type -> family
SINGLE_FILE_TYPES = {
    "v1": "sd1", "inpainting": "sd1", "v2": "sd2", "inpainting_v2": "sd2",
    "xl_base": "sdxl", "xl_inpaint": "sdxl", "xl_refiner": "sdxl-refiner",
    "sd3": "sd3", "sd35_medium": "sd3", "sd35_large": "sd3",
    "flux-dev": "flux-dev", "flux-schnell": "flux-schnell",
}
# diffusers single-file type -> the hub repo whose configs (and, for files holding only the
# transformer, other components) from_single_file builds the pipeline from: diffusers' own
# DIFFUSERS_DEFAULT_PIPELINE_PATHS (a test checks they agree). The weights filler copies them
# to <models_dir>/configs/<repo>/ so single files load without the network.
CONFIG_REPOS = {
    "v1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "v2": "stabilityai/stable-diffusion-2-1",
    "inpainting_v2": "stabilityai/stable-diffusion-2-inpainting",
    "xl_base": "stabilityai/stable-diffusion-xl-base-1.0",
    "xl_inpaint": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
    "xl_refiner": "stabilityai/stable-diffusion-xl-refiner-1.0",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "sd35_large": "stabilityai/stable-diffusion-3.5-large",
    "sd35_medium": "stabilityai/stable-diffusion-3.5-medium",
    "flux-dev": "black-forest-labs/FLUX.1-dev",
    "flux-schnell": "black-forest-labs/FLUX.1-schnell",
}
# Schedulers of step-distilled models, and the spacing Turbo / Lightning / Hyper-SD ship with.
DISTILLED_SCHEDULERS = {"LCMScheduler": "lcm", "TCDScheduler": "tcd"}


@dataclass(frozen=True)
class Detected:
    """A family and what the model's own configs add."""

    family: str
    distilled: str = ""  # "lcm", "tcd", "turbo", "trailing", "schnell" or ""
    source: str = ""  # what decided it (model_index _class_name, single-file type)
    config_repo: str = ""  # single files: the hub repo of the configs they load with
    extra: dict = field(default_factory=dict)


def get(key: str) -> Family:
    """The family row, or a clear refusal for a model no family serves."""
    if key not in FAMILIES:
        raise Unsupported(f"model family {key!r} is not supported; supported families: "
                          f"{', '.join(FAMILIES)}", param="model")
    return FAMILIES[key]


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def detect_folder(path: Path) -> Detected:
    """A diffusers folder: model_index.json's `_class_name`, refined by component configs."""
    index = _json(path / "model_index.json")
    cls = index.get("_class_name", "")
    family = PIPELINE_CLASSES.get(cls, UNKNOWN)
    sched = _json(path / "scheduler" / "scheduler_config.json")
    if family == "sd1":
        te = _json(path / "text_encoder" / "config.json")
        unet = _json(path / "unet" / "config.json")
        if te.get("hidden_size") == 1024 or unet.get("cross_attention_dim") == 1024:
            family = "sd2"  # OpenCLIP-H text encoder
        if sched.get("prediction_type") == "v_prediction":
            family = "sd2-v"
    elif family == "sdxl" and not (index.get("text_encoder") or [None])[0]:
        family = "sdxl-refiner"  # the refiner ships the second (OpenCLIP-G) encoder only
    elif family == "flux-dev":
        if not _json(path / "transformer" / "config.json").get("guidance_embeds", True):
            family = "flux-schnell"
    # the loader builds the scheduler class model_index.json names (its config holds the rest)
    loaded_as = (index.get("scheduler") or [None, None])[-1] or sched.get("_class_name", "")
    return Detected(family, _distilled(family, loaded_as, sched),
                    f"model_index {cls or 'missing'}")


def _distilled(family: str, name: str, sched: dict) -> str:
    if family == "flux-schnell":
        return "schnell"
    if name in DISTILLED_SCHEDULERS:
        return DISTILLED_SCHEDULERS[name]
    if not FAMILIES.get(family, FAMILIES["sd1"]).flow and sched.get("timestep_spacing") == \
            "trailing":
        # SD-Turbo / SDXL-Turbo ship Euler a with trailing spacing; Lightning / Hyper-SD folders
        # are assembled with Euler (or DDIM) trailing
        return "turbo" if name == "EulerAncestralDiscreteScheduler" else "trailing"
    return ""


# -- defaults a model's card gives -------------------------------------------------------------
# (steps, guidance) of step-distilled models, from their model cards: LCM(-LoRA) 4 steps with
# guidance 1 (off; LCM guidance is distilled), TCD 4 / 0, SD-Turbo and SDXL-Turbo 1 / 0,
# SDXL-Lightning and Hyper-SD (their 4-step checkpoints) 4 / 0, FLUX.1 schnell 4 / 0.
DISTILLED_DEFAULTS = {"lcm": (4, 1.0), "tcd": (4, 0.0), "turbo": (1, 0.0),
                      "trailing": (4, 0.0), "schnell": (4, 0.0)}
DEFAULTABLE = ("steps", "guidance", "sampler")  # GenerationRequest fields a model may default


def model_defaults(family: str, distilled: str = "") -> dict | None:
    """What a model runs with when the client leaves steps / guidance / sampler unset: its
    card's values for step-distilled models (and its own scheduler), the family's for
    flow-matching families (SD3, Flux: the API shapes' defaults are SD 1.x's); None: the API
    shape's own defaults stay (SD 1.x/2.x, SDXL: upstream parity)."""
    fam = FAMILIES.get(family)
    if distilled in DISTILLED_DEFAULTS:
        steps, guidance = DISTILLED_DEFAULTS[distilled]
    elif fam is not None and fam.flow:
        steps, guidance = fam.steps, fam.guidance
    else:
        return None
    return {"steps": steps, "guidance": guidance, "sampler": None}  # None: the model's own


def apply_defaults(req, family: str, distilled: str = ""):
    """(the request with the model's defaults in the fields its client left unset
    (`req.defaulted`), the names of those fields); img2img keeps at least one denoising step
    (steps x strength >= 1). The infotext says which values came from the model."""
    import math

    defaults = model_defaults(family, distilled)
    update = {k: v for k, v in (defaults or {}).items() if k in req.defaulted}
    if not update:
        return req, []
    if "steps" in update and req.mode.value != "txt2img" and req.strength > 0:
        update["steps"] = max(update["steps"], math.ceil(1 / req.strength - 1e-9))
    label = distilled or family
    names = {"steps": "steps", "guidance": "CFG scale", "sampler": "sampler"}
    extra = {**req.extra_params,
             "Model defaults": f"{label}: " + ", ".join(names[k] for k in update)}
    return req.model_copy(update={**update, "extra_params": extra}), list(update)


def drop_optional(req, family: str):
    """The request without the API shape's optional defaults the family cannot run (token
    merging that ModelsLab's tomesd asks for unless the client sends "no"; shared.engine.tome)."""
    if not req.token_merging_optional or FAMILIES.get(family, FAMILIES["sd1"]).unet:
        return req
    update = {"token_merging_ratio": 0.0}
    if req.hires is not None:
        update["hires"] = req.hires.model_copy(update={"token_merging_ratio": 0.0})
    return req.model_copy(update=update)


class _Shape:
    """A stand-in tensor: diffusers' detection reads only `key in sd` and `sd[key].shape`."""

    def __init__(self, shape: tuple):
        self.shape = shape


class _LazyStateDict(Mapping):
    """A checkpoint's keys with their stored shapes, from the file header: no weight loads."""

    def __init__(self, shapes: dict[str, tuple]):
        self._shapes = shapes

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self) -> int:
        return len(self._shapes)

    def __getitem__(self, key):
        return _Shape(self._shapes[key])


def _shapes(path: Path) -> dict[str, tuple]:
    """Key -> shape. safetensors: its JSON header, read by hand (the web tier has neither torch
    nor safetensors); .ckpt: memory-mapped with torch, tensors only (no pickled code runs)."""
    if path.suffix == ".safetensors":
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if size > 100 << 20:
                raise ValueError("safetensors header larger than 100 MiB")
            header = json.loads(f.read(size))
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    import torch

    sd = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
    sd = sd.get("state_dict", sd)
    return {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}


# diffusers' CHECKPOINT_KEY_NAMES for the families served, for the web tier (no diffusers there)
_KEYS = {
    "v1": "model.diffusion_model.output_blocks.11.0.skip_connection.weight",
    "v2": "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight",
    "xl_base": "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias",
    "xl_refiner": "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias",
    "sd3": ["joint_blocks.0.context_block.adaLN_modulation.1.bias",
            "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias"],
    "flux": ["double_blocks.0.img_attn.norm.key_norm.scale",
             "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale"],
}
# A transformer saved alone with diffusers' own key names (how many Flux / SD3 fine-tunes ship,
# and what diffusers' single-file loader takes as is): family -> keys only it has.
_DIFFUSERS_KEYS = {
    "flux": "single_transformer_blocks.0.proj_mlp.weight",
    "flux-guidance": "time_text_embed.guidance_embedder.linear_1.weight",
    "sd3": "pos_embed.pos_embed",
    "sd3-joint": "transformer_blocks.0.attn.add_q_proj.weight",
}


def _infer(sd) -> str | None:
    try:
        from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    except ImportError:  # the web tier: the same key tests, without the sub-types
        if _KEYS["v2"] in sd and sd[_KEYS["v2"]].shape[-1] == 1024:
            return "v2"
        for kind in ("xl_base", "xl_refiner", "v1"):
            if _KEYS[kind] in sd:
                return kind
        return None
    try:
        return infer_diffusers_model_type(sd)
    except Exception:  # a shape diffusers' sub-type tests do not know
        return None


def detect_file(path: Path) -> Detected:
    """A single-file checkpoint: diffusers' own detection on its keys."""
    try:
        shapes = _shapes(path)
    except Exception as e:  # a broken file is listed, then refused clearly when used
        return Detected(UNKNOWN, source=f"unreadable: {type(e).__name__}")
    sd = _LazyStateDict(shapes)
    kind = _infer(sd)
    # diffusers tells SD3 / Flux sizes apart by the published shapes and falls back to "v1";
    # a checkpoint with no UNet key but a joint / double block is still that family.
    layout = "original"
    if kind in (None, "v1") and _KEYS["v1"] not in sd:
        if any(k in sd for k in _KEYS["sd3"]):
            kind = "sd3"
        elif any(k in sd for k in _KEYS["flux"]):
            guided = any(k.endswith("guidance_in.in_layer.bias") for k in shapes)
            kind = "flux-dev" if guided else "flux-schnell"
        elif _DIFFUSERS_KEYS["flux"] in sd:
            kind = "flux-dev" if _DIFFUSERS_KEYS["flux-guidance"] in sd else "flux-schnell"
            layout = "diffusers"
        elif _DIFFUSERS_KEYS["sd3"] in sd and _DIFFUSERS_KEYS["sd3-joint"] in sd:
            kind, layout = "sd3", "diffusers"
        else:
            kind = None
    family = SINGLE_FILE_TYPES.get(kind or "", UNKNOWN)
    repo = CONFIG_REPOS.get(kind or "", "")
    # an SD 2.x file cannot say whether it predicts noise or v (diffusers guesses from a
    # training step count): the scheduler of the configs it loads with decides
    sched = path.parent / "configs" / repo / "scheduler" / "scheduler_config.json"
    if family == "sd2" and _json(sched).get("prediction_type") == "v_prediction":
        family = "sd2-v"
    return Detected(family, "schnell" if family == "flux-schnell" else "",
                    f"single-file {kind or 'unrecognised'}"
                    + (" (diffusers keys)" if layout == "diffusers" else ""),
                    config_repo=repo)


def detect(path: Path) -> Detected:
    """The family of a model folder or single-file checkpoint."""
    path = Path(path)
    return detect_folder(path) if path.is_dir() else detect_file(path)


# -- samplers ----------------------------------------------------------------------------------
# Flow-matching families sample with FlowMatchEulerDiscreteScheduler; A1111 names map to the
# nearest flow scheduler or are refused. Schedule types the flow scheduler has natively.
FLOW_SAMPLERS = {"euler": ("Euler", {}), "euler a": ("Euler a", {"stochastic_sampling": True}),
                 "k_euler": ("Euler", {}), "k_euler_a": ("Euler a", {"stochastic_sampling": True}),
                 "flowmatcheulerdiscretescheduler": ("Euler", {})}
FLOW_SCHEDULES = {"automatic": {}, "uniform": {}, "simple": {},
                  "karras": {"use_karras_sigmas": True},
                  "exponential": {"use_exponential_sigmas": True},
                  "beta": {"use_beta_sigmas": True}}


def sampler_spec(family: str, name: str | None, schedule: str | None):
    """The SamplerSpec for a request on a family (None: the model's own scheduler)."""
    from shared.engine import samplers

    if not FAMILIES.get(family, FAMILIES["sd1"]).flow:
        return samplers.resolve(name, schedule)
    key = (name or "euler").strip().lower()
    for suffix in ("karras", "exponential"):  # old-style "Euler Karras"
        if key.endswith(" " + suffix) and key[: -len(suffix) - 1] in FLOW_SAMPLERS:
            key, schedule = key[: -len(suffix) - 1], schedule or suffix
    if key not in FLOW_SAMPLERS:
        raise SamplerNotFound(
            f"sampler {name!r} does not apply to {family} (a flow-matching model samples with "
            f"FlowMatchEulerDiscreteScheduler); choose one of Euler, Euler a", param="sampler_name")
    sched = samplers.schedule_key(schedule) or "automatic"
    if sched not in FLOW_SCHEDULES:
        raise SamplerNotFound(f"schedule type {schedule!r} does not apply to {family}; choose one "
                              f"of {', '.join(FLOW_SCHEDULES)}", param="scheduler")
    label, opts = FLOW_SAMPLERS[key]
    opts = {**opts, **FLOW_SCHEDULES[sched]}
    if not opts:
        return None  # the model's own FlowMatchEulerDiscreteScheduler, its shift kept
    if sched not in ("automatic", "uniform"):
        label = f"{label} {samplers.SCHEDULE_LABELS[sched]}"
    return samplers.SamplerSpec("FlowMatchEulerDiscreteScheduler", samplers._freeze(opts), label)


def of_pipe(pipe) -> str:
    """The family a loaded pipeline belongs to, by its class (SD1 and SD2 share one)."""
    name = type(pipe).__name__
    if name.startswith("StableDiffusion3"):
        return "sd3"
    if name.startswith("Flux"):
        return "flux-dev" if pipe.transformer.config.guidance_embeds else "flux-schnell"
    if name.startswith("StableDiffusionXL"):
        return "sdxl" if getattr(pipe, "text_encoder", None) is not None else "sdxl-refiner"
    return "sd1"


def check(key: str, req) -> Family:
    """Refuse, before any work, what a family cannot do with a GenerationRequest (clear 4xx
    instead of a silently different picture)."""
    fam = get(key)

    def no(what: str, param: str):
        raise Unsupported(f"{what} is not supported for {fam.label} models", param=param)

    if req.mode.value not in fam.modes:
        no(f"{req.mode.value}", "mode")
    if req.clip_skip > 1 and not fam.clip_skip:
        no("clip skip (its text encoders are read whole)", "clip_skip")
    if req.negative_prompt.strip() and not fam.negative_prompt:
        no("a negative prompt (its guidance is distilled; true CFG is off)", "negative_prompt")
    if not fam.unet and (req.token_merging_ratio or (
            req.hires is not None and req.hires_token_merging_ratio())):
        no("token merging (ToMe merges a UNet's self-attention tokens; this model is a "
           "transformer)", "token_merging_ratio")
    if fam.flow:
        if req.hires is not None:
            no("hires fix", "enable_hr")
        if req.eta is not None:
            no("eta (a DDIM option; flow matching has no eta)", "eta")
        if req.controlnets:
            no("ControlNet (SD 1.x / SDXL ControlNets only)", "controlnet")
        if req.seed_resize_from is not None:
            no("seed resize", "seed_resize_from")
        if req.tiling:
            no("tiling (its transformer has no convolutions to pad)", "tiling")
        if req.resize_mode == 3:
            no("latent resize mode", "resize_mode")
        if req.mode.value == "inpaint" and req.inpainting_fill in (2, 3):
            no("masked content 'latent noise' / 'latent nothing'", "inpainting_fill")
        if req.partial_images and key.startswith("flux"):
            no("partial images (its latents are packed tokens)", "partial_images")
    return fam


def noise_shape(pipe, w: int, h: int) -> tuple:
    """The initial noise of one image, (1, C, H, W), before packing: UNet latents for SD, the
    transformer's latents for SD3, Flux's unpacked 2x2-patch grid (sides rounded to 16 px)."""
    factor = getattr(pipe, "vae_scale_factor", 8)
    if hasattr(pipe, "unet"):
        return (1, pipe.unet.config.in_channels, h // factor, w // factor)
    channels = pipe.transformer.config.in_channels
    if type(pipe).__name__.startswith("Flux"):
        return (1, channels // 4, 2 * (h // (factor * 2)), 2 * (w // (factor * 2)))
    return (1, channels, h // factor, w // factor)


def pack_noise(pipe, noise):
    """Noise as the pipeline takes `latents`: Flux packs 2x2 patches into tokens."""
    if type(pipe).__name__.startswith("Flux"):
        b, c, hh, ww = noise.shape
        return pipe._pack_latents(noise, b, c, hh, ww)
    return noise


def img2img_size(pipe, w: int, h: int) -> dict:
    """width / height for an image-to-image call whose pipeline takes them (Flux's default to
    its 1024² sample size, not the init image's)."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    return {"width": w, "height": h} if "height" in params else {}
