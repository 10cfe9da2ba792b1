"""The A1111 `alwayson_scripts` sdgate runs, in one place: `controlnet` (units inside the
generation request, shared/dialects/a1111/controlnet.py) and the face scripts run around it,
`reactor` (face swap on the init image and/or each generated image) and `ADetailer` (each
detected face inpainted again). Names match case-insensitively, as upstream's script titles do.
Face scripts run after restore_faces, in A1111's extension order: ADetailer, then ReActor."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import Unavailable, Unsupported

KNOWN = ("controlnet", "reactor", "adetailer")


def is_known(name: str) -> bool:
    return name.strip().lower() in KNOWN


def listed(settings) -> list[str]:
    """GET /scripts: the scripts a request may name here (the face ones only with faces on)."""
    return list(KNOWN) if settings.faces else ["controlnet"]


def _entry(scripts: dict | None, key: str):
    for name, value in (scripts or {}).items():
        if name.strip().lower() == key:
            return value
    return None


@dataclass
class FaceScripts:
    """What the face scripts of one request do (None: that script is off)."""

    reactor: object = None  # FaceSwapRequest without its target
    swap_in_source: bool = False
    swap_in_generated: bool = False
    adetailer: list = field(default_factory=list)  # engine ADetailer units

    @property
    def active(self) -> bool:
        return bool((self.reactor and (self.swap_in_source or self.swap_in_generated))
                    or self.adetailer)


def face_scripts(request, req, urls: bool, img2img: bool) -> FaceScripts:
    """Parse and check the face scripts before any work: faces off (503), URL responses (the
    images are uploaded before scripts could run, 400)."""
    from shared.adetailer import detector_file
    from shared.dialects.a1111 import adetailer_script, reactor_script

    settings = request.app.state.settings
    out = FaceScripts()
    raw = _entry(req.alwayson_scripts, reactor_script.SCRIPT)
    if raw is not None:
        parsed = reactor_script.parse(raw, settings.max_image_pixels,
                                      settings.faces_safety_checker)
        if parsed is not None:
            out.reactor, out.swap_in_source, out.swap_in_generated = parsed
            out.swap_in_source = out.swap_in_source and img2img  # upstream: img2img only
    raw = _entry(req.alwayson_scripts, adetailer_script.SCRIPT)
    if raw is not None:
        out.adetailer = adetailer_script.parse(raw, img2img, inpaint=bool(getattr(req, "mask",
                                                                                 None)))
    if out.active:
        for unit in out.adetailer:  # unknown detector: 404 naming the choices, before work
            detector_file(settings.models_dir, unit.model)
        if not settings.faces:
            raise Unavailable("face features are turned off on this server (SDGATE_FACES)",
                              param="alwayson_scripts")
        if urls:
            raise Unsupported("face scripts (ReActor, ADetailer) with URL responses are not "
                              "supported; ask for base64", param="alwayson_scripts")
    return out


async def swap_source(request, scripts: FaceScripts, init: bytes) -> bytes:
    """ReActor's "swap in source image": the init image's faces swapped before img2img."""
    if not (scripts.reactor and scripts.swap_in_source):
        return init
    swap = scripts.reactor.model_copy(update={"target_image": init})
    return (await request.app.state.backend.op("face_swap", swap)).image


async def after(request, scripts: FaceScripts, result, internal):
    """Each generated image through ADetailer (inpainting with the request that drew it, at
    that image's seed), then ReActor's "swap in generated image"."""
    from shared.adetailer import ADetailerRequest, add_params

    backend = request.app.state.backend
    for img in result.images:
        if not img.data:
            continue
        if scripts.adetailer:
            base = internal.model_copy(update={"seed": img.seed, "subseed": img.subseed,
                                               "num_images": 1})
            out = await backend.op("adetailer", ADetailerRequest(image=img.data, base=base,
                                                                 units=scripts.adetailer))
            img.data = out.image
            if out.regions:
                img.infotext = add_params(img.infotext, out.params)
        if scripts.reactor and scripts.swap_in_generated:
            swap = scripts.reactor.model_copy(update={"target_image": img.data})
            img.data = (await backend.op("face_swap", swap)).image
    return result
