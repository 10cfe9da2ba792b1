"""Tiny LoRA and textual-inversion files for the tiny model, in the layouts A1111 users have."""

from __future__ import annotations

from pathlib import Path

LORA_NAME = "tiny_style_lora"
EMBEDDING_NAME = "tinyembed"


def write_kohya_lora(pipe, path: Path, seed: int = 0, rank: int = 2) -> Path:
    """A kohya-format LoRA (lora_unet_* / lora_te_* keys with lora_down/lora_up/alpha) covering
    the tiny UNet's attention projections and the text encoder's self-attention."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    state = {}

    def add(prefix: str, layer) -> None:
        state[f"{prefix}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=g)
        state[f"{prefix}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=g)
        state[f"{prefix}.alpha"] = torch.tensor(float(rank))

    for name, m in pipe.unet.named_modules():
        if isinstance(m, torch.nn.Linear) and "attentions" in name and \
                name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "0"):
            add("lora_unet_" + name.replace(".", "_"), m)
    for name, m in pipe.text_encoder.named_modules():
        if isinstance(m, torch.nn.Linear) and "self_attn" in name:
            add("lora_te_text_model_" + name.replace(".", "_"), m)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"ss_output_name": path.stem})
    return path


def write_embedding(path: Path, vectors: int = 2, width: int = 32, seed: int = 0) -> Path:
    """An A1111-style textual-inversion .safetensors (`emb_params`, vectors x width)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(vectors, width, generator=g) * 3}, str(path))
    return path


def ensure_assets(models_dir: Path, pipe) -> None:
    """Write the test LoRA and embedding into the models folder once per session."""
    lora = models_dir / "Lora" / f"{LORA_NAME}.safetensors"
    if not lora.exists():
        write_kohya_lora(pipe, lora)
    emb = models_dir / "embeddings" / f"{EMBEDDING_NAME}.safetensors"
    if not emb.exists():
        write_embedding(emb, width=pipe.text_encoder.config.hidden_size)


def write_peft_lora(parts: dict, path: Path, seed: int = 0, rank: int = 2) -> Path:
    """A LoRA in diffusers' PEFT layout (`<component>.<module>.lora_A/lora_B.weight`, as
    diffusers' own trainers save them) on the attention projections of each component in
    `parts` ({"transformer": module, "text_encoder": module, ...})."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    state = {}
    for prefix, part in parts.items():
        for name, m in part.named_modules():
            if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in (
                    "to_q", "to_k", "to_v", "q_proj", "k_proj", "v_proj"):
                state[f"{prefix}.{name}.lora_A.weight"] = torch.randn(rank, m.in_features,
                                                                      generator=g)
                state[f"{prefix}.{name}.lora_B.weight"] = torch.randn(m.out_features, rank,
                                                                      generator=g)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
