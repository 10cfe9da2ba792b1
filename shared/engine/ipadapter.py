"""IP-Adapter (image prompts) for the engine, with diffusers' `load_ip_adapter`.

Adapters are loaded into the warm model's UNet for one call and taken out again afterwards (the
UNet's own attention processors restored), so a request without one runs the untouched model.
Several references for one adapter are encoded separately and their image tokens concatenated
(diffusers' list-of-images form); several adapters each add their own tokens.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager

from shared import images as imgs
from shared.engine.controlnet_types import ip_adapters, resolve_ip_adapter
from shared.errors import GenerationFailed, InvalidRequest, Unsupported
from shared.generation import GenerationRequest

FAMILIES = ("sd1", "sd2", "sd2-v", "sdxl")  # diffusers' IPAdapterMixin pipelines
MAX_ENCODERS = 2

_lock = threading.Lock()
_encoders: OrderedDict[tuple, object] = OrderedDict()


def check(req: GenerationRequest, root, family: str) -> None:
    """Names and combinations refused before any work."""
    if family not in FAMILIES:
        raise Unsupported(f"IP-Adapter needs a Stable Diffusion 1.x/2.x or SDXL model, not "
                          f"{family}", param="ip_adapter")
    if req.hires is not None or req.variant is not None or req.refiner is not None:
        raise Unsupported("IP-Adapter with hires fix, a refiner or the panorama / SAG "
                          "pipelines is not supported (that pass would run without the image "
                          "prompt)",
                          param="ip_adapter")
    if not ip_adapters(root):
        raise Unsupported("no IP-Adapter is installed: put h94/IP-Adapter's models/ folder "
                          "(an ip-adapter_*.safetensors beside image_encoder/) under "
                          "<models_dir>/IP-Adapter/", param="ip_adapter")
    if req.inpaint_full_res and any(r.region_mask is not None for r in req.ip_adapters):
        raise Unsupported("IP-Adapter effective regions with \"only masked\" inpainting are not "
                          "supported", param="ip_adapter")
    folders = {_path(root, ref.model).parent for ref in req.ip_adapters}
    if len(folders) > 1:
        raise InvalidRequest("IP-Adapters of one request must share an image encoder (one "
                             f"folder); got {sorted(map(str, folders))}", param="ip_adapter")


def _path(root, name: str | None, cross_dim: int | None = None):
    """The adapter file: by name, else the first (by name) that fits a UNet whose
    cross-attention width is `cross_dim`; one made for another width is refused."""
    if name is not None:
        path = resolve_ip_adapter(root, name)
        width = _width(path)
        if cross_dim is not None and width not in (None, cross_dim):
            raise InvalidRequest(f"IP-Adapter {name!r} is for models of cross-attention width "
                                 f"{width}, this model's is {cross_dim} (an SD1.5 adapter on "
                                 "SDXL, or the reverse)", param="ip_adapter")
        return path
    found = ip_adapters(root)
    for path in found.values():
        if cross_dim is None or _width(path) in (None, cross_dim):
            return path
    raise Unsupported(f"no installed IP-Adapter fits this model (cross-attention width "
                      f"{cross_dim}); installed: {list(found)}", param="ip_adapter")


def _width(path) -> int | None:
    """The cross-attention width an adapter file was trained for (None: not readable cheaply):
    its to_k_ip layers take that many input features, in every IP-Adapter variant."""
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        key = next((k for k in f.keys() if k.endswith(".to_k_ip.weight")), None)
        return None if key is None else f.get_slice(key).get_shape()[1]


@contextmanager
def applied(engine, pipe, req: GenerationRequest):
    """`pipe` with the request's adapters loaded and scaled; yields the pipeline kwargs."""
    from diffusers import DiffusionPipeline

    root = engine.registry.root
    width = pipe.unet.config.cross_attention_dim
    paths = [_path(root, ref.model, width) for ref in req.ip_adapters]
    folder = paths[0].parent
    unet = pipe.unet
    saved = (unet.attn_processors, unet.encoder_hid_proj, unet.config.encoder_hid_dim_type,
             getattr(pipe, "image_encoder", None), getattr(pipe, "feature_extractor", None))
    if not isinstance(pipe, DiffusionPipeline) or not hasattr(pipe, "load_ip_adapter"):
        raise Unsupported(f"{type(pipe).__name__} takes no IP-Adapter", param="ip_adapter")
    try:
        _load(engine, pipe, folder, [p.name for p in paths])
        pipe.set_ip_adapter_scale([ref.scale for ref in req.ip_adapters])
        refs = [[imgs.open_image(data, engine.max_image_pixels).convert("RGB")
                 for data in ref.images] for ref in req.ip_adapters]
        extra = {"ip_adapter_image": [r if len(r) > 1 else r[0] for r in refs]}
        if any(ref.region_mask is not None for ref in req.ip_adapters):
            extra["cross_attention_kwargs"] = {"ip_adapter_masks": _masks(engine, req)}
        yield extra
    finally:
        unet.set_attn_processor(saved[0])
        unet.encoder_hid_proj = saved[1]
        unet.config.encoder_hid_dim_type = saved[2]
        pipe.register_modules(image_encoder=saved[3], feature_extractor=saved[4])


def _masks(engine, req: GenerationRequest) -> list:
    """Each adapter's effective region as diffusers' ip_adapter_masks (None: everywhere), one
    copy per reference, at the picture's size."""
    from diffusers.image_processor import IPAdapterMaskProcessor

    out = []
    for ref in req.ip_adapters:
        if ref.region_mask is None:
            out.append(None)
            continue
        img = imgs.open_image(ref.region_mask, engine.max_image_pixels).convert("RGB")
        m = IPAdapterMaskProcessor().preprocess(img.getchannel("R"), height=req.height,
                                                width=req.width)  # (1, 1, h, w)
        out.append(m.repeat(1, len(ref.images), 1, 1).to(engine.device, engine.dtype))
    return out


def _load(engine, pipe, folder, names: list[str]) -> None:
    """load_ip_adapter from the folder; its image encoder is loaded once and kept warm."""
    from transformers import CLIPImageProcessor

    key = (str(folder), engine.device, str(engine.dtype))
    with _lock:
        encoder = _encoders.get(key)
        if encoder is not None:
            _encoders.move_to_end(key)
    pipe.register_modules(image_encoder=encoder)
    size = None
    try:
        pipe.load_ip_adapter(str(folder), subfolder=[""] * len(names), weight_name=names,
                             image_encoder_folder="image_encoder" if encoder is None else None,
                             local_files_only=True)
    except Exception as e:
        raise GenerationFailed(f"could not load IP-Adapter {names} from {folder}: {e}") from e
    if encoder is None:
        encoder = pipe.image_encoder.to(engine.device, engine.dtype).eval()
        with _lock:
            _encoders[key] = encoder
            while len(_encoders) > MAX_ENCODERS:
                _encoders.popitem(last=False)
    # The references are cut to the encoder's own input size (not the safety checker's).
    size = encoder.config.image_size
    pipe.register_modules(feature_extractor=CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}))
