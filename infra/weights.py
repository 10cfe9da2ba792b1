"""Filling a models folder (on Modal: the weights volume) from Hugging Face repos and file URLs.

The layout is the model registry's (shared/engine/registry.py):

    --model [NAME=]OWNER/REPO[@REV]   <root>/<NAME>/              a diffusers repo
    --checkpoint [NAME=]URL           <root>/<NAME>.safetensors   a one-file checkpoint
    --lora [NAME=]URL                 <root>/Lora/<NAME>.safetensors
    --embedding [NAME=]URL            <root>/embeddings/<NAME>.safetensors
    --repo FOLDER=OWNER/REPO[@REV]    <root>/<FOLDER>/            a plain (non-diffusers) repo:
                                      translator/opus-mt-zh-en, BLIP, CLIP-interrogator,
                                      deepdanbooru (a WD14 ONNX tagger)
    --configs FAMILY|OWNER/REPO       <root>/configs/OWNER/REPO/  what single-file checkpoints
                                      of a family load with (shared.engine.families
                                      CONFIG_REPOS): configs, tokenizers and every component's
                                      weights except the UNet / transformer (which the file
                                      holds); gated repos (FLUX.1-dev, SD3) need the HF token

The same filler runs locally as `sdgate pull ...` into SDGATE_MODELS_DIR.

A URL is http(s)://... or hf://OWNER/REPO/PATH[@REV]. Every item downloads into <root>/.staging
and is renamed into place once complete, so a model is either whole or absent, and an item already
in place is skipped: re-running the same command only fetches what is missing. Files must be
safetensors: a pickled .ckpt/.pt/.bin can run code when it is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from shared.engine.families import CONFIG_REPOS, SINGLE_FILE_TYPES
from shared.engine.registry import CONFIGS_DIR, EMBEDDINGS_DIR, LORA_DIR

STAGING = ".staging"
HF_CACHE = ".hf-cache"  # the GPU image's HF_HUB_CACHE, read offline
# diffusers' from_single_file reads the configs of its family's reference repo
# (DIFFUSERS_DEFAULT_PIPELINE_PATHS in diffusers/loaders/single_file_utils.py). The GPU containers
# run offline, so filling a one-file checkpoint also caches those configs (a few hundred KB).
BASE_CONFIG_REPOS = (
    "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "stabilityai/stable-diffusion-xl-base-1.0",
    "stabilityai/stable-diffusion-xl-refiner-1.0",
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
)
BASE_CONFIG_PATTERNS = ["**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model"]
FOLDERS = {"model": "", "checkpoint": "", "lora": LORA_DIR, "embedding": EMBEDDINGS_DIR}
DENOISERS = ("unet", "transformer")  # what a single file holds: its configs only are fetched
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NAMED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)=(.+)$")
# Weight files that are variants or EMA copies of the plain ones (from_pretrained skips them).
_VARIANT = re.compile(r"\.(fp16|bf16|fp32|non_ema|ema)[.-]")
_CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, CLIP vocab/merges, sentencepiece
_PICKLES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


class WeightsError(Exception):
    """An item that cannot be fetched as asked."""


@dataclass(frozen=True)
class Item:
    """One thing to fetch: its kind (a FOLDERS key), where from, and its name in the registry."""

    kind: str
    source: str
    name: str

    def target(self, root: Path) -> Path:
        if self.kind == "configs":
            return root / CONFIGS_DIR / self.name
        if self.kind in ("model", "repo"):
            return root / self.name
        return root / FOLDERS[self.kind] / f"{self.name}.safetensors"

    def complete(self, root: Path) -> bool:
        """In place, as the registry would find it."""
        target = self.target(root)
        if self.kind == "repo":
            return (target / "config.json").is_file() or (target / "model.onnx").is_file()
        if self.kind in ("model", "configs"):
            return (target / "model_index.json").is_file()
        return target.is_file()


def config_items(spec: str) -> list[Item]:
    """`--configs FAMILY` (every base repo of that family) or `--configs OWNER/REPO`."""
    if spec in CONFIG_REPOS.values():
        return [Item("configs", spec, spec)]
    repos = sorted({repo for kind, repo in CONFIG_REPOS.items()
                    if SINGLE_FILE_TYPES.get(kind) == spec})
    if not repos:
        families = sorted({SINGLE_FILE_TYPES[k] for k in CONFIG_REPOS})
        raise WeightsError(f"--configs wants a family ({', '.join(families)}) or one of "
                           f"{', '.join(sorted(CONFIG_REPOS.values()))}, got {spec!r}")
    return [Item("configs", repo, repo) for repo in repos]


def make_item(kind: str, spec: str) -> Item:
    """An Item from `[NAME=]SOURCE`; the name defaults to the repo's or the file's own."""
    named = _NAMED.match(spec)
    name, source = named.groups() if named else (None, spec)
    if kind == "repo":  # FOLDER is required and may have one level: translator/opus-mt-zh-en
        folder = re.match(r"^([^=]+)=(.+)$", spec)
        if folder is None or not all(_NAME.match(p) for p in folder.group(1).split("/")) \
                or folder.group(1).count("/") > 1:
            raise WeightsError(f"--repo wants FOLDER=OWNER/REPO[@REVISION], got {spec!r}")
        name, source = folder.groups()
        if not re.match(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$", source):
            raise WeightsError(f"--repo wants FOLDER=OWNER/REPO[@REVISION], got {spec!r}")
        return Item(kind, source, name)
    if kind == "model":
        if not re.match(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$", source):
            raise WeightsError(f"--model wants OWNER/REPO[@REVISION], got {source!r}")
        name = name or source.split("@")[0].split("/")[1]
    else:
        path = urlsplit(source).path
        if urlsplit(source).scheme not in ("http", "https", "hf"):
            raise WeightsError(f"--{kind} wants an http(s):// or hf:// URL, got {source!r}")
        if path.lower().endswith(_PICKLES):
            raise WeightsError(f"--{kind} {source}: pickled weights can run code when loaded; "
                               "use a .safetensors file")
        stem = Path(path.split("@")[0]).name
        name = name or (stem[: -len(".safetensors")] if stem.endswith(".safetensors") else stem)
    if not name or not _NAME.match(name):
        raise WeightsError(f"bad name {name!r} for {source}: give one as NAME={source}")
    return Item(kind, source, name)


def parse(argv: Iterable[str], prog: str = "modal run -m functions.weights"
          ) -> tuple[list[Item], bool]:
    """Items and --force from command-line arguments."""
    parser = argparse.ArgumentParser(prog=prog, description="Fill the sdgate weights volume "
                                     "(or, with `sdgate pull`, the local models folder).")
    parser.add_argument("--model", action="append", default=[], metavar="[NAME=]OWNER/REPO[@REV]")
    for kind in ("checkpoint", "lora", "embedding"):
        parser.add_argument(f"--{kind}", action="append", default=[], metavar="[NAME=]URL")
    parser.add_argument("--repo", action="append", default=[],
                        metavar="FOLDER=OWNER/REPO[@REV]")
    parser.add_argument("--configs", action="append", default=[],
                        metavar="FAMILY|OWNER/REPO")
    parser.add_argument("--force", action="store_true", help="fetch again what is already there")
    args = parser.parse_args(list(argv))
    try:
        items = [make_item(kind, spec) for kind in (*FOLDERS, "repo")
                 for spec in getattr(args, kind)]
        items += [item for spec in args.configs for item in config_items(spec)]
    except WeightsError as e:
        parser.error(str(e))
    if not items:
        parser.error("nothing to fetch: give --model, --checkpoint, --lora, --embedding, "
                     "--repo or --configs")
    return items, args.force


def select_files(files: Iterable[str]) -> list[str]:
    """What from_pretrained reads from a diffusers repo: model_index.json, and in each component
    folder its configs, tokenizer files and plain weights (safetensors, else .bin), no variants."""
    folders: dict[str, list[str]] = defaultdict(list)
    for f in files:
        folder, _, base = f.rpartition("/")
        folders[folder].append(base)
    chosen = ["model_index.json"] if "model_index.json" in folders.get("", []) else []
    for folder, bases in folders.items():
        if not folder or "/" in folder:
            continue  # the root's other files (single-file checkpoints, images), deeper folders
        plain = [b for b in bases if not b.startswith(".") and not _VARIANT.search(b)]
        weights = ([b for b in plain if b.endswith(".safetensors")]
                   or [b for b in plain if b.endswith(".bin")])
        chosen += [f"{folder}/{b}" for b in plain if b.endswith(_CONFIG_SUFFIXES)]
        chosen += [f"{folder}/{b}" for b in weights]
    return sorted(chosen)


def select_configs(files: Iterable[str]) -> list[str]:
    """A base repo for single files: what from_pretrained reads, less the UNet / transformer
    weights (the single file holds them; their configs stay)."""
    return [f for f in select_files(files)
            if not (f.split("/")[0] in DENOISERS and not f.endswith(_CONFIG_SUFFIXES))]


def select_plain(files: Iterable[str]) -> list[str]:
    """What transformers' from_pretrained (or onnxruntime) reads from a plain repo's top level:
    configs, tokenizer and sentencepiece files, tag lists, and safetensors weights (else an
    .onnx graph); never pickled weights (.bin, .pt, .h5 and the like)."""
    top = sorted(f for f in files if "/" not in f)
    keep = [f for f in top if f.endswith((*_CONFIG_SUFFIXES, ".spm", ".csv"))
            and not f.startswith(".")]
    weights = [f for f in top if f.endswith(".safetensors") and not _VARIANT.search(f)]
    weights = weights or [f for f in top if f.endswith(".onnx")]
    if not weights:
        raise WeightsError("no safetensors or ONNX weights at the top of the repo (pickled "
                           "weights are refused); pick a revision that has them, e.g. "
                           "@refs/pr/N of a safetensors conversion")
    return keep + weights


def check_safetensors(path: Path) -> None:
    """Refuse a file that is not safetensors (an HTML login page, a pickle)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
            if not 2 <= n <= min(size - 8, 100 << 20):
                raise ValueError("bad header length")
            if not isinstance(json.loads(f.read(n)), dict):
                raise ValueError("header is not an object")
        except ValueError as e:
            raise WeightsError(f"{path.name} is not a safetensors file ({e})") from e


def _redact(url: str) -> str:
    """A URL without its query string (download tokens live there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")


def download_url(url: str, dest: Path, log: Callable[[str], None]) -> None:
    """Stream an http(s) URL to `dest`, logging progress every tenth."""
    import httpx

    timeout = httpx.Timeout(30.0, read=300.0)
    with httpx.stream("GET", url, follow_redirects=True, timeout=timeout) as r:
        if r.status_code != 200:
            raise WeightsError(f"GET {_redact(url)} answered HTTP {r.status_code}")
        total = int(r.headers.get("content-length") or 0)
        done, report = 0, 0.1
        with dest.open("wb") as f:
            for chunk in r.iter_bytes(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if total and done / total >= report:
                    log(f"  {done / 2**20:.1f} / {total / 2**20:.1f} MiB ({done * 100 // total}%)")
                    report = done / total + 0.1
    if total and done != total:
        raise WeightsError(f"GET {_redact(url)} ended after {done} of {total} bytes")


def fetch_file(item: Item, dest: Path, log: Callable[[str], None]) -> None:
    """One file from an http(s) URL or from hf://OWNER/REPO/PATH[@REV]."""
    if item.source.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        spec, _, revision = item.source[len("hf://"):].partition("@")
        owner, repo, path = spec.split("/", 2)
        got = hf_hub_download(f"{owner}/{repo}", path, revision=revision or None,
                              local_dir=dest.parent / f"{dest.name}.hf")
        shutil.move(got, dest)
        shutil.rmtree(dest.parent / f"{dest.name}.hf", ignore_errors=True)
    else:
        download_url(item.source, dest, log)
    check_safetensors(dest)


def fetch_repo(item: Item, dest: Path, log: Callable[[str], None]) -> None:
    """A diffusers repo's files that from_pretrained reads (HF resumes partial downloads)."""
    from huggingface_hub import HfApi, snapshot_download

    repo, _, revision = item.source.partition("@")
    listing = HfApi().list_repo_files(repo, revision=revision or None)
    wanted = {"repo": select_plain, "configs": select_configs}.get(
        item.kind, select_files)(listing)
    if item.kind in ("model", "configs") and "model_index.json" not in wanted:
        raise WeightsError(f"{repo} has no model_index.json, so it is not a diffusers repo; "
                           f"for a one-file checkpoint use --checkpoint hf://{repo}/FILE")
    log(f"  {len(wanted)} files from {repo}")
    snapshot_download(repo, revision=revision or None, local_dir=dest, allow_patterns=wanted)
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # HF's resume bookkeeping


def cache_base_configs(root: Path, log: Callable[[str], None]) -> None:
    """The reference configs one-file checkpoints load with; a missing family only warns."""
    from huggingface_hub import snapshot_download

    for repo in BASE_CONFIG_REPOS:
        try:
            snapshot_download(repo, cache_dir=root / HF_CACHE,
                              allow_patterns=BASE_CONFIG_PATTERNS)
        except Exception as e:
            log(f"warning: configs of {repo} not cached ({type(e).__name__}); one-file "
                "checkpoints of that family will not load")


def fill(root: Path, items: Iterable[Item], force: bool = False,
         log: Callable[[str], None] = print,
         commit: Callable[[], None] = lambda: None) -> list[str]:
    """Fetch every item not yet in place; one line per item. Raises if any item failed."""
    root, items = Path(root), list(items)
    lines, failed = [], []
    if any(item.kind == "checkpoint" for item in items):
        cache_base_configs(root, log)
    for item in items:
        label = f"{item.kind} {item.name}"
        target = item.target(root)
        if item.complete(root) and not force:
            lines.append(f"skip {label}: already in {target}")
            log(lines[-1])
            continue
        log(f"fetch {label} from {_redact(item.source)}")
        staged = root / STAGING / f"{item.kind}-{item.name.replace('/', '--')}"
        staged.parent.mkdir(parents=True, exist_ok=True)
        try:
            if item.kind in ("model", "repo", "configs"):
                fetch_repo(item, staged, log)
            else:
                fetch_file(item, staged, log)
        except Exception as e:  # one bad item must not stop the others
            failed.append(f"failed {label}: {e}")
            log(failed[-1])
            if item.kind not in ("model", "repo", "configs"):  # a repo keeps its partial files
                staged.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staged, target)
        commit()  # each finished item is saved, even if a later one fails
        lines.append(f"done {label}: {target}")
        log(lines[-1])
    if failed:
        raise WeightsError("; ".join(failed))
    return lines
