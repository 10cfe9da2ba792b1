"""A refiner model finishing what the base model began (A1111's refiner_checkpoint /
refiner_switch_at): the base denoises the schedule down to the switch point and hands over its
latents; the refiner denoises the rest of the same schedule (diffusers' ensemble of expert
denoisers, `denoising_end` / `denoising_start`). SDXL base and SDXL refiner models only: their
pipelines take those arguments and share one latent space."""

from __future__ import annotations

import inspect

from shared.errors import Unsupported
from shared.generation import GenerationRequest, Mode

FAMILIES = ("sdxl", "sdxl-refiner")


def check(registry, req: GenerationRequest, base) -> object | None:
    """The refiner's ModelInfo, or None when there is nothing to switch to (no refiner, or the
    base model itself, as upstream). What cannot be refined is refused before any work."""
    if req.refiner is None:
        return None
    info = registry.resolve(req.refiner.model)  # unknown checkpoint: 404 naming it
    if info.name == base.name:
        return None  # upstream: the loaded model is already the refiner, nothing switches
    for role, model in (("base", base), ("refiner", info)):
        if model.family not in FAMILIES:
            raise Unsupported(f"a refiner needs SDXL models (base and refiner); the {role} "
                              f"{model.name} is {model.family}", param="refiner_checkpoint")
    for what, on in (("hires fix", req.hires is not None), ("ControlNet", bool(req.controlnets)),
                     ("IP-Adapter", bool(req.ip_adapters)),
                     ("a pipeline variant", req.variant is not None)):
        if on:
            raise Unsupported(f"a refiner together with {what} is not supported",
                              param="refiner_checkpoint")
    return info


def base_kwargs(pipe, switch_at: float) -> dict:
    """What makes the base stop at the switch point and return its latents."""
    if "denoising_end" not in inspect.signature(pipe.__call__).parameters:
        raise Unsupported(f"{type(pipe).__name__} cannot stop part-way (denoising_end)",
                          param="refiner_checkpoint")
    return {"denoising_end": switch_at, "output_type": "latent"}


def finish(engine, info, spec, req: GenerationRequest, prompt: str, latents, seeds, task,
           plan=None):
    """The refiner's pass from the switch point on the base's latents: PIL images. With an
    inpaint plan (shared.engine.masking) the refiner inpaints with the same mask and size, as
    diffusers' base + refiner inpainting does; the plan pastes the result back afterwards."""
    import torch

    from shared.engine import nancheck, samplers, tome

    loaded = engine.cache.get(info)
    with loaded.lock:
        pipe = loaded.pipeline(Mode.inpaint if plan is not None else Mode.img2img)
        pipe.scheduler = loaded.scheduler(spec)
        samplers.seed(pipe.scheduler, seeds[0])
        kwargs = dict(image=latents.to(engine.device), denoising_start=req.refiner.switch_at,
                      num_inference_steps=req.steps, guidance_scale=req.guidance,
                      output_type="pil",
                      generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                      **engine._hires_conditioning(pipe, prompt, req.negative_prompt, req,
                                                   len(seeds), req.steps, task))
        if plan is not None:
            w, h = latents.shape[-1] * pipe.vae_scale_factor, latents.shape[-2] * \
                pipe.vae_scale_factor
            kwargs.update(mask_image=plan.mask, width=w, height=h)
        if req.eta is not None:
            kwargs["eta"] = req.eta
        task.begin_call(max(1, round(req.steps * (1 - req.refiner.switch_at))))
        with tome.applied(pipe.unet, req.token_merging_ratio, seeds, req.token_merging_random):
            out = nancheck.checked_call(pipe, kwargs).images
        task.end_call()
    return out
