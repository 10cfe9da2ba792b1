"""The engine: turns one GenerationRequest into encoded images. It sees no API dialect."""

from __future__ import annotations

import contextlib
import inspect
import logging
import secrets
import time

from PIL import Image

from shared import images as imgs
from shared.engine import (embeddings, families, hires, loras, masking, memory, nancheck,
                           previews, prompts, refiner, resize, safety, samplers, tiling, tome)
from shared.engine.accel import AccelOptions
from shared.engine.batching import NotBatchable, batchable
from shared.engine.pipelines import LoadedModel, PipelineCache, pick_device
from shared.engine.registry import ModelRegistry
from shared.errors import GenerationFailed, InvalidRequest, SdgateError, Unsupported
from shared.generation import (MIME, SEED_BOUND, GeneratedImage, GenerationRequest,
                               GenerationResult, Mode)
from shared.infotext import format_infotext, request_params
from shared.progress import TASKS, TaskGroup
from shared.sizes import ceil8

log = logging.getLogger(__name__)


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


def paste_centre(src, dst):
    """`dst` with `src` pasted on its centre (cropped where larger), as A1111 resizes seeds."""
    (sh, sw), (dh, dw) = src.shape[-2:], dst.shape[-2:]
    h, w = min(sh, dh), min(sw, dw)
    sy, sx, dy, dx = (sh - h) // 2, (sw - w) // 2, (dh - h) // 2, (dw - w) // 2
    dst[..., dy:dy + h, dx:dx + w] = src[..., sy:sy + h, sx:sx + w]
    return dst


class Engine:
    """Warm pipelines plus the one `generate` every API shape ends in."""

    def __init__(self, registry: ModelRegistry, device: str = "auto", max_loaded: int = 2,
                 max_image_pixels: int = 4096 * 4096, accel: AccelOptions | None = None,
                 memory_budget_gb: float | None = None, cpu_offload: str = "off"):
        self.registry = registry
        accel = accel or AccelOptions(models_dir=registry.root)  # callers pass the settings' own
        self.device, self.dtype = pick_device(device, accel)
        self.cache = PipelineCache(self.device, self.dtype, max_loaded, registry.native_size,
                                   accel, budget_gb=memory_budget_gb, cpu_offload=cpu_offload)
        self.max_image_pixels = max_image_pixels
        self.translator_dir = None  # None: <models_dir>/translator (shared/engine/translator.py)
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
        return self.generate_batch([req])[0]

    def generate_batch(self, reqs: list[GenerationRequest]) -> list[GenerationResult]:
        """Requests that differ only in prompts, seeds and outputs (shared.engine.batching) in
        one pipeline call; one result each, every image as its request alone would draw it."""
        req = reqs[0]
        if len(reqs) > 1 and not all(map(batchable, reqs)):
            raise NotBatchable("only plain txt2img requests share a pipeline call")
        info = self.registry.resolve(req.model)
        # a distilled / flow model's own steps, guidance and scheduler where the client sent none
        reqs, applied = zip(*(families.apply_defaults(r, info.family, info.distilled)
                              for r in reqs))
        reqs = [families.drop_optional(r, info.family) for r in reqs]  # ModelsLab's tomesd
        req = reqs[0]
        families.check(info.family, req)  # what the family cannot do fails before loading
        refiner.check(self.registry, req, info)  # unknown / unfit refiner: before loading too
        spec = families.sampler_spec(info.family, req.sampler, req.scheduler)
        if req.controlnets:
            from shared.engine import controlnet

            controlnet.check(req, self.registry.root)
        if req.ip_adapters:
            from shared.engine import ipadapter

            ipadapter.check(req, self.registry.root, info.family)
        hr_spec = self._hires_spec(req)
        post = self._post_upscaler(req)
        texts = [prompts.extract_networks(r.prompt)[0] for r in reqs]
        networks = prompts.extract_networks(req.prompt)[1]  # the same in a batch (batch_key)
        lora_files = loras.resolve(self.registry, req.loras + loras.refs_from_tags(networks))
        t0 = time.perf_counter()
        loaded = self.cache.get(info)
        timings = {"load": time.perf_counter() - t0}
        if lora_files and "fuse_qkv" in loaded.speedups:  # fused q/k/v would bypass the LoRA
            raise Unsupported("LoRAs cannot be applied while SDGATE_FUSE_QKV is on (the fused "
                              "attention projections would ignore them)", param="lora")
        per_request = [self._seeds(r) for r in reqs]
        seeds = [s for own, _ in per_request for s in own]
        subseeds = [s for _, own in per_request for s in own]
        tasks = [TASKS.open(r.task_id, r.owner) for r in reqs]
        task = tasks[0] if len(tasks) == 1 else TaskGroup(tasks)
        previews.attach(task, reqs, (reqs[0].width, reqs[0].height), loaded, self.registry.root)
        try:
            with loaded.lock:
                t1 = time.perf_counter()
                pil, nsfw = self._batches(loaded, spec, hr_spec, reqs, texts, lora_files, seeds,
                                          subseeds, task)
                timings["inference"] = time.perf_counter() - t1
        except (SdgateError, NotBatchable):
            raise
        except Exception as e:
            log.exception("generation failed")
            raise GenerationFailed(f"generation failed: {type(e).__name__}: {e}") from e
        finally:
            task.finish()
        label = spec.label if spec else type(loaded.pipe.scheduler).__name__
        results, k = [], 0
        for req, (own_seeds, own_subseeds), own_task, own_defaults in zip(
                reqs, per_request, tasks, applied):
            t2 = time.perf_counter()
            out = []
            for i, img in enumerate(pil[k:k + len(own_seeds)]):
                size = self._out_size(req, img)
                if img.size != size:
                    img = img.resize(size, Image.LANCZOS)
                if post is not None:
                    img = self._post_upscale(img, post, req)
                text = self._infotext(req, info, label, own_seeds[i], own_subseeds[i])
                fmt = req.output_format.value
                data = imgs.encode(img, fmt, {"parameters": text} if fmt == "png" else None,
                                   req.output_quality)
                out.append(GeneratedImage(seed=own_seeds[i], data=data,
                                          mime_type=MIME[req.output_format], width=img.width,
                                          height=img.height, nsfw=nsfw[k + i], infotext=text,
                                          subseed=own_subseeds[i]))
            k += len(own_seeds)
            own = {**timings, "encode": time.perf_counter() - t2, "batch": float(len(seeds))}
            results.append(GenerationResult(images=out, model=info.name, seed=own_seeds[0],
                                            subseed=own_subseeds[0], timings=own,
                                            model_hash=info.hash,
                                            interrupted=own_task.interrupted,
                                            steps=req.steps, guidance=req.guidance,
                                            sampler=label, model_defaults=own_defaults))
        return results

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _seeds(req: GenerationRequest) -> tuple[list[int], list[int]]:
        """Per-image seeds as A1111: seed + i, or one seed and subseed + i for variations."""
        seed = req.resolved_seed()
        subseed = req.subseed if req.subseed != -1 else secrets.randbelow(SEED_BOUND)
        n = req.num_images
        vary = req.subseed_strength > 0
        nth = GenerationRequest.nth_seed
        return ([nth(seed, 0 if vary else i) for i in range(n)],
                [nth(subseed, i) for i in range(n)])

    def _hires_spec(self, req: GenerationRequest):
        """The hires pass's sampler (the first pass's unless given); checks the upscaler name."""
        if req.hires is None:
            return None
        hires.upscaler(req.hires.upscaler, self.registry.root)
        return samplers.resolve(req.hires.sampler or req.sampler,
                                req.hires.scheduler or req.scheduler)

    def _post_upscaler(self, req: GenerationRequest):
        """The model upscaler of `req.upscale` (checked before any work), or None."""
        if req.upscale is None:
            return None
        from shared.engine import upscalers

        return upscalers.post_upscaler(self, req)

    def _post_upscale(self, img: Image.Image, post, req: GenerationRequest) -> Image.Image:
        from shared.engine import upscalers

        try:
            return upscalers.upscale_by(self, img, post, req.upscale.scale)
        except SdgateError:
            raise
        except Exception as e:  # a broken upscaler file: this request fails, clearly
            log.exception("upscale after generation failed")
            raise GenerationFailed(f"upscaling with {post.name} failed: {type(e).__name__}: "
                                   f"{e}") from e

    @staticmethod
    def _out_size(req: GenerationRequest, img: Image.Image) -> tuple[int, int]:
        if req.hires is not None:
            return req.hires.width, req.hires.height
        if req.mode is Mode.inpaint and req.inpaint_full_res:
            return img.size  # "only masked" pastes into the init picture, at its own size
        return req.width, req.height

    def _decode(self, data: bytes, mode: str, size: tuple[int, int]) -> Image.Image:
        img = imgs.open_image(data, self.max_image_pixels).convert(mode)
        return img.resize(size, Image.LANCZOS) if img.size != size else img

    def _noise(self, seed: int, subseed: int, strength: float, shape, resize_from=None):
        """Initial noise from a seed, slerped toward the subseed's; `resize_from` (w, h) draws
        it at another size and centres it, so a seed keeps its composition across sizes."""
        import torch

        g = torch.Generator("cpu").manual_seed(seed)
        draw = shape if not resize_from else (*shape[:2], resize_from[1] // 8, resize_from[0] // 8)
        x = torch.randn(draw, generator=g if draw == shape else
                        torch.Generator("cpu").manual_seed(seed))
        if strength > 0:
            s = torch.randn(draw, generator=torch.Generator("cpu").manual_seed(subseed))
            x = slerp(strength, x, s)
        if draw != shape:
            x = paste_centre(x, torch.randn(shape, generator=g))
        return x, g

    def _batches(self, loaded: LoadedModel, spec, hr_spec, reqs: list[GenerationRequest],
                 texts: list[str], lora_files, seeds: list[int], subseeds: list[int], task):
        """Every batch of a request (or one call for a batch of requests), under their LoRAs,
        embeddings and tiling; stops on interrupt. `texts`: each request's prompt, tags removed."""
        req = reqs[0]
        size = req.batch_size if req.batch_size and len(reqs) == 1 else len(seeds)
        calls = -(-len(seeds) // size) * (2 if req.hires or req.refiner else 1)
        task.begin(req.mode.value, calls)
        words = texts + [r.negative_prompt for r in reqs] + (
            [req.hires.prompt or "", req.hires.negative_prompt or ""] if req.hires else [])
        embeddings.ensure(loaded.pipe, self.registry, words)
        images, nsfw = [], []
        with loras.applied(loaded.pipe, lora_files), tiling.circular(loaded.pipe, req.tiling):
            for i in range(0, len(seeds), size):
                if task.interrupted:
                    break
                out, flags = self._run(loaded, spec, hr_spec, reqs, texts, seeds[i:i + size],
                                       subseeds[i:i + size], task)
                images += out
                nsfw += flags
        return images, nsfw

    def _run(self, loaded: LoadedModel, spec, hr_spec, reqs: list[GenerationRequest],
             texts: list[str], seeds: list[int], subseeds: list[int], task):
        """One pipeline call for a batch (and its hires pass): PIL images and NSFW flags.

        Several requests (txt2img, same settings) share the call with their own prompts."""
        import torch

        req, prompt = reqs[0], texts[0]
        checker = (self._checker(loaded, req.safety_checker_optional) if req.safety_checker
                   else None)
        w, h = ceil8(req.width), ceil8(req.height)
        mode, plan, init = req.mode, None, None
        if mode is not Mode.txt2img:
            init = imgs.open_image(req.init_image, self.max_image_pixels).convert("RGB")
        if mode is Mode.inpaint:
            plan = masking.plan(init, imgs.open_image(req.mask, self.max_image_pixels), w, h,
                                resize_mode=req.resize_mode, blur_xy=req.mask_blur,
                                invert=req.mask_invert, fill=req.inpainting_fill,
                                full_res=req.inpaint_full_res,
                                padding=req.inpaint_full_res_padding)
            mode = Mode.inpaint if plan else Mode.img2img  # empty mask: upstream does img2img
        pipe = loaded.variant(req.variant) if req.variant else loaded.pipeline(mode)
        pipe.scheduler = loaded.scheduler(spec)
        samplers.seed(pipe.scheduler, seeds[0])
        cond, on_step = self._conditioning(pipe, reqs, texts, len(seeds), req.steps, task)
        kwargs = dict(num_inference_steps=req.steps, guidance_scale=req.guidance,
                      output_type="pil", callback_on_step_end=on_step, **cond)
        if req.eta is not None:
            kwargs["eta"] = req.eta
        if "callback_on_step_end" not in inspect.signature(pipe.__call__).parameters:
            if on_step != task.on_step_end:  # bound methods: equal, never identical
                raise Unsupported(f"prompt editing / alternation needs per-step callbacks, "
                                  f"which {type(pipe).__name__} lacks", param="prompt")
            del kwargs["callback_on_step_end"]  # SAG: no step progress or interrupt
        if mode is Mode.txt2img:
            kwargs.update(self._txt2img_inputs(pipe, req, seeds, subseeds, w, h))
            if req.hires and hires.upscaler(req.hires.upscaler, self.registry.root).latent:
                kwargs["output_type"] = "latent"  # upscaled as latents, decoded after pass 2
        else:
            if req.strength * req.steps < 1:
                raise InvalidRequest("strength x steps must be at least 1 denoising step",
                                     param="strength")
            kwargs.update(strength=req.strength,
                          generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
            if plan is not None:
                kwargs.update(image=plan.image, mask_image=plan.mask, width=w, height=h)
                if req.inpainting_fill in (masking.LATENT_NOISE, masking.LATENT_NOTHING):
                    kwargs.update(masking.latent_fill(pipe, plan, req.inpainting_fill, seeds))
            elif req.resize_mode == resize.LATENT:
                kwargs["image"] = hires.encode_resized(pipe, init, w, h)
            else:
                kwargs["image"] = resize.fit(init, req.resize_mode, w, h).resize((w, h))
                if families.FAMILIES[loaded.info.family].flow:  # Flux img2img defaults to 1024²
                    kwargs.update(families.img2img_size(pipe, w, h))
        refine = refiner.check(self.registry, req, loaded.info)
        if refine is not None:
            kwargs.update(refiner.base_kwargs(pipe, req.refiner.switch_at))
        hooks = contextlib.nullcontext()
        if req.controlnets:  # the same call through a ControlNet pipeline sharing the weights
            from shared.engine import controlnet

            prepared = controlnet.prepare(self, loaded, mode, req, w, h, len(seeds), plan)
            if prepared is not None:
                pipe, extra, hooks = prepared
                pipe.scheduler = loaded.scheduler(spec)
                kwargs.update(extra)
        image_prompt = contextlib.nullcontext({})
        if req.ip_adapters:  # loaded into the UNet for this call only
            from shared.engine import ipadapter

            image_prompt = ipadapter.applied(self, pipe, req)
        task.begin_call(req.steps if mode is Mode.txt2img else int(req.steps * req.strength))
        merging = tome.applied(getattr(pipe, "unet", None), req.token_merging_ratio, seeds,
                               req.token_merging_random)  # inside the IP-Adapter's processors
        with hooks, image_prompt as extra, merging:
            result = nancheck.checked_call(pipe, {**kwargs, **extra})
        task.end_call()
        out = result.images
        if refine is not None:
            out = refiner.finish(self, refine, spec, req, prompt, out, seeds, task, plan)
        if req.hires is not None:
            out = self._hires(loaded, hr_spec, req, prompt, out, seeds, task)
        if plan is not None:
            out = [plan.finish(img) for img in out]
        if checker is not None:
            return safety.screen(checker, out, req.safety_checker_type, self.device)
        nsfw = list(getattr(result, "nsfw_content_detected", None) or [False] * len(seeds))
        return out, nsfw

    def _conditioning(self, pipe, reqs: list[GenerationRequest], texts: list[str], n: int,
                      steps: int, task):
        """Prompt embeddings and the step callback; prompt editing / alternation switch the
        embeddings per step (one request only: batching.batchable keeps them alone)."""
        if len(reqs) > 1:
            return self._encode(pipe, reqs, texts, n), task.on_step_end
        r = reqs[0]
        parts = prompts.encode_scheduled(pipe, texts[0], r.negative_prompt, r.clip_skip, n, steps)
        if len(parts) == 1:
            return parts[0][1], task.on_step_end
        return parts[0][1], prompts.switcher(parts, task.on_step_end)

    @staticmethod
    def _encode(pipe, reqs: list[GenerationRequest], texts: list[str], n: int) -> dict:
        """Prompt embeddings for `n` images of one request, or each request's own, stacked."""
        if len(reqs) == 1:
            return prompts.encode(pipe, texts[0], reqs[0].negative_prompt, reqs[0].clip_skip, n)
        import torch

        parts = [prompts.encode(pipe, t, r.negative_prompt, r.clip_skip, r.num_images)
                 for r, t in zip(reqs, texts)]
        if len({p["prompt_embeds"].shape[1:] for p in parts}) > 1:
            raise NotBatchable("prompts of different lengths (75-token chunks)")
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _txt2img_inputs(self, pipe, req: GenerationRequest, seeds, subseeds, w: int, h: int):
        """Seeded initial latents, and one generator per image seeded seed+i: image i is the
        same whatever its batch position."""
        import torch

        shape = families.noise_shape(pipe, w, h)
        noises, gens = zip(*(self._noise(s, sub, req.subseed_strength, shape,
                                         req.seed_resize_from)
                             for s, sub in zip(seeds, subseeds)))
        latents = families.pack_noise(pipe, torch.cat(noises))
        return dict(width=w, height=h, generator=list(gens),
                    latents=latents.to(self.device, self.dtype))

    def _hires(self, loaded: LoadedModel, spec, req: GenerationRequest, prompt: str, first,
               seeds: list[int], task):
        """The hires fix pass: the first pass upscaled, then img2img at the hires size."""
        import torch

        hr = req.hires
        w, h = ceil8(hr.width), ceil8(hr.height)
        pipe = loaded.pipeline(Mode.img2img)
        pipe.scheduler = loaded.scheduler(spec)
        samplers.seed(pipe.scheduler, seeds[0])
        steps = hr.steps or req.steps
        if hr.strength == 0:  # no denoising asked: the upscaled first pass as it is
            up = hires.upscaler(hr.upscaler, self.registry.root)
            image = hires.upscale(first, up, w, h, self)
            if not up.latent:
                return image
            with torch.no_grad():
                vae = pipe.vae
                pixels = vae.decode(image / vae.config.scaling_factor, return_dict=False)[0]
            return pipe.image_processor.postprocess(pixels, output_type="pil")
        hr_prompt = prompts.extract_networks(hr.prompt)[0] if hr.prompt else prompt
        negative = hr.negative_prompt if hr.negative_prompt else req.negative_prompt
        up = hires.upscaler(hr.upscaler, self.registry.root)
        kwargs = dict(image=hires.upscale(first, up, w, h, self),
                      strength=hr.strength,
                      num_inference_steps=hires.img2img_steps(steps, hr.strength),
                      guidance_scale=req.guidance, output_type="pil",
                      generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                      **self._hires_conditioning(pipe, hr_prompt, negative, req, len(seeds),
                                                 steps, task))
        if req.eta is not None:
            kwargs["eta"] = req.eta
        task.begin_call(steps)
        with tome.applied(pipe.unet, req.hires_token_merging_ratio(), seeds,
                          req.token_merging_random):
            out = nancheck.checked_call(pipe, kwargs).images
        task.end_call()
        return out

    @staticmethod
    def _hires_conditioning(pipe, prompt: str, negative: str, req: GenerationRequest, n: int,
                            steps: int, task) -> dict:
        """The hires pass's embeddings and callback; its edits count the hires steps."""
        parts = prompts.encode_scheduled(pipe, prompt, negative, req.clip_skip, n, steps)
        on_step = task.on_step_end if len(parts) == 1 else prompts.switcher(parts,
                                                                            task.on_step_end)
        return {**parts[0][1], "callback_on_step_end": on_step}

    def _checker(self, loaded: LoadedModel, optional: bool = False) -> safety.Checker | None:
        """The model's own safety checker, else the shared one; refused if there is neither
        (None if the request made it optional)."""
        if loaded.safety_checker is not None and loaded.feature_extractor is not None:
            return safety.Checker(loaded.safety_checker, loaded.feature_extractor)
        shared = self.shared_checker.get()
        if shared is None and optional:
            return None
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
        params.update(request_params(req))
        params.update(req.extra_params)
        params["Version"] = "sdgate"
        return format_infotext(req.prompt, req.negative_prompt, params)

