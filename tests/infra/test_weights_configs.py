"""`sdgate pull --configs FAMILY` (and the Modal filler's --configs): a family's base repo lands in
<models_dir>/configs/<repo> without its transformer weights, from a fake hub folder (no network),
and a transformer-only single file then loads and draws from it."""

from __future__ import annotations

import fnmatch
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from infra import weights
from shared.cli import main
from shared.engine import families


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """huggingface_hub's listing and snapshot download over a local folder <hub>/<owner>/<repo>."""
    import huggingface_hub

    hub = tmp_path / "hub"
    asked = []

    class Api:
        def list_repo_files(self, repo, revision=None):
            root = hub / repo
            if not root.is_dir():
                raise FileNotFoundError(f"404 {repo}")
            return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def snapshot(repo, revision=None, local_dir=None, allow_patterns=None, **kw):
        asked.append((repo, sorted(allow_patterns)))
        for name in Api().list_repo_files(repo):
            if allow_patterns is None or any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                dest = local_dir / name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(hub / repo / name, dest)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    return hub, asked


def test_configs_items_by_family_or_repo():
    items, _ = weights.parse(["--configs", "flux-dev", "--configs", "sd3"])
    assert [i.source for i in items] == [
        "black-forest-labs/FLUX.1-dev", "stabilityai/stable-diffusion-3-medium-diffusers",
        "stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-medium"]
    assert items[0].target(weights.Path("/m")).as_posix() == \
        "/m/configs/black-forest-labs/FLUX.1-dev"
    with pytest.raises(SystemExit):
        weights.parse(["--configs", "not-a-family"])


def test_select_configs_drops_only_the_denoiser_weights():
    files = ["model_index.json", "transformer/config.json",
             "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
             "transformer/diffusion_pytorch_model.safetensors.index.json",
             "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
             "text_encoder_2/model-00001-of-00002.safetensors", "text_encoder_2/config.json",
             "tokenizer_2/spiece.model", "flux1-dev.safetensors", "ae.safetensors"]
    assert weights.select_configs(files) == [
        "model_index.json", "text_encoder_2/config.json",
        "text_encoder_2/model-00001-of-00002.safetensors", "tokenizer_2/spiece.model",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors.index.json", "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors"]


def test_sdgate_pull_configs_then_a_single_file_draws(tmp_path, fake_hub, monkeypatch, capsys):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry
    from shared.engine.tiny_families import write_single_file
    from shared.generation import GenerationRequest

    hub, asked = fake_hub
    models = tmp_path / "models"
    # the single file, and (in the hub) its base repo with every weight, transformer included
    write_single_file("flux-schnell", models, "fast")
    repo = families.CONFIG_REPOS["flux-schnell"]
    shutil.move(str(models / "configs" / repo), str(hub / "tmp"))
    from shared.engine.tiny_families import build_flux

    build_flux(dev=False).save_pretrained(hub / repo, safe_serialization=True)
    shutil.rmtree(hub / "tmp")
    shutil.rmtree(models / "configs")

    monkeypatch.setenv("SDGATE_MODELS_DIR", str(models))
    main(["pull", "--configs", "flux-schnell"])
    assert "done configs black-forest-labs/FLUX.1-schnell" in capsys.readouterr().out
    filled = models / "configs" / repo
    assert (filled / "transformer" / "config.json").is_file()
    assert not list((filled / "transformer").glob("*.safetensors"))  # the file holds it
    assert list((filled / "vae").glob("*.safetensors"))
    assert not (models / ".staging" / f"configs-{repo.replace('/', '--')}").exists()

    reg = ModelRegistry(models)
    assert [m.name for m in reg.models()] == ["fast"]  # configs/ is not a model
    result = Engine(reg, device="cpu", max_loaded=1).generate(GenerationRequest(
        model="fast", prompt="a red cat", width=64, height=64, seed=2))
    a = np.asarray(Image.open(io.BytesIO(result.images[0].data)), dtype=np.float32)
    assert np.isfinite(a).all() and a.std() > 1 and result.steps == 4  # schnell's defaults

    main(["pull", "--configs", "flux-schnell"])  # a re-run fetches nothing
    assert "skip configs" in capsys.readouterr().out and len(asked) == 1


def test_pull_reports_a_missing_repo(tmp_path, fake_hub, monkeypatch):
    monkeypatch.setenv("SDGATE_MODELS_DIR", str(tmp_path / "models"))
    with pytest.raises(SystemExit, match="failed configs"):
        main(["pull", "--configs", "black-forest-labs/FLUX.1-dev"])
