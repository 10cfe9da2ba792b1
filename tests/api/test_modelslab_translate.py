"""ModelsLab `multi_lingual: "yes"` over HTTP: the tiny MarianMT translator's output is the prompt
the engine drew with (read back from the PNG's infotext), on both backends."""

from __future__ import annotations

import pytest

from shared.engine import translator
from tests.http_helpers import SMALL, fetch_png


@pytest.fixture
def tr(client_on, translator_models):
    return client_on(translator_models)


def test_multi_lingual_prompt_reaches_the_engine_translated(tr, translator_models):
    folder = translator_models / "translator" / "zh-en"
    expected, expected_neg = translator.translate_parts(folder, ["一只猫坐在窗台上", "模糊"])
    body = {"key": "", "prompt": "一只猫坐在窗台上, best quality", "negative_prompt": "模糊",
            "multi_lingual": "yes", "seed": 7, **SMALL}
    out = tr.post("/api/v3/text2img", json=body).json()
    assert out["status"] == "success", out
    assert out["meta"]["prompt"] == f"{expected}, best quality"
    assert out["meta"]["negative_prompt"] == expected_neg
    info = fetch_png(tr, out["output"][0]).info["parameters"]
    assert info.startswith(f"{expected}, best quality\nNegative prompt: {expected_neg}\n")
    # the same seed without translation draws from the raw prompt: another picture
    raw = tr.post("/api/v3/text2img", json={**body, "multi_lingual": "no"}).json()
    assert fetch_png(tr, raw["output"][0]).info["parameters"].startswith("一只猫坐在窗台上")
    assert fetch_png(tr, raw["output"][0]).tobytes() != fetch_png(tr, out["output"][0]).tobytes()


def test_multi_lingual_without_a_translator_is_refused(client):
    out = client.post("/api/v3/text2img", json={"key": "", "prompt": "一只猫",
                                                "multi_lingual": "yes", **SMALL}).json()
    assert out["status"] == "error" and list(out["message"]) == ["multi_lingual"]
    assert "none is installed" in out["message"]["multi_lingual"][0]


def test_language_without_its_model_is_refused(tr):
    out = tr.post("/api/v3/text2img", json={"key": "", "prompt": "кошка на окне",
                                            "multi_lingual": "yes", **SMALL}).json()
    assert out["status"] == "error" and "opus-mt-ru-en" in out["message"]["multi_lingual"][0]
