"""The engine: turns one GenerationRequest into encoded images. It sees no API dialect."""

from __future__ import annotations

import io
import logging
import secrets
import time

from PIL import Image

from shared import images as imgs
from shared.engine import safety, samplers
from shared.engine.pipelines import LoadedModel, PipelineCache, pick_device
from shared.engine.registry import ModelRegistry
from shared.errors import GenerationFailed, InvalidRequest, SdgateError, Unsupported
from shared.generation import (MIME, SEED_BOUND, GeneratedImage, GenerationRequest,
                               GenerationResult, Mode)
from shared.infotext import format_infotext

log = logging.getLogger(__name__)


def ceil8(n: int) -> int:
    return (n + 7) // 8 * 8


def slerp(t: float, a, b):
    """Spherical interpolation between two noise tensors, as A1111's subseed variation does."""
    import torch

    an, bn = a / a.norm(), b / b.norm()
    dot = (an * bn).sum().clamp(-1.0, 1.0)
    if dot.abs() > 0.9995:
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return torch.sin((1.0 - t) * omega) / so * a + torch.sin(t * omega) / so * b


class Engine:
    """Warm pipelines plus the one `generate` every API shape ends in."""

    def __init__(self, registry: ModelRegistry, device: str = "auto", max_loaded: int = 2,
                 max_image_pixels: int = 4096 * 4096):
        self.registry = registry
        self.device, self.dtype = pick_device(device)
        self.cache = PipelineCache(self.device, self.dtype, max_loaded, registry.native_size)
        self.max_image_pixels = max_image_pixels
        self.shared_checker = safety.SharedChecker(registry.root)

    # -- public -------------------------------------------------------------------------------
    def warm(self, model: str | None = None) -> LoadedModel:
        """Load a model now (start-up, Modal enter hooks)."""
        return self.cache.get(self.registry.resolve(model))

    def to(self, device: str) -> None:
        """Move warm models (and later loads) to `device`, keeping the dtype.

        Modal's memory snapshot holds RAM only: weights are loaded with `to("cpu")` before the
        snapshot and moved with `to("cuda")` after the restore.
        """
        self.device = device
        self.cache.to(device)

    def native_size(self, model: str | None = None) -> int:
        """Native side in pixels of a model, without loading it."""
        return self.registry.native_size(self.registry.resolve(model))

    def generate(self, req: GenerationRequest) -> GenerationResult:
        """Generate every image of a request; encoded bytes in the result, no URLs yet."""
        info = self.registry.resolve(req.model)
        spec = samplers.resolve(req.sampler, req.scheduler)  # bad names fail before loading
        t0 = time.perf_counter()
        loaded = self.cache.get(info)
        timings = {"load": time.perf_counter() - t0}
        seed = req.resolved_seed()
        subseed = req.subseed if req.subseed != -1 else secrets.randbelow(SEED_BOUND)
        try:
            with loaded.lock:
                t1 = time.perf_counter()
                pil, nsfw = self._run(loaded, spec, req, seed, subseed)
                timings["inference"] = time.perf_counter() - t1
        except SdgateError:
            raise
        except Exception as e:
            log.exception("generation failed")
            raise GenerationFailed(f"generation failed: {type(e).__name__}: {e}") from e
        t2 = time.perf_counter()
        out = []
        label = spec.label if spec else type(loaded.pipe.scheduler).__name__
        for i, img in enumerate(pil):
            if img.size != (req.width, req.height):
                img = img.resize((req.width, req.height), Image.LANCZOS)
            text = self._infotext(req, info, label, seed + i, subseed + i)
            fmt = req.output_format.value
            data = imgs.encode(img, fmt, {"parameters": text} if fmt == "png" else None)
            out.append(GeneratedImage(seed=seed + i, data=data, mime_type=MIME[req.output_format],
                                      width=img.width, height=img.height, nsfw=nsfw[i],
                                      infotext=text))
        timings["encode"] = time.perf_counter() - t2
        return GenerationResult(images=out, model=info.name, seed=seed, subseed=subseed,
                                timings=timings)

    # -- internals ----------------------------------------------------------------------------
    def _decode(self, data: bytes, mode: str, size: tuple[int, int]) -> Image.Image:
        img = imgs.open_image(data, self.max_image_pixels).convert(mode)
        return img.resize(size, Image.LANCZOS) if img.size != size else img

    def _noise(self, seed: int, subseed: int, strength: float, shape):
        import torch

        g = torch.Generator("cpu").manual_seed(seed)
        x = torch.randn(shape, generator=g)
        if strength > 0:
            s = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(subseed))
            x = slerp(strength, x, s)
        return x, g

    def _run(self, loaded: LoadedModel, spec, req: GenerationRequest, seed: int, subseed: int):
        import torch

        pipe = loaded.variant(req.variant) if req.variant else loaded.pipeline(req.mode)
        checker = self._checker(loaded) if req.safety_checker else None
        pipe.scheduler = loaded.scheduler(spec)
        w, h = ceil8(req.width), ceil8(req.height)
        n = req.num_images
        # One generator per image seeded seed+i: image i is the same whatever its batch position.
        kwargs = dict(prompt=[req.prompt] * n, negative_prompt=[req.negative_prompt] * n,
                      num_inference_steps=req.steps, guidance_scale=req.guidance,
                      output_type="pil")
        if req.clip_skip > 1:
            kwargs["clip_skip"] = req.clip_skip - 1
        if req.mode is Mode.txt2img:
            factor = getattr(pipe, "vae_scale_factor", 8)
            channels = pipe.unet.config.in_channels
            noises, gens = zip(*(self._noise(seed + i, subseed + i, req.subseed_strength,
                                             (1, channels, h // factor, w // factor))
                                 for i in range(n)))
            kwargs.update(width=w, height=h, generator=list(gens),
                          latents=torch.cat(noises).to(self.device, self.dtype))
        else:
            kwargs.update(image=self._decode(req.init_image, "RGB", (w, h)), strength=req.strength,
                          generator=[torch.Generator("cpu").manual_seed(seed + i)
                                     for i in range(n)])
            if req.mode is Mode.inpaint:
                kwargs.update(mask_image=self._decode(req.mask, "L", (w, h)), width=w, height=h)
            if req.strength * req.steps < 1:
                raise InvalidRequest("strength x steps must be at least 1 denoising step",
                                     param="strength")
        result = pipe(**kwargs)
        nsfw = list(getattr(result, "nsfw_content_detected", None) or [False] * n)
        if checker is not None:
            return safety.screen(checker, result.images, req.safety_checker_type, self.device)
        return result.images, nsfw

    def _checker(self, loaded: LoadedModel) -> safety.Checker:
        """The model's own safety checker, else the shared one; refused if there is neither."""
        if loaded.safety_checker is not None and loaded.feature_extractor is not None:
            return safety.Checker(loaded.safety_checker, loaded.feature_extractor)
        shared = self.shared_checker.get()
        if shared is None:
            raise Unsupported(f"safety checker requested, but {loaded.info.name} has none and "
                              f"{self.shared_checker.path} does not exist", param="safety_checker")
        return shared

    def _infotext(self, req: GenerationRequest, info, sampler: str, seed: int, subseed: int) -> str:
        params = {"Steps": req.steps, "Sampler": sampler, "CFG scale": req.guidance, "Seed": seed,
                  "Size": f"{req.width}x{req.height}", "Model hash": info.hash, "Model": info.name}
        if req.mode is not Mode.txt2img:
            params["Denoising strength"] = req.strength
        if req.subseed_strength > 0:
            params.update({"Variation seed": subseed,
                           "Variation seed strength": req.subseed_strength})
        if req.clip_skip > 1:
            params["Clip skip"] = req.clip_skip
        params.update(req.extra_params)
        params["Version"] = "sdgate"
        return format_infotext(req.prompt, req.negative_prompt, params)


def image_size(data: bytes) -> tuple[int, int]:
    """Pixel size of encoded image bytes (for img2img requests with no size)."""
    return Image.open(io.BytesIO(data)).size
