"""Prompt language detection and splitting (shared/translation.py): pure, no models."""

from __future__ import annotations

from shared import translation


def test_detect_by_script():
    assert translation.detect("一只猫坐在窗台上") == "zh"
    assert translation.detect("猫がいる") == "ja"  # kana beside Han: Japanese
    assert translation.detect("고양이") == "ko"
    assert translation.detect("кошка на окне") == "ru"
    assert translation.detect("un château près de la mer") == "mul"
    assert translation.detect("a cat, (masterpiece:1.2), <lora:x:0.5>") is None
    assert translation.detect("") is None


def test_split_keeps_separators():
    text = "一只猫, highly detailed，红色的车\n(best:1.2)"
    parts = translation.split(text)
    assert "".join(parts) == text
    assert parts[0::2] == ["一只猫", " highly detailed", "红色的车", "(best:1.2)"]


def test_installed_folders(tmp_path):
    for name in ("zh-en", "opus-mt-ja-en", "mul-en", "en-de", "empty-en"):
        (tmp_path / name).mkdir()
    for name in ("zh-en", "opus-mt-ja-en", "mul-en", "en-de"):
        (tmp_path / name / "config.json").write_text("{}")
    assert translation.installed(tmp_path) == {
        "ja": tmp_path / "opus-mt-ja-en", "mul": tmp_path / "mul-en", "zh": tmp_path / "zh-en"}
    assert translation.installed(tmp_path / "nope") == {}


def test_spans_keep_prompt_syntax():
    part = "(一只猫:1.2) <lora:小猫:0.5> 红色的 车"
    got = [part[a:b] for a, b in translation.spans(part, "zh")]
    assert got == ["一只猫", "小猫", "红色的 车"]
    assert translation.spans(" un château près de la mer ", "mul") == [(1, 26)]
    assert translation.spans("“”", "zh") == []  # punctuation alone is not translated
