"""The NSFW checker: diffusers' StableDiffusionSafetyChecker on finished images, and replacements.

A flagged image is replaced before it is encoded, so its pixels never reach storage, a job store
or a response. The checker comes from the model's own `safety_checker` folder, else from a shared
`<models_dir>/safety_checker` folder (CompVis/stable-diffusion-safety-checker laid out with
`save_pretrained`, plus its `preprocessor_config.json`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from shared.generation import NsfwAction

log = logging.getLogger(__name__)

SHARED_DIR = "safety_checker"
LABEL = "Sensitive content"
PIXEL_BLOCK = 16  # pixelate: side of one block, in output pixels at most


@dataclass
class Checker:
    """A safety checker model and the image processor that feeds it."""

    model: object
    processor: object

    def flags(self, images: list[Image.Image], device: str) -> list[bool]:
        """One flag per image: does the checker see an NSFW concept in it."""
        import numpy as np
        import torch

        param = next(self.model.parameters())
        if param.device.type != torch.device(device).type:
            self.model.to(device)
        clip = self.processor([i.convert("RGB") for i in images], return_tensors="pt")
        pixels = clip.pixel_values.to(device, param.dtype)
        # The checker blacks out flagged arrays in place: hand it a scratch copy, keep the flags.
        scratch = np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) / 255 for i in images])
        _, flags = self.model(clip_input=pixels, images=scratch)
        return [bool(f) for f in flags]


def load(path: Path) -> Checker | None:
    """A checker saved in a folder (model weights + preprocessor config), or None if absent."""
    if not (Path(path) / "config.json").is_file():
        return None
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPImageProcessor

    model = StableDiffusionSafetyChecker.from_pretrained(str(path))
    model.eval()
    return Checker(model, CLIPImageProcessor.from_pretrained(str(path)))


class SharedChecker:
    """The models folder's shared checker, loaded once on first use."""

    def __init__(self, models_dir: Path):
        self.path = Path(models_dir) / SHARED_DIR
        self._lock = threading.Lock()
        self._checker: Checker | None = None
        self._tried = False

    def get(self) -> Checker | None:
        with self._lock:
            if not self._tried:
                self._checker = load(self.path)
                self._tried = True
            return self._checker


def replace(img: Image.Image, action: NsfwAction) -> Image.Image:
    """The image shown instead of a flagged one; built from the original only for blur/pixelate."""
    w, h = img.size
    if action is NsfwAction.blur:
        return img.convert("RGB").filter(ImageFilter.GaussianBlur(radius=max(w, h) / 12))
    if action is NsfwAction.pixelate:
        small = (max(1, w // PIXEL_BLOCK), max(1, h // PIXEL_BLOCK))
        return img.convert("RGB").resize(small, Image.BILINEAR).resize((w, h), Image.NEAREST)
    out = Image.new("RGB", (w, h))
    if action is NsfwAction.sensitive_content_text:
        draw = ImageDraw.Draw(out)
        box = draw.textbbox((0, 0), LABEL)
        draw.text(((w - box[2]) / 2, (h - box[3]) / 2), LABEL, fill=(255, 255, 255))
    return out


def screen(checker: Checker, images: list[Image.Image], action: NsfwAction,
           device: str) -> tuple[list[Image.Image], list[bool]]:
    """Check every image; flagged ones come back replaced per `action`."""
    flags = checker.flags(images, device)
    if any(flags):
        log.info("safety checker flagged %d of %d images", sum(flags), len(flags))
    return [replace(i, action) if f else i for i, f in zip(images, flags)], flags
