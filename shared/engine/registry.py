"""The model registry: finds models by name in the models directory (and LoRAs, embeddings).

Layout (the same locally and in the Modal weights volume):
    <models_dir>/<name>/model_index.json       a diffusers folder
    <models_dir>/<name>.safetensors            a single-file checkpoint
    <models_dir>/Lora/<name>.safetensors       LoRA weights
    <models_dir>/embeddings/<name>.safetensors textual-inversion embeddings (.pt/.bin too)
    <models_dir>/configs/<owner>/<repo>/       a hub repo's configs (and the components a
                                               single file lacks) for single-file loading
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from shared.engine import families
from shared.errors import ModelNotFound

LORA_DIR = "Lora"
CONFIGS_DIR = "configs"  # <models_dir>/configs/<owner>/<repo>/: hub configs for single files
EMBEDDINGS_DIR = "embeddings"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")


@dataclass(frozen=True)
class ModelInfo:
    """One model on disk."""

    name: str
    path: Path
    single_file: bool
    hash: str  # A1111-style short hash (10 hex digits)
    family: str = "sd1"  # shared.engine.families key, detected from the files
    distilled: str = ""  # step-distilled per its own config: "lcm", "tcd", "turbo", "schnell"...
    config_repo: str = ""  # single files: the hub repo whose configs they load with

    @property
    def title(self) -> str:
        """A1111's checkpoint title: "name [hash]"."""
        return f"{self.name} [{self.hash}]"


def _short_hash(path: Path) -> str:
    """A cheap, stable identity: sha256 of the configs (folders) or of the first MiB (files)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*.json")):
            h.update(p.relative_to(path).as_posix().encode())
            h.update(p.read_bytes())
    else:
        with path.open("rb") as f:
            h.update(f.read(1 << 20))
        h.update(str(path.stat().st_size).encode())
    return h.hexdigest()[:10]


class ModelRegistry:
    """Lists models under a directory and resolves names, titles and hashes to ModelInfo."""

    def __init__(self, models_dir: Path, default: str | None = None):
        self.root = Path(models_dir)
        self.default_name = default
        self._lock = threading.Lock()
        self._models: dict[str, ModelInfo] | None = None
        self._hashes: dict[tuple, str] = {}  # (path, mtime, size) -> hash: rescans rehash nothing old
        self._families: dict[tuple, families.Detected] = {}  # the same key -> detected family

    def _hash(self, path: Path) -> str:
        st = (path / "model_index.json" if path.is_dir() else path).stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._hashes:
            self._hashes[key] = _short_hash(path)
        return self._hashes[key]

    def _info(self, name: str, path: Path, single_file: bool) -> ModelInfo:
        st = (path / "model_index.json" if path.is_dir() else path).stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._families:
            self._families[key] = families.detect(path)
        found = self._families[key]
        return ModelInfo(name, path, single_file, self._hash(path), found.family, found.distilled,
                         found.config_repo)

    def refresh(self) -> list[ModelInfo]:
        """Rescan the directory."""
        found: dict[str, ModelInfo] = {}
        if self.root.is_dir():
            for p in sorted(self.root.iterdir()):
                if p.is_dir() and (p / "model_index.json").is_file():
                    found[p.name] = self._info(p.name, p, False)
                elif p.is_file() and p.suffix in (".safetensors", ".ckpt"):
                    found[p.stem] = self._info(p.stem, p, True)
        with self._lock:
            self._models = found
        return list(found.values())

    def models(self) -> list[ModelInfo]:
        """All models (scanning once on first use)."""
        if self._models is None:
            self.refresh()
        return list(self._models.values())

    def default(self) -> ModelInfo:
        """The configured default model, else the first one found."""
        models = self.models()
        if self.default_name:
            return self.resolve(self.default_name)
        if not models:
            raise ModelNotFound(f"no models found in {self.root}", param="model")
        return models[0]

    def resolve(self, name: str | None) -> ModelInfo:
        """Find a model by name, A1111 title, file name or hash; None means the default."""
        if not name:
            return self.default()
        want = name.strip()
        for _ in range(2):  # a miss rescans once, so newly added weights are found
            for m in self.models():
                if want in (m.name, m.title, m.path.name, m.hash) or want.split(" [")[0] == m.name:
                    return m
            self.refresh()
        names = ", ".join(m.name for m in self.models()) or "none"
        raise ModelNotFound(f"Model not found: {name!r}; available: {names}", param="model")

    def native_size(self, info: ModelInfo) -> int:
        """The model's native image side in pixels: a folder's own config (UNet or transformer
        sample size x VAE factor), else its family's (512 SD1.5, 768 SD2-v, 1024 SDXL/SD3/Flux)."""
        default = families.FAMILIES.get(info.family, families.FAMILIES["sd1"]).native
        if info.single_file:
            return default
        try:
            vae = json.loads((info.path / "vae" / "config.json").read_text())
            factor = 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
            for part in ("unet", "transformer"):
                cfg_path = info.path / part / "config.json"
                if cfg_path.is_file():
                    size = json.loads(cfg_path.read_text()).get("sample_size")
                    # Flux's transformer has no sample size: the pipeline's default (128) holds
                    return int(size) * factor if size else default
            return default
        except (OSError, ValueError, TypeError):
            return default

    def extra_files(self, sub: str, suffixes=(".safetensors",)) -> dict[str, Path]:
        """Files in a sub-folder (LoRAs, embeddings) by stem."""
        d = self.root / sub
        if not d.is_dir():
            return {}
        return {p.stem: p for p in sorted(d.iterdir()) if p.suffix in suffixes}
