"""A1111 prompt syntax for every API shape: attention weights, BREAK, 75-token chunks, clip skip.

`parse_attention` turns "a (red:1.3) [cat]" into weighted runs of text; `chunk_tokens` packs
their tokens into chunks of 75 (a BREAK or a full chunk starts the next one, moving the words
after a recent comma along); `encode` wraps each chunk in BOS/EOS, encodes the chunks separately,
scales every token's hidden state by its weight, restores each chunk's mean (A1111's "Original"
emphasis) and concatenates them, so long prompts are never truncated. `encode_scheduled` adds
prompt editing and alternation (shared.engine.prompt_schedule): one encoding per distinct text,
switched per step by `switcher` through diffusers' callback_on_step_end. Behaviour follows upstream
`modules/prompt_parser.py` and `modules/sd_hijack_clip.py`.
"""

from __future__ import annotations

import re

from shared.engine import families, prompt_schedule
from shared.errors import InvalidRequest, Unsupported

CHUNK = 75  # tokens per chunk, BOS and EOS not counted
COMMA_BACKTRACK = 20  # a full chunk moves the words after a comma this close to its end along
ROUND, SQUARE = 1.1, 1 / 1.1

# One lexeme of the attention syntax; group 1 is the weight of a "(text:1.3)" closer.
_LEXEME = re.compile(r"""
      \\[()\[\]\\]                                   # escaped bracket or backslash
    | [(\[]                                          # opening bracket
    | :\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)        # explicit weight, closes a round bracket
    | [)\]]                                          # closing bracket
    | [^\\()\[\]:]+                                  # plain text
    | [\\:]                                          # a lone colon or backslash is text
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_NETWORK = re.compile(r"<(\w+):([^>]+)>")  # extra networks: <lora:name:0.8>, <hypernet:...>
Run = tuple[str, float | None]  # (text, weight); weight None marks a BREAK


def extract_networks(prompt: str) -> tuple[str, list[tuple[str, list[str]]]]:
    """Remove `<kind:arg:arg>` tags from a prompt: (prompt without them, [(kind, args)])."""
    found: list[tuple[str, list[str]]] = []

    def take(m: re.Match) -> str:
        found.append((m.group(1).lower(), [a.strip() for a in m.group(2).split(":")]))
        return ""

    return _NETWORK.sub(take, prompt), found


def parse_attention(text: str) -> list[Run]:
    """Weighted runs of a prompt: `(x)` x1.1, `((x))` x1.21, `(x:1.3)`, `[x]` /1.1, `\\(` literal.

    Unclosed brackets weigh to the end of the prompt; neighbouring runs of equal weight merge.
    """
    runs: list[list] = []  # [text, weight]
    opened: list[tuple[str, int]] = []  # (bracket, index of the first run inside it)

    def close(bracket: str, factor: float) -> None:
        for i in range(len(opened) - 1, -1, -1):
            if opened[i][0] == bracket:
                start = opened.pop(i)[1]
                for run in runs[start:]:
                    if run[1] is not None:
                        run[1] *= factor
                return

    for m in _LEXEME.finditer(text):
        lex, weight = m.group(0), m.group(1)
        if lex[0] == "\\" and len(lex) == 2:
            runs.append([lex[1], 1.0])
        elif lex in ("(", "["):
            opened.append((lex, len(runs)))
        elif weight is not None and any(b == "(" for b, _ in opened):
            close("(", float(weight))
        elif lex == ")" and any(b == "(" for b, _ in opened):
            close("(", ROUND)
        elif lex == "]" and any(b == "[" for b, _ in opened):
            close("[", SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(lex)):
                if i:
                    runs.append(["BREAK", None])
                runs.append([part, 1.0])
    while opened:
        bracket, _ = opened[-1]
        close(bracket, ROUND if bracket == "(" else SQUARE)

    merged: list[list] = []
    for text_, w in runs:
        if merged and w is not None and merged[-1][1] == w:
            merged[-1][0] += text_
        elif text_ or w is None:
            merged.append([text_, w])
    return [(t, w) for t, w in merged] or [("", 1.0)]


def chunk_tokens(runs: list[tuple[list[int] | None, float]], comma: int | None,
                 size: int = CHUNK, backtrack: int = COMMA_BACKTRACK
                 ) -> list[tuple[list[int], list[float]]]:
    """Pack weighted token runs into chunks of at most `size` tokens (ids None = BREAK)."""
    chunks: list[tuple[list[int], list[float]]] = []
    toks: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal toks, weights, last_comma
        chunks.append((toks, weights))
        toks, weights, last_comma = [], [], -1

    for ids, weight in runs:
        if ids is None:
            close()
            continue
        for tok in ids:
            if len(toks) == size:
                if tok != comma and last_comma != -1 and size - last_comma <= backtrack:
                    # Keep the phrase after the last comma whole: move it to the next chunk.
                    cut = last_comma + 1
                    rest = toks[cut:], weights[cut:]
                    toks, weights = toks[:cut], weights[:cut]
                    close()
                    toks, weights = list(rest[0]), list(rest[1])
                else:
                    close()
            if tok == comma:
                last_comma = len(toks)
            toks.append(tok)
            weights.append(weight)
    if toks or not chunks:
        close()
    return chunks


# -- encoding (torch) --------------------------------------------------------------------------
def _tokenize(pipe, tokenizer, text: str) -> list[tuple[list[int], list[float]]]:
    runs = parse_attention(text)
    texts = [t for t, w in runs if w is not None]
    if hasattr(pipe, "maybe_convert_prompt"):  # multi-vector textual inversion tokens
        texts = pipe.maybe_convert_prompt(texts, tokenizer)
    ids = iter(tokenizer(texts, add_special_tokens=False, truncation=False,
                         verbose=False).input_ids if texts else [])
    token_runs = [(None if w is None else next(ids), w) for _, w in runs]
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    return chunk_tokens(token_runs, comma if comma != tokenizer.unk_token_id else None)


def _wrap(tokenizer, chunks) -> tuple[list[list[int]], list[list[float]]]:
    """[BOS] tokens [EOS] [PAD...] to 77 ids per chunk; weights 1.0 outside the tokens."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, weights = [], []
    for toks, w in chunks:
        fill = CHUNK - len(toks)
        ids.append([tokenizer.bos_token_id, *toks, tokenizer.eos_token_id] + [pad] * fill)
        weights.append([1.0, *w, 1.0] + [1.0] * fill)
    return ids, weights


def _final_norm(text_encoder):
    # transformers 5 dropped CLIPTextModel.text_model; older versions still have it.
    return getattr(text_encoder, "text_model", text_encoder).final_layer_norm


def _hidden(text_encoder, ids, weights, layer: int, final_norm: bool):
    """Hidden states of every chunk, weighted, as one (1, 77 x chunks, width) sequence."""
    import torch

    device = next(text_encoder.parameters()).device
    out = text_encoder(torch.tensor(ids, device=device), output_hidden_states=True)
    if layer == -1 and final_norm:
        z = out.last_hidden_state
    else:
        z = out.hidden_states[layer]
        if final_norm:
            z = _final_norm(text_encoder)(z)
    w = torch.tensor(weights, dtype=z.dtype, device=z.device)
    if not torch.all(w == 1):
        mean = z.mean(dim=(1, 2), keepdim=True)
        z = z * w[..., None]
        z = z * (mean / z.mean(dim=(1, 2), keepdim=True))
    return z.reshape(1, -1, z.shape[-1]), out


def _check_layers(text_encoder, needed: int, clip_skip: int) -> None:
    layers = text_encoder.config.num_hidden_layers
    if needed > layers:
        raise InvalidRequest(f"clip skip {clip_skip} is more than this model's text encoder "
                             f"has layers ({layers})", param="clip_skip")


def _pad_to(z, length: int, empty):
    """Append copies of the empty prompt's chunk until z is `length` tokens long."""
    import torch

    missing = (length - z.shape[1]) // empty.shape[1]
    return torch.cat([z] + [empty] * missing, dim=1) if missing > 0 else z


def _encode_sd(pipe, prompt: str, negative: str, clip_skip: int) -> dict:
    te, tok = pipe.text_encoder, pipe.tokenizer
    _check_layers(te, clip_skip, clip_skip)
    layer = -clip_skip  # A1111: hidden_states[-k] through the final layer norm (k=1: last)

    def enc(text):
        return _hidden(te, *_wrap(tok, _tokenize(pipe, tok, text)), layer, True)[0]

    pos, neg = enc(prompt), enc(negative)
    if pos.shape != neg.shape:
        empty = enc("")
        length = max(pos.shape[1], neg.shape[1])
        pos, neg = _pad_to(pos, length, empty), _pad_to(neg, length, empty)
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg}


def _encode_sdxl(pipe, prompt: str, negative: str, clip_skip: int) -> dict:
    import torch

    pairs = [(pipe.text_encoder, pipe.tokenizer), (pipe.text_encoder_2, pipe.tokenizer_2)]
    pairs = [(te, tok) for te, tok in pairs if te is not None]
    for te, _ in pairs:
        _check_layers(te, clip_skip + 1, clip_skip)
    layer = -(clip_skip + 1)  # SDXL reads the penultimate layer, without the final norm

    def enc(text):
        parts, pooled = [], None
        for te, tok in pairs:
            z, out = _hidden(te, *_wrap(tok, _tokenize(pipe, tok, text)), layer, False)
            parts.append(z)
            if te is pipe.text_encoder_2:
                pooled = out.text_embeds[:1]  # the first chunk's pooled output, as upstream
        length = min(p.shape[1] for p in parts)  # tokenizers agree; guard odd vocabularies
        return torch.cat([p[:, :length] for p in parts], dim=-1), pooled

    pos, pooled = enc(prompt)
    if not negative and getattr(pipe.config, "force_zeros_for_empty_prompt", True):
        neg, neg_pooled = torch.zeros_like(pos), torch.zeros_like(pooled)
    else:
        neg, neg_pooled = enc(negative)
        if pos.shape != neg.shape:
            empty = enc("")[0]
            length = max(pos.shape[1], neg.shape[1])
            pos, neg = _pad_to(pos, length, empty), _pad_to(neg, length, empty)
    return {"prompt_embeds": pos, "negative_prompt_embeds": neg,
            "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}


def plain_text(prompt: str, family) -> str:
    """A prompt for a T5-based family: A1111 attention syntax refused (its weights act on CLIP
    hidden states), escaped brackets kept as text."""
    runs = parse_attention(prompt)
    if any(w is None or w != 1.0 for _, w in runs):
        raise Unsupported(f"prompt weighting ((word), [word], (word:1.2)) and BREAK are not "
                          f"supported for {family.label} models, which read the prompt as plain "
                          r"text; write brackets as \( \) to keep them", param="prompt")
    return "".join(t for t, _ in runs)


def _check_length(pipe, family, text: str) -> None:
    """Refuse a prompt the pipeline would truncate (dropped words change the picture)."""
    t5 = getattr(pipe, "tokenizer_3", None) if family.key == "sd3" else pipe.tokenizer_2
    tok, limit = (t5, family.max_tokens) if t5 is not None else (pipe.tokenizer, CHUNK)
    n = len(tok(text, add_special_tokens=False, verbose=False).input_ids)
    if n > limit:
        raise InvalidRequest(f"prompt is {n} tokens; {family.label} reads at most {limit}",
                             param="prompt")


def _encode_plain(pipe, family, prompt: str, negative: str, clip_skip: int) -> dict:
    """SD3 / Flux: the pipeline's own encode_prompt on plain text (one image; encode repeats)."""
    if clip_skip > 1:
        raise Unsupported(f"clip skip is not supported for {family.label} models",
                          param="clip_skip")
    prompt, negative = plain_text(prompt, family), plain_text(negative, family)
    for text in (prompt, negative):
        _check_length(pipe, family, text)
    device = pipe._execution_device
    if family.key == "sd3":
        pos, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=True, negative_prompt=negative,
            max_sequence_length=family.max_tokens)
        return {"prompt_embeds": pos, "negative_prompt_embeds": neg,
                "pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}
    if negative:
        raise Unsupported(f"a negative prompt is not supported for {family.label} models "
                          "(true CFG is off)", param="negative_prompt")
    pos, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                        num_images_per_prompt=1,
                                        max_sequence_length=family.max_tokens)
    return {"prompt_embeds": pos, "pooled_prompt_embeds": pooled}


def encode(pipe, prompt: str, negative: str = "", clip_skip: int = 1, n: int = 1) -> dict:
    """Pipeline keyword arguments with the prompts' embeddings, repeated for `n` images.

    `prompt` must already be free of `<lora:...>` tags (see extract_networks).
    """
    import torch

    family = families.FAMILIES[families.of_pipe(pipe)]
    with torch.no_grad():
        if family.flow:
            out = _encode_plain(pipe, family, prompt, negative, clip_skip)
        elif getattr(pipe, "text_encoder_2", None) is not None:
            out = _encode_sdxl(pipe, prompt, negative, clip_skip)
        elif getattr(pipe, "text_encoder", None) is not None:
            out = _encode_sd(pipe, prompt, negative, clip_skip)
        else:
            raise Unsupported(f"{type(pipe).__name__} has no CLIP text encoder for A1111 prompts")
    return {k: v.repeat(n, *[1] * (v.dim() - 1)) for k, v in out.items()}


def encode_scheduled(pipe, prompt: str, negative: str, clip_skip: int, n: int, steps: int
                     ) -> list[tuple[int, dict]]:
    """[(end_step, encode() kwargs)] for a prompt with `[from:to:when]` / `[a|b]` over `steps`
    steps; one entry when nothing is scheduled. Every entry has the same token length (shorter
    ones padded with the empty prompt's chunk, as upstream pads conds)."""
    plan = prompt_schedule.merged(prompt_schedule.schedule(prompt, steps),
                                  prompt_schedule.schedule(negative, steps))
    family = families.FAMILIES[families.of_pipe(pipe)]
    if len(plan) > 1 and family.flow:
        raise Unsupported(f"prompt editing / alternation ([a:b:when], [a|b]) is not supported "
                          f"for {family.label} models", param="prompt")
    cache: dict[tuple[str, str], dict] = {}
    parts = []
    for end, pos, neg in plan:
        if (pos, neg) not in cache:
            cache[(pos, neg)] = encode(pipe, pos, neg, clip_skip, n)
        parts.append((end, cache[(pos, neg)]))
    length = max(p["prompt_embeds"].shape[1] for _, p in parts)
    if any(p["prompt_embeds"].shape[1] != length for _, p in parts):
        empty = encode(pipe, "", "", clip_skip, n)["prompt_embeds"][:, :CHUNK + 2]
        for _, p in parts:
            for k in ("prompt_embeds", "negative_prompt_embeds"):
                if p[k].shape[1] != length:
                    p[k] = _pad_to(p[k], length, empty)
    return parts


def switcher(parts: list[tuple[int, dict]], inner):
    """A callback_on_step_end that runs `inner`, then hands the pipeline the conditioning of the
    next step (classifier-free guidance's [negative, positive] pair, as the pipeline holds it)."""
    import torch

    current = [parts[0][1]]

    def pick(step: int) -> dict:
        for end, kw in parts:
            if step <= end:
                return kw
        return parts[-1][1]

    def on_step_end(pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        out = inner(pipe, step, timestep, callback_kwargs)
        nxt = pick(step + 1)
        if nxt is current[0]:
            return out
        current[0] = nxt
        cfg = getattr(pipe, "do_classifier_free_guidance", True)
        pos, neg = nxt["prompt_embeds"], nxt["negative_prompt_embeds"]
        out["prompt_embeds"] = torch.cat([neg, pos]) if cfg else pos
        out["negative_prompt_embeds"] = neg
        if "pooled_prompt_embeds" in nxt:
            pooled, neg_pooled = nxt["pooled_prompt_embeds"], nxt["negative_pooled_prompt_embeds"]
            out["add_text_embeds"] = torch.cat([neg_pooled, pooled]) if cfg else pooled
        return out

    return on_step_end
