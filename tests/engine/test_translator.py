"""The `translate` operation with a tiny random-weight MarianMT model in the real format."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shared.engine import ops, translator
from shared.engine.registry import ModelRegistry
from shared.errors import InvalidRequest, Unsupported
from shared.translation import TranslateRequest


def eng(root):
    return SimpleNamespace(registry=ModelRegistry(root), device="cpu", translator_dir=None)


def test_translates_only_the_non_english_parts(translator_models, monkeypatch):
    calls = []
    real = translator.translate_parts
    monkeypatch.setattr(translator, "translate_parts",
                        lambda folder, parts, device="cpu": calls.append((folder, parts)) or
                        real(folder, parts, device))
    out = ops.run(eng(translator_models), "translate", TranslateRequest(
        texts=["一只猫, highly detailed，红色的车", "", "plain english"]))
    folder = translator_models / "translator" / "zh-en"
    assert calls == [(folder, ["一只猫", "红色的车"])]  # one batch, the Chinese parts only
    first, second = real(folder, ["一只猫", "红色的车"])
    assert first and first != "一只猫"
    assert out.texts == [f"{first}, highly detailed，{second}", "", "plain english"]
    assert out.languages == ["zh"]
    # loaded by the real loader (MarianMTModel / MarianTokenizer.from_pretrained), kept warm
    tok, model = translator.load(folder)
    assert type(model).__name__ == "MarianMTModel" and type(tok).__name__ == "MarianTokenizer"
    # deterministic: the same prompt translates the same way
    again = ops.run(eng(translator_models), "translate", TranslateRequest(
        texts=["一只猫, highly detailed，红色的车"]))
    assert again.texts[0] == out.texts[0]


def test_weights_and_lora_tags_around_chinese_stay(translator_models):
    folder = translator_models / "translator" / "zh-en"
    (cat,) = translator.translate_parts(folder, ["一只猫"])
    out = ops.run(eng(translator_models), "translate", TranslateRequest(
        texts=["(一只猫:1.2), <lora:detail:0.6>"]))
    assert out.texts == [f"({cat}:1.2), <lora:detail:0.6>"]


def test_no_translator_or_no_language_model(tmp_path, translator_models):
    with pytest.raises(Unsupported, match="none is installed"):
        ops.run(eng(tmp_path), "translate", TranslateRequest(texts=["一只猫"]))
    with pytest.raises(InvalidRequest, match="opus-mt-ru-en"):
        ops.run(eng(translator_models), "translate", TranslateRequest(texts=["кошка"]))
    # English needs no model at all, accented Latin without a mul model stays as written
    out = ops.run(eng(translator_models), "translate", TranslateRequest(
        texts=["a cat", "un château"]))
    assert out.texts == ["a cat", "un château"] and out.languages == []


def test_translator_dir_setting(tmp_path, translator_models):
    e = SimpleNamespace(registry=ModelRegistry(tmp_path), device="cpu",
                        translator_dir=translator_models / "translator")
    out = ops.run(e, "translate", TranslateRequest(texts=["雪山"]))
    assert out.languages == ["zh"] and out.texts[0] != "雪山"
