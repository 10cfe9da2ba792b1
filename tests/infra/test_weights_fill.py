"""infra.weights: parsing, repo file selection, and filling a models folder over real HTTP."""

import functools
import http.server
import threading

import pytest
import torch
from safetensors.torch import save_file

from infra import weights
from infra.weights import Item, WeightsError
from shared.engine.registry import ModelRegistry


@pytest.fixture
def files_server(tmp_path):
    """A static HTTP server on 127.0.0.1 over a folder; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_parse_names_and_refusals():
    items, force = weights.parse(["--model", "stable-diffusion-v1-5/stable-diffusion-v1-5@main",
                                  "--lora", "detail=https://x.test/dl?id=3&token=s",
                                  "--embedding", "hf://owner/repo/neg/bad-hands.safetensors",
                                  "--force"])
    assert force is True
    assert items == [Item("model", "stable-diffusion-v1-5/stable-diffusion-v1-5@main",
                          "stable-diffusion-v1-5"),
                     Item("lora", "https://x.test/dl?id=3&token=s", "detail"),
                     Item("embedding", "hf://owner/repo/neg/bad-hands.safetensors", "bad-hands")]
    for bad in (["--checkpoint", "https://x.test/model.ckpt"], ["--model", "not a repo"],
                ["--lora", "ftp://x.test/a.safetensors"], []):
        with pytest.raises(SystemExit):
            weights.parse(bad)


def test_select_files_takes_what_from_pretrained_reads():
    listing = [
        "README.md", "model_index.json", "v1-5-pruned.ckpt", "v1-5-pruned.safetensors",
        "scheduler/scheduler_config.json", "feature_extractor/preprocessor_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "text_encoder/model.fp16.safetensors", "text_encoder/pytorch_model.bin",
        "tokenizer/merges.txt", "tokenizer/vocab.json", "tokenizer/tokenizer_config.json",
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.non_ema.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.bin",
        "vae/config.json", "vae/diffusion_pytorch_model.bin", "vae/flax_model.msgpack",
        "safety_checker/.gitattributes", "images/sample/a.png",
    ]
    assert weights.select_files(listing) == [
        "feature_extractor/preprocessor_config.json", "model_index.json",
        "scheduler/scheduler_config.json", "text_encoder/config.json",
        "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.bin",  # no safetensors: .bin is all
    ]


def test_fill_places_files_where_the_registry_looks_and_skips_on_rerun(tmp_path, files_server):
    served, base = files_server
    save_file({"w": torch.zeros(4)}, served / "style.safetensors")
    save_file({"emb": torch.zeros(2, 8)}, served / "neg.safetensors")
    save_file({"x": torch.zeros(1)}, served / "ckpt.safetensors")
    root = tmp_path / "models"
    items = [Item("lora", f"{base}/style.safetensors", "style"),
             Item("embedding", f"{base}/neg.safetensors", "neg"),
             Item("checkpoint", f"{base}/ckpt.safetensors", "mymodel")]
    commits, logged = [], []
    lines = weights.fill(root, items, log=logged.append, commit=lambda: commits.append(1))
    assert [line.split()[0] for line in lines] == ["done"] * 3 and len(commits) == 3
    # The checkpoint's family configs come from the Hub, which this machine cannot reach: a
    # warning, not a failure (on Modal they land in <root>/.hf-cache).
    assert any("configs of stable-diffusion-v1-5/stable-diffusion-v1-5 not cached" in line
               for line in logged)
    registry = ModelRegistry(root)
    assert list(registry.extra_files("Lora")) == ["style"]
    assert list(registry.extra_files("embeddings")) == ["neg"]
    assert [m.name for m in registry.models()] == ["mymodel"]
    (served / "style.safetensors").unlink()  # a re-run must not even ask for it
    again = weights.fill(root, items, log=lambda line: None)
    assert [line.split()[0] for line in again] == ["skip"] * 3


def test_a_file_that_is_not_safetensors_is_refused_and_nothing_is_placed(tmp_path, files_server):
    served, base = files_server
    (served / "login.html").write_text("<html>please sign in</html>")
    save_file({"w": torch.zeros(4)}, served / "good.safetensors")
    root = tmp_path / "models"
    items = [Item("lora", f"{base}/login.html", "bad"), Item("lora", f"{base}/good.safetensors",
                                                            "good")]
    with pytest.raises(WeightsError, match="bad.*not a safetensors file"):
        weights.fill(root, items, log=lambda line: None)
    assert sorted(p.name for p in (root / "Lora").iterdir()) == ["good.safetensors"]
    assert not any((root / ".staging").iterdir())


def test_http_errors_are_reported(tmp_path, files_server):
    _, base = files_server
    with pytest.raises(WeightsError, match="HTTP 404"):
        weights.fill(tmp_path, [Item("lora", f"{base}/missing.safetensors", "m")],
                     log=lambda line: None)


def test_repo_items_for_translators_interrogators_and_taggers():
    items, _ = weights.parse(["--repo", "translator/opus-mt-zh-en=Helsinki-NLP/opus-mt-zh-en",
                              "--repo", "BLIP=Salesforce/blip-image-captioning-base@main",
                              "--repo", "deepdanbooru=SmilingWolf/wd-v1-4-vit-tagger-v2"])
    assert items == [Item("repo", "Helsinki-NLP/opus-mt-zh-en", "translator/opus-mt-zh-en"),
                     Item("repo", "Salesforce/blip-image-captioning-base@main", "BLIP"),
                     Item("repo", "SmilingWolf/wd-v1-4-vit-tagger-v2", "deepdanbooru")]
    for bad in (["--repo", "Helsinki-NLP/opus-mt-zh-en"], ["--repo", "a/b/c=x/y"],
                ["--repo", "BLIP=not a repo"]):
        with pytest.raises(SystemExit):
            weights.parse(bad)


def test_select_plain_takes_configs_tokenizers_and_safe_weights():
    marian = ["README.md", ".gitattributes", "config.json", "generation_config.json",
              "pytorch_model.bin", "tf_model.h5", "rust_model.ot", "model.safetensors",
              "source.spm", "target.spm", "vocab.json", "tokenizer_config.json", "metadata.json"]
    assert weights.select_plain(marian) == [
        "config.json", "generation_config.json", "metadata.json", "source.spm", "target.spm",
        "tokenizer_config.json", "vocab.json", "model.safetensors"]
    tagger = ["README.md", "model.onnx", "selected_tags.csv", "keras_metadata.pb",
              "variables/variables.index"]
    assert weights.select_plain(tagger) == ["selected_tags.csv", "model.onnx"]
    with pytest.raises(WeightsError, match="pickled"):
        weights.select_plain(["config.json", "pytorch_model.bin"])


def test_repo_item_is_complete_once_its_config_is_in_place(tmp_path):
    item = Item("repo", "Helsinki-NLP/opus-mt-zh-en", "translator/opus-mt-zh-en")
    assert item.target(tmp_path) == tmp_path / "translator" / "opus-mt-zh-en"
    assert not item.complete(tmp_path)
    (tmp_path / "translator" / "opus-mt-zh-en").mkdir(parents=True)
    (tmp_path / "translator" / "opus-mt-zh-en" / "config.json").write_text("{}")
    assert item.complete(tmp_path)
    from shared import translation

    assert translation.installed(tmp_path / "translator") == {
        "zh": tmp_path / "translator" / "opus-mt-zh-en"}  # where the translate op looks
