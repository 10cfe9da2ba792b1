"""ControlNet for the engine: models from <models_dir>/ControlNet (kept warm in an LRU), control
images, and diffusers' ControlNet pipelines derived with `from_pipe` from the loaded model.

Control modes follow sd-webui-controlnet: "My prompt is more important" scales the residuals of
each block by 0.825^(12-i) (its soft injection), "ControlNet is more important" is diffusers'
guess_mode (control on the conditional half only, residuals scaled up through the blocks).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from functools import partial

from PIL import Image

from shared import images as imgs
from shared.engine import ops, preprocessors, resize
from shared.engine.controlnet_types import (CONTROLNET_DIR, DetectRequest, DetectResult,
                                            resolve_model)
from shared.errors import GenerationFailed, InvalidRequest, Unsupported
from shared.generation import ControlMode, ControlNetUnit, GenerationRequest, Mode

MAX_LOADED = 4
PROMPT_SOFT = 0.825  # sd-webui-controlnet's per-block decay for "My prompt is more important"

_lock = threading.Lock()
_cache: OrderedDict[tuple, object] = OrderedDict()


def load(path, base_unet, device: str, dtype):
    """A ControlNetModel: a diffusers folder with from_pretrained, or a single file (diffusers or
    original ControlNet keys) into the base UNet's architecture; kept in a small LRU."""
    key = (str(path), device, str(dtype), id(base_unet) if not path.is_dir() else None)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    try:
        model = _load(path, base_unet, dtype)
    except Exception as e:
        raise GenerationFailed(f"could not load ControlNet {path.name!r}: {e}") from e
    model.to(device)
    model.eval()
    with _lock:
        _cache[key] = model
        while len(_cache) > MAX_LOADED:
            _cache.popitem(last=False)
    return model


def _load(path, base_unet, dtype):
    from diffusers import ControlNetModel

    if path.is_dir():
        return ControlNetModel.from_pretrained(str(path), torch_dtype=dtype)
    # Offline: no config is fetched; a ControlNet has its base model's UNet architecture.
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    model = ControlNetModel.from_unet(base_unet, load_weights_from_unet=False)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = convert_controlnet_checkpoint(state, model.config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not fit the base model's ControlNet architecture "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} keys)")
    return model.to(dtype)


def pipeline(loaded, mode: Mode, nets: list):
    """The ControlNet pipeline for a mode, sharing the loaded model's weights."""
    from diffusers import (StableDiffusionControlNetImg2ImgPipeline,
                           StableDiffusionControlNetInpaintPipeline,
                           StableDiffusionControlNetPipeline, StableDiffusionPipeline,
                           StableDiffusionXLControlNetImg2ImgPipeline,
                           StableDiffusionXLControlNetInpaintPipeline,
                           StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline)
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    if isinstance(loaded.pipe, StableDiffusionXLPipeline):
        classes = (StableDiffusionXLControlNetPipeline, StableDiffusionXLControlNetImg2ImgPipeline,
                   StableDiffusionXLControlNetInpaintPipeline)
    elif isinstance(loaded.pipe, StableDiffusionPipeline):
        classes = (StableDiffusionControlNetPipeline, StableDiffusionControlNetImg2ImgPipeline,
                   StableDiffusionControlNetInpaintPipeline)
    else:
        raise Unsupported(f"ControlNet needs a Stable Diffusion 1.x/2.x or SDXL model; "
                          f"{loaded.info.name} is a {type(loaded.pipe).__name__}",
                          param="controlnet")
    cls = classes[[Mode.txt2img, Mode.img2img, Mode.inpaint].index(mode)]
    net = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
    pipe = cls.from_pipe(loaded.pipe, controlnet=net)  # modules shared, nothing copied
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check(req: GenerationRequest, root) -> None:
    """Unknown names and combinations the ControlNet path does not do: refused before any work."""
    if req.hires is not None:
        raise Unsupported("ControlNet with hires fix is not supported (the second pass would "
                          "run without the control)", param="controlnet")
    if req.variant is not None:
        raise Unsupported(f"ControlNet with the {req.variant.value} pipeline is not supported",
                          param="controlnet")
    if req.mode is Mode.inpaint and req.inpainting_fill in (2, 3):
        raise Unsupported("ControlNet inpaint supports masked content 'fill' or 'original' "
                          "(diffusers' ControlNet inpaint pipeline takes no masked latents)",
                          param="controlnet")
    modes = {u.control_mode for u in req.controlnets}
    if ControlMode.controlnet in modes and len(modes) > 1:
        raise Unsupported("'ControlNet is more important' applies to the whole call; give every "
                          "unit that control mode or none", param="control_mode")
    for i, u in enumerate(req.controlnets):
        preprocessors.canonical(u.module)  # names the choices
        resolve_model(root, u.model)
        if u.mask is not None:
            raise Unsupported(f"controlnet unit {i}: unit masks are for the inpaint "
                              "preprocessors, which sdgate does not have (an effective region "
                              "is effective_region_mask)", param="mask")
        if u.image is None and req.init_image is None:
            raise InvalidRequest(f"controlnet unit {i} has no image (txt2img needs one)",
                                 param="image")


def pixel_perfect_res(img: Image.Image, w: int, h: int, resize_mode: int) -> int:
    """sd-webui-controlnet's pixel perfect: the preprocessor resolution that maps 1:1 onto the
    generated picture."""
    k0, k1 = h / img.height, w / img.width
    k = min(k0, k1) if resize_mode == resize.FILL else max(k0, k1)
    return int(round(k * min(img.width, img.height)))


def scale_short_side(img: Image.Image, res: int) -> Image.Image:
    k = res / min(img.size)
    size = (max(1, round(img.width * k)), max(1, round(img.height * k)))
    return img if size == img.size else img.resize(size, Image.LANCZOS)


def control_image(unit: ControlNetUnit, src: Image.Image, w: int, h: int,
                  seed: int = 0) -> Image.Image:
    """The preprocessed control image at exactly w x h."""
    if preprocessors.canonical(unit.module) != "none":
        res = pixel_perfect_res(src, w, h, unit.resize_mode) if unit.pixel_perfect \
            else unit.processor_res
        src = preprocessors.run(unit.module, scale_short_side(src, res), unit.threshold_a,
                                unit.threshold_b, seed)
    out = resize.fit(src, unit.resize_mode, w, h)
    return out.resize((w, h), Image.LANCZOS) if out.size != (w, h) else out


def prepare(engine, loaded, mode: Mode, req: GenerationRequest, w: int, h: int, n: int,
            plan=None):
    """(pipeline, kwargs, hooks context) for a ControlNet call of `n` images; None when no unit
    has a step in its guidance window (start == end: it never acts, as upstream)."""
    units = [u for u in req.controlnets if u.guidance_start < u.guidance_end]
    if not units:
        return None
    nets, images, regions = [], [], []
    for unit in units:
        path = resolve_model(engine.registry.root, unit.model)
        nets.append(load(path, loaded.pipe.unet, engine.device, engine.dtype))
        src = imgs.open_image(unit.image or req.init_image, engine.max_image_pixels)
        src = src.convert("RGB")
        if plan is not None and plan.region is not None:  # "only masked": the same crop
            src = resize.fit(src, unit.resize_mode, *plan.original.size)
            src = src.resize(plan.original.size, Image.LANCZOS).crop(plan.region)
        images.append(control_image(unit, src, w, h, req.resolved_seed()))
        regions.append(None if unit.region_mask is None else
                       region_tensor(engine, unit.region_mask, plan))
    pipe = pipeline(loaded, mode, nets)
    one = len(nets) == 1
    kwargs = dict(
        controlnet_conditioning_scale=units[0].weight if one else [u.weight for u in units],
        control_guidance_start=[u.guidance_start for u in units],
        control_guidance_end=[u.guidance_end for u in units],
        guess_mode=units[0].control_mode is ControlMode.controlnet)
    kwargs["image" if mode is Mode.txt2img else "control_image"] = images[0] if one else images
    return pipe, kwargs, _residual_hooks(nets, units, regions)


def region_tensor(engine, data: bytes, plan=None):
    """An effective-region mask as sd-webui-controlnet reads it: the first channel in 0-1,
    shape (1, 1, H, W); "only masked" inpaint crops it with the same box as the picture."""
    import numpy as np
    import torch

    img = imgs.open_image(data, engine.max_image_pixels).convert("RGB")
    if plan is not None and plan.region is not None:
        img = img.resize(plan.original.size, Image.LANCZOS).crop(plan.region)
    arr = np.asarray(img, dtype=np.float32)[:, :, 0] / 255.0
    return torch.from_numpy(arr)[None, None].to(engine.device, engine.dtype)


@contextmanager
def _residual_hooks(nets, units, regions):
    """Scale each block's residual by 0.825^(blocks-i) for units whose prompt is more important,
    and multiply it by the unit's effective region (bilinear to the residual's size)."""
    with ExitStack() as stack:
        for net, unit, region in zip(nets, units, regions):
            soft = unit.control_mode is ControlMode.prompt
            if soft or region is not None:
                hook = partial(_residual_hook, soft=soft, region=region)
                stack.callback(net.register_forward_hook(hook).remove)
        yield


def _residual_hook(module, args, output, soft: bool = False, region=None):
    import torch.nn.functional as F

    down, mid = (output.down_block_res_samples, output.mid_block_res_sample) \
        if hasattr(output, "down_block_res_samples") else output
    if soft:
        last = len(down)  # 12 for SD: 0.825^12 on the first block, 1 on the middle block
        down = [d * PROMPT_SOFT ** (last - i) for i, d in enumerate(down)]
    if region is not None:  # upstream's apply_effective_region_mask
        def masked(x):
            return x * F.interpolate(region.to(x.dtype), size=x.shape[-2:], mode="bilinear")
        down, mid = [masked(d) for d in down], masked(mid)
    if hasattr(output, "down_block_res_samples"):
        output.down_block_res_samples, output.mid_block_res_sample = down, mid
        return output
    return down, mid


@ops.op("controlnet_detect")
def detect(engine, req: DetectRequest) -> DetectResult:
    """/controlnet/detect: each image through one preprocessor, PNG out."""
    preprocessors.canonical(req.module)
    out = []
    for data in req.images:
        src = imgs.open_image(data, engine.max_image_pixels).convert("RGB")
        if preprocessors.canonical(req.module) != "none":
            src = scale_short_side(src, req.processor_res)
        img = preprocessors.run(req.module, src, req.threshold_a, req.threshold_b)
        out.append(imgs.encode(img, "png"))
    return DetectResult(images=out)


__all__ = ["CONTROLNET_DIR", "check", "prepare", "load", "detect"]
