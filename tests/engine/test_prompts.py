"""The engine's A1111 prompt layer: parsing and chunking (pure), and encoding on the tiny model."""

from __future__ import annotations

import pytest

from shared.engine import prompt_schedule, prompts
from shared.engine.prompts import chunk_tokens, extract_networks, parse_attention
from shared.errors import InvalidRequest, Unsupported


# -- parsing (pure) ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, runs", [
    ("a cat", [("a cat", 1.0)]),
    ("(cat)", [("cat", 1.1)]),
    ("((cat))", [("cat", pytest.approx(1.21))]),
    ("(cat:1.3)", [("cat", 1.3)]),
    ("( cat : 0.5 )", [(" cat ", 0.5)]),
    ("[cat]", [("cat", pytest.approx(1 / 1.1))]),
    ("[[cat]]", [("cat", pytest.approx(1 / 1.21))]),
    (r"\(cat\)", [("(cat)", 1.0)]),
    (r"a \[b\] \\ c", [(r"a [b] \ c", 1.0)]),
    ("(unclosed", [("unclosed", 1.1)]),
    ("stray ) and ]", [("stray ) and ]", 1.0)]),
    ("no weight:1.2)", [("no weight:1.2)", 1.0)]),
    ("a (b:1.5) c", [("a ", 1.0), ("b", 1.5), (" c", 1.0)]),
    ("(a [b] c)", [("a ", 1.1), ("b", pytest.approx(1.0)), (" c", 1.1)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", None), ("b", 1.0)]),
    ("", [("", 1.0)]),
])
def test_parse_attention(text, runs):
    assert parse_attention(text) == runs


def test_equal_weights_merge():
    assert parse_attention("(a)(b)") == [("ab", 1.1)]


def test_extract_networks_removes_tags():
    clean, found = extract_networks("a <lora:foo:0.8> cat <LoRA:bar> <hypernet:h:1>")
    assert clean == "a  cat  "
    assert found == [("lora", ["foo", "0.8"]), ("lora", ["bar"]), ("hypernet", ["h", "1"])]


@pytest.mark.parametrize("text, plan", [
    ("a [cat:dog:10] b", [(10, "a cat b"), (20, "a dog b")]),
    ("a [cat:dog:0.5] b", [(10, "a cat b"), (20, "a dog b")]),
    ("a [dog:5]", [(5, "a "), (20, "a dog")]),
    ("a [cat::0.25]", [(5, "a cat"), (20, "a ")]),
    ("(red:1.2) [x:y:2] [z] BREAK w", [(2, "(red:1.2) x [z] BREAK w"),
                                        (20, "(red:1.2) y [z] BREAK w")]),
    (r"a \[cat:dog:10\] b", [(20, r"a \[cat:dog:10\] b")]),
    ("a [b", [(20, "a [b")]),  # unparsable: used as it is, as upstream
])
def test_prompt_schedule_as_upstream(text, plan):
    assert prompt_schedule.schedule(text, 20) == plan


def test_alternation_and_nesting():
    assert prompt_schedule.schedule("[a|b] x", 3) == [(1, "a x"), (2, "b x"), (3, "a x")]
    assert prompt_schedule.schedule("[[a:b:2]:c:0.75]", 8) == [(2, "a"), (6, "b"), (8, "c")]
    assert prompt_schedule.text_at([(2, "a"), (6, "b")], 3) == "b"
    assert prompt_schedule.merged([(2, "a"), (4, "b")], [(3, "n"), (4, "m")]) == [
        (2, "a", "n"), (3, "b", "n"), (4, "b", "m")]


# -- chunking (pure) -----------------------------------------------------------------------------
def test_chunks_of_75_never_truncate():
    chunks = chunk_tokens([(list(range(160)), 1.0)], comma=None)
    assert [len(t) for t, _ in chunks] == [75, 75, 10]
    assert sum((t for t, _ in chunks), []) == list(range(160))


def test_break_starts_a_new_chunk():
    chunks = chunk_tokens([([1, 2], 1.0), (None, None), ([3], 2.0)], comma=None)
    assert chunks == [([1, 2], [1.0, 1.0]), ([3], [2.0])]


def test_full_chunk_moves_the_phrase_after_a_recent_comma():
    comma = 99
    toks = list(range(70)) + [comma] + list(range(100, 110))  # comma at index 70
    chunks = chunk_tokens([(toks, 1.0)], comma=comma)
    assert chunks[0][0] == list(range(70)) + [comma]
    assert chunks[1][0] == list(range(100, 110))


def test_empty_prompt_is_one_chunk():
    assert chunk_tokens([([], 1.0)], comma=None) == [([], [])]


# -- encoding on the tiny model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(engine):
    return engine.warm().pipe


def embeds(pipe, prompt, negative="", clip_skip=1):
    return prompts.encode(pipe, prompt, negative, clip_skip)["prompt_embeds"]


def test_weight_changes_embedding(pipe):
    import torch

    plain = embeds(pipe, "a red cat")
    assert not torch.equal(embeds(pipe, "a (red:1.5) cat"), plain)
    assert torch.equal(embeds(pipe, "a (red:1.0) cat"), plain)
    assert torch.equal(embeds(pipe, "a (red) cat"), embeds(pipe, "a (red:1.1) cat"))


def test_weight_scales_only_its_tokens_then_restores_the_mean(pipe):
    import torch

    plain, weighted = embeds(pipe, "ab"), embeds(pipe, "(ab:2)")
    assert torch.allclose(weighted.mean(), plain.mean(), atol=1e-5)
    # BOS (position 0) is not weighted: only the mean-restoring factor touches it.
    ratio = weighted[0, 0] / plain[0, 0]
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-4)
    assert not torch.allclose(weighted[0, 1] / plain[0, 1], ratio, atol=1e-3)


def test_long_prompt_is_encoded_in_chunks_not_truncated(pipe):
    import torch

    base = "word " * 40  # the tiny tokenizer is byte-level: 160 tokens
    a, b = embeds(pipe, base + "cat"), embeds(pipe, base + "dog")
    assert a.shape[1] == 77 * 3
    assert torch.equal(a[:, :77], b[:, :77])  # the first chunk does not see the tail
    assert not torch.equal(a, b)  # the tail past 75 tokens is encoded, not dropped


def test_negative_is_padded_to_the_prompt_length(pipe):
    out = prompts.encode(pipe, "word " * 40, "short", 1, n=2)
    assert out["prompt_embeds"].shape == out["negative_prompt_embeds"].shape == (2, 231, 32)


def test_break_makes_a_second_chunk(pipe):
    assert embeds(pipe, "a cat BREAK a dog").shape[1] == 154


def test_clip_skip_reads_an_earlier_layer_through_the_final_norm(pipe):
    import torch

    got = embeds(pipe, "a cat", clip_skip=2)
    assert not torch.equal(got, embeds(pipe, "a cat"))
    ids = pipe.tokenizer("a cat", padding="max_length", max_length=77,
                         return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        want = pipe.text_encoder.final_layer_norm(hidden)
    assert torch.allclose(got, want, atol=1e-5)


def test_clip_skip_beyond_the_encoder_is_refused(pipe):
    with pytest.raises(InvalidRequest, match="clip skip"):
        embeds(pipe, "a cat", clip_skip=pipe.text_encoder.config.num_hidden_layers + 1)


def test_sdxl_encoders_concatenate_with_pooled_and_zero_negative(pipe):
    """SDXL: both CLIP encoders' penultimate layers side by side, pooled from the second."""
    import types

    import torch
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    te = pipe.text_encoder
    cfg = CLIPTextConfig(vocab_size=te.config.vocab_size, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=3, num_attention_heads=2, max_position_embeddings=77,
                         projection_dim=8, bos_token_id=pipe.tokenizer.bos_token_id,
                         eos_token_id=pipe.tokenizer.eos_token_id)
    torch.manual_seed(0)
    te2 = CLIPTextModelWithProjection(cfg)
    xl = types.SimpleNamespace(text_encoder=te, text_encoder_2=te2, tokenizer=pipe.tokenizer,
                               tokenizer_2=pipe.tokenizer,
                               config=types.SimpleNamespace(force_zeros_for_empty_prompt=True))
    out = prompts.encode(xl, "a (cat:1.2) " + "word " * 20, "", 1, n=1)
    assert out["prompt_embeds"].shape == (1, 154, 32 + 16)
    assert out["pooled_prompt_embeds"].shape == (1, 8)
    assert not out["negative_prompt_embeds"].any()  # empty negative: zeros, as upstream SDXL
    with_neg = prompts.encode(xl, "a cat", "blurry", 1, n=1)
    assert with_neg["negative_prompt_embeds"].any()
