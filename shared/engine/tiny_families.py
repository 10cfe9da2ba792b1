"""Tiny random-weight SDXL, SD3 and Flux pipelines built from the real diffusers classes.

Sizes follow diffusers' own fast tests (get_dummy_components in tests/pipelines/
stable_diffusion_xl, stable_diffusion_3 and flux), except that every VAE has 4 blocks: the 8x
latent factor of the real models, so the engine's size rules are exercised. Tokenizers are
built offline (byte-level CLIP as in shared.engine.tiny; a character-level T5 Unigram).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from shared.engine.tiny import build_tokenizer

TINY_FAMILIES = ("sdxl", "sdxl-refiner", "sd3", "flux-dev", "flux-schnell")


def _clip_tokenizer():
    with tempfile.TemporaryDirectory() as d:
        return build_tokenizer(Path(d))


def _t5_tokenizer():
    """A T5 (Unigram) tokenizer over printable ASCII, one piece per character."""
    from transformers import T5Tokenizer

    chars = [chr(c) for c in range(32, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [(c, -2.0) for c in chars] + [("\u2581" + c, -1.5) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _t5(tokenizer):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=37, d_kv=8,
                                   num_layers=2, num_heads=4, relative_attention_num_buckets=8,
                                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))


def _clip(tokenizer, projection: bool, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=37,
                         num_hidden_layers=5, num_attention_heads=4, max_position_embeddings=77,
                         projection_dim=32, hidden_act="gelu",
                         bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)
    import torch

    with torch.no_grad():  # as in shared.engine.tiny: a real CLIP's final norm has a bias
        getattr(model, "text_model", model).final_layer_norm.bias.normal_(0.5, 0.1)
    return model


def _vae(latent_channels: int, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                         layers_per_block=1, block_out_channels=(8, 8, 16, 16), norm_num_groups=4,
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=128, **extra)


def sdxl_unet(cross_attention_dim: int, aesthetic: bool = False):
    """The tiny SDXL UNet (tests/pipelines/stable_diffusion_xl's sizes). Its text_time
    conditioning: the pooled embedding (32) + 6 size/crop ids (5 with the refiner's aesthetic
    score) of 8 each."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), norm_num_groups=8,
        projection_class_embeddings_input_dim=(5 if aesthetic else 6) * 8 + 32,
        cross_attention_dim=cross_attention_dim)


def build_sdxl(refiner: bool = False, seed: int = 0):
    """StableDiffusionXLPipeline (or the refiner's Img2Img pipeline: second encoder only,
    aesthetic-score conditioning), tests/pipelines/stable_diffusion_xl's sizes."""
    import torch
    from diffusers import (EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                           StableDiffusionXLPipeline)

    torch.manual_seed(seed)
    tok = _clip_tokenizer()
    unet = sdxl_unet(32 if refiner else 64, aesthetic=refiner)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                   beta_schedule="scaled_linear", timestep_spacing="leading")
    parts = dict(unet=unet, vae=_vae(4, scaling_factor=0.13025), scheduler=sched,
                 text_encoder_2=_clip(tok, True), tokenizer_2=tok)
    if refiner:
        return StableDiffusionXLImg2ImgPipeline(text_encoder=None, tokenizer=None,
                                                requires_aesthetics_score=True,
                                                force_zeros_for_empty_prompt=False, **parts)
    return StableDiffusionXLPipeline(text_encoder=_clip(tok, False), tokenizer=tok, **parts)


def build_sd3(seed: int = 0, t5: bool = True):
    """StableDiffusion3Pipeline, tests/pipelines/stable_diffusion_3's sizes (T5 optional), with
    the real 16 latent channels."""
    import torch
    from diffusers import (FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)

    torch.manual_seed(seed)
    tok = _clip_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=1, in_channels=16, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        pooled_projection_dim=64, out_channels=16)
    t5_tok = _t5_tokenizer() if t5 else None
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_vae(16, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                 use_post_quant_conv=False),
        text_encoder=_clip(tok, True), tokenizer=tok,
        text_encoder_2=_clip(tok, True), tokenizer_2=tok,
        text_encoder_3=_t5(t5_tok) if t5 else None, tokenizer_3=t5_tok)


def build_flux(dev: bool = True, seed: int = 0):
    """FluxPipeline (dev: guidance embedding; schnell: none, no shift), tests/pipelines/flux's
    sizes; 16 latent channels (SD3's and Flux's own: their inpaint pipelines check it)."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tok = _clip_tokenizer()
    t5_tok = _t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8], guidance_embeds=dev)
    # dev shifts its sigmas by resolution; schnell (timestep-distilled) does not
    sched = (FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True,
                                             base_image_seq_len=256, max_image_seq_len=4096,
                                             base_shift=0.5, max_shift=1.15) if dev
             else FlowMatchEulerDiscreteScheduler(shift=1.0))
    return FluxPipeline(
        transformer=transformer, scheduler=sched,
        vae=_vae(16, shift_factor=0.1159, scaling_factor=0.3611, use_quant_conv=False,
                 use_post_quant_conv=False),
        text_encoder=_clip(tok, False), tokenizer=tok, text_encoder_2=_t5(t5_tok),
        tokenizer_2=t5_tok)


BUILDERS = {
    "sdxl": lambda: build_sdxl(False), "sdxl-refiner": lambda: build_sdxl(True),
    "sd3": build_sd3, "flux-dev": lambda: build_flux(True),
    "flux-schnell": lambda: build_flux(False),
}


def write_tiny_family(kind: str, out: Path) -> Path:
    """Save one tiny pipeline as a diffusers folder (save_pretrained, safetensors)."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny family {kind!r}; choices: {', '.join(BUILDERS)}")
    out = Path(out)
    pipe = BUILDERS[kind]()
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "SDGATE_TINY").write_text(f"random {kind} weights: draws noise, for tests\n")
    return out


def write_keys_checkpoint(kind: str, out: Path) -> Path:
    """A single-file checkpoint holding one key of each part diffusers' single-file detection
    looks for (original, non-diffusers key names), with the real models' shapes where the
    detection reads a shape; tiny 1-element tensors elsewhere. For detection tests only: it
    holds too few weights to load."""
    import torch
    from safetensors.torch import save_file

    unet = "model.diffusion_model."
    keys = {
        "sd1": {f"{unet}output_blocks.11.0.skip_connection.weight": torch.zeros(1),
                f"{unet}input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight":
                    torch.zeros(1, 768)},
        "sd2": {f"{unet}output_blocks.11.0.skip_connection.weight": torch.zeros(1),
                f"{unet}input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight":
                    torch.zeros(1, 1024)},
        "sdxl": {"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias":
                 torch.zeros(1)},
        "sdxl-refiner": {"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias":
                         torch.zeros(1)},
        "sd3": {f"{unet}joint_blocks.0.context_block.adaLN_modulation.1.bias":
                    torch.zeros(9216), f"{unet}pos_embed": torch.zeros(1, 36864, 1)},
        "flux-dev": {f"{unet}double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1),
                     f"{unet}guidance_in.in_layer.bias": torch.zeros(1),
                     f"{unet}img_in.weight": torch.zeros(1, 64)},
        "flux-schnell": {f"{unet}double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1)},
    }[kind]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in keys.items()}, str(out))
    return out


def _swap_halves(t):
    """SD3's original AdaLayerNormContinuous splits (shift, scale); diffusers (scale, shift)."""
    import torch

    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def sd3_original_keys(sd: dict) -> dict:
    """An SD3 transformer's diffusers state dict under Stability's original key names
    (`model.diffusion_model.joint_blocks...`): the inverse of diffusers'
    convert_sd3_transformer_checkpoint_to_diffusers (a test checks the round trip)."""
    import torch

    out = {}
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))
    plain = {"pos_embed.pos_embed": "pos_embed", "pos_embed.proj.weight": "x_embedder.proj.weight",
             "pos_embed.proj.bias": "x_embedder.proj.bias",
             "context_embedder.weight": "context_embedder.weight",
             "context_embedder.bias": "context_embedder.bias",
             "proj_out.weight": "final_layer.linear.weight",
             "proj_out.bias": "final_layer.linear.bias"}
    for mine, theirs in (("timestep_embedder", "t_embedder"), ("text_embedder", "y_embedder")):
        for a, b in (("linear_1", "0"), ("linear_2", "2")):
            for p in ("weight", "bias"):
                plain[f"time_text_embed.{mine}.{a}.{p}"] = f"{theirs}.mlp.{b}.{p}"
    out.update({theirs: sd[mine] for mine, theirs in plain.items()})
    for p in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{p}"] = _swap_halves(sd[f"norm_out.linear.{p}"])
    for i in range(n):
        d, o = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == n - 1
        for p in ("weight", "bias"):
            out[f"{o}x_block.attn.qkv.{p}"] = torch.cat(
                [sd[f"{d}attn.to_{x}.{p}"] for x in "qkv"])
            out[f"{o}context_block.attn.qkv.{p}"] = torch.cat(
                [sd[f"{d}attn.add_{x}_proj.{p}"] for x in "qkv"])
            out[f"{o}x_block.attn.proj.{p}"] = sd[f"{d}attn.to_out.0.{p}"]
            out[f"{o}x_block.adaLN_modulation.1.{p}"] = sd[f"{d}norm1.linear.{p}"]
            ctx = sd[f"{d}norm1_context.linear.{p}"]
            out[f"{o}context_block.adaLN_modulation.1.{p}"] = _swap_halves(ctx) if last else ctx
            out[f"{o}x_block.mlp.fc1.{p}"] = sd[f"{d}ff.net.0.proj.{p}"]
            out[f"{o}x_block.mlp.fc2.{p}"] = sd[f"{d}ff.net.2.{p}"]
            if not last:  # the last block's context stream ends (context_pre_only)
                out[f"{o}context_block.attn.proj.{p}"] = sd[f"{d}attn.to_add_out.{p}"]
                out[f"{o}context_block.mlp.fc1.{p}"] = sd[f"{d}ff_context.net.0.proj.{p}"]
                out[f"{o}context_block.mlp.fc2.{p}"] = sd[f"{d}ff_context.net.2.{p}"]
    return {f"model.diffusion_model.{k}": v for k, v in out.items()}


def write_single_file(kind: str, models_dir: Path, name: str) -> Path:
    """A tiny SD3 or Flux as a single-file checkpoint `<models_dir>/<name>.safetensors` holding
    the transformer only (as Stability's and BFL's files do), plus its configs folder
    `<models_dir>/configs/<repo>/` without transformer weights (what `sdgate pull --configs`
    fills): the transformer can only come from the file.

    SD3: Stability's original key names. Flux: diffusers' key names (diffusers' converter from
    BFL's names hard-codes FLUX.1's 3072-wide blocks, which no tiny model has). SD 1.x / SD 2.x /
    SDXL (`sd1`, `sd2`, `sdxl`): all-in-one files in the original layout
    (shared.engine.tiny_ldm)."""
    from safetensors.torch import save_file

    from shared.engine import tiny_ldm

    if kind in tiny_ldm.LDM_KINDS:
        return tiny_ldm.write_ldm_single_file(kind, models_dir, name)

    from shared.engine.families import CONFIG_REPOS

    repo = {"sd3": CONFIG_REPOS["sd3"], "flux-dev": CONFIG_REPOS["flux-dev"],
            "flux-schnell": CONFIG_REPOS["flux-schnell"]}[kind]
    models_dir = Path(models_dir)
    pipe = BUILDERS[kind]()
    config = models_dir / "configs" / repo
    pipe.save_pretrained(config, safe_serialization=True)
    for f in (config / "transformer").glob("*.safetensors"):
        f.unlink()
    sd = {k: v.contiguous() for k, v in pipe.transformer.state_dict().items()}
    if kind == "sd3":
        sd = sd3_original_keys(sd)
    out = models_dir / f"{name}.safetensors"
    save_file(sd, str(out))
    return out
