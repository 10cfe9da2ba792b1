"""Tiny SD 1.x, SD 2.x and SDXL pipelines written as all-in-one single files in the original
LDM / SGM layout (what A1111 and Civitai checkpoints hold), for tests.

The key names are the inverse of diffusers' single-file converters (convert_ldm_unet_checkpoint,
convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint, convert_open_clip_checkpoint; a test
checks the round trip). The models keep the block structure diffusers' detection reads
(infer_diffusers_model_type): SD 1.x has four down blocks of two layers, so its UNet has
`output_blocks.11`; SDXL's OpenCLIP encoder has ten layers (`resblocks.9`) and is wider than its
CLIP-L one, as bigG is, so diffusers tells the two encoders apart by width. Channels are tiny,
and SD 1.x's cross attention is 32 wide, not 768: detection only asks that it is not SD 2.x's
1024. SD 2.x's is 1024 (diffusers' "v2" test), its UNet projects with linear layers, and its
text encoder is an OpenCLIP-H stand-in under `cond_stage_model.model.` (1024 wide, two layers):
diffusers builds it as a CLIPTextModel from the configs and ignores the file's `text_projection`
(and the 24th layer real files hold, which SD 2.x skips). The file cannot say whether it
predicts noise or v: the configs folder's scheduler decides (families.detect_file).
"""

from __future__ import annotations

import re
from pathlib import Path

UNET = "model.diffusion_model."
VAE = "first_stage_model."
SD1_CLIP = "cond_stage_model.transformer."
SD2_OPEN_CLIP = "cond_stage_model.model."
SD2_WIDTH = 1024  # OpenCLIP-H: the text encoder's width and the UNet's cross attention
SDXL_CLIP = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP = "conditioner.embedders.1.model."
LDM_KINDS = ("sd1", "sd2", "sdxl")  # sd2-v too, with its own configs folder
# the diffusers single-file type whose configs repo each kind loads with
LDM_TYPES = {"sd1": "v1", "sd2": "v2", "sd2-v": "v2", "sdxl": "xl_base"}

# -- builders ------------------------------------------------------------------------------------


def _sd_unet(cross_attention_dim: int, **extra):
    """SD 1.x / 2.x's UNet layout (four down blocks of two layers, attention in the first
    three) at tiny widths."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(16, 16, 32, 32), norm_num_groups=8, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cross_attention_dim, **extra)


def build_sd1(seed: int = 0):
    """StableDiffusionPipeline with SD 1.x's UNet structure (4 down blocks x 2 layers, cross
    attention in the first three) at 16 / 32 channels; the tiny SD1.5's VAE and CLIP sizes. The
    last two blocks have equal widths, as SD 1.x's 1280 / 1280: a shortcut convolution in
    `input_blocks.10` would read as the x4 upscaler."""
    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from shared.engine.tiny_families import _clip, _clip_tokenizer, _vae

    torch.manual_seed(seed)
    tok = _clip_tokenizer()
    unet = _sd_unet(32)
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(unet=unet, vae=_vae(4), text_encoder=_clip(tok, False),
                                   tokenizer=tok, scheduler=sched, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def build_sd2(seed: int = 0, v: bool = False):
    """StableDiffusionPipeline as SD 2.x: build_sd1's UNet with linear projections and 1024-wide
    cross attention, a 1024-wide, two-layer CLIPTextModel (OpenCLIP-H's width, a tiny MLP and
    vocabulary), DDIM predicting noise or (`v`) v."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from shared.engine.tiny_families import _clip_tokenizer, _vae

    torch.manual_seed(seed)
    tok = _clip_tokenizer()
    unet = _sd_unet(SD2_WIDTH, use_linear_projection=True)
    te = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=SD2_WIDTH, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id))
    with torch.no_grad():  # as tiny_families._clip: a real CLIP's final norm has a bias
        getattr(te, "text_model", te).final_layer_norm.bias.normal_(0.5, 0.1)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                          prediction_type="v_prediction" if v else "epsilon")
    return StableDiffusionPipeline(unet=unet, vae=_vae(4), text_encoder=te, tokenizer=tok,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_sdxl(seed: int = 0):
    """StableDiffusionXLPipeline: tiny_families.build_sdxl's UNet, a 32-wide CLIP-L and a
    64-wide, ten-layer OpenCLIP-bigG stand-in (cross attention 32 + 64)."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from shared.engine.tiny_families import _clip, _clip_tokenizer, _vae, sdxl_unet

    torch.manual_seed(seed)
    tok = _clip_tokenizer()
    unet = sdxl_unet(32 + 64)
    big = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=37, num_hidden_layers=10,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id))
    with torch.no_grad():  # as tiny_families._clip: a real CLIP's final norm has a bias
        big.text_model.final_layer_norm.bias.normal_(0.5, 0.1)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                   beta_schedule="scaled_linear", timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        unet=unet, vae=_vae(4, scaling_factor=0.13025), scheduler=sched,
        text_encoder=_clip(tok, False), tokenizer=tok, text_encoder_2=big, tokenizer_2=tok)


LDM_BUILDERS = {"sd1": build_sd1, "sd2": build_sd2, "sd2-v": lambda: build_sd2(v=True),
                "sdxl": build_sdxl}

# -- diffusers -> original key names ------------------------------------------------------------
_UNET_PLAIN = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
                "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                "conv_shortcut": "skip_connection"}


def _rename_first(rest: str, table: dict) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_original_keys(sd: dict, config) -> dict:
    """A UNet2DConditionModel's state dict under the LDM names (`input_blocks.N.0` resnets,
    `.1` transformers, `.0.op` downsamplers, `middle_block`, `output_blocks`), no prefix: the
    inverse of diffusers' convert_ldm_unet_checkpoint."""
    per = config["layers_per_block"] + 1  # LDM rows per block: the layers, then a resampler
    out = {}
    for key, value in sd.items():
        m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)"
                     r"\.(\d+)\.(.*)", key)
        mid = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
        if m:
            side, block, part, layer, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
            if side == "down":
                row = 1 + block * per + (config["layers_per_block"] if part == "downsamplers"
                                         else layer)
                name = {"resnets": f"input_blocks.{row}.0.{_rename_first(rest, _UNET_RESNET)}",
                        "attentions": f"input_blocks.{row}.1.{rest}",
                        "downsamplers": f"input_blocks.{row}.0.op.{rest.removeprefix('conv.')}"}
            else:
                row = block * per + (per - 1 if part == "upsamplers" else layer)
                has_attn = any(k.startswith(f"up_blocks.{block}.attentions.") for k in sd)
                name = {"resnets": f"output_blocks.{row}.0.{_rename_first(rest, _UNET_RESNET)}",
                        "attentions": f"output_blocks.{row}.1.{rest}",
                        "upsamplers": f"output_blocks.{row}.{2 if has_attn else 1}.{rest}"}
            out[name[part]] = value
        elif mid:
            part, i, rest = mid[1], int(mid[2]), mid[3]
            out[(f"middle_block.{2 * i}.{_rename_first(rest, _UNET_RESNET)}" if part == "resnets"
                 else f"middle_block.1.{rest}")] = value
        else:
            head, _, param = key.rpartition(".")
            if head not in _UNET_PLAIN:
                raise ValueError(f"no LDM name for UNet key {key!r}")
            out[f"{_UNET_PLAIN[head]}.{param}"] = value
    return out


_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}


def vae_original_keys(sd: dict, config) -> dict:
    """An AutoencoderKL's state dict under the LDM names (`encoder.down.N.block.M`,
    `decoder.up.N` counted from the bottom, `mid.block_1`, `mid.attn_1` with 1x1 convolution
    weights), no prefix: the inverse of diffusers' convert_ldm_vae_checkpoint."""
    n = len(config["up_block_types"])
    out = {}
    for key, value in sd.items():
        coder, _, rest = key.partition(".")
        m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)",
                     rest)
        mid = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", rest)
        if m:
            side, block, part, layer, tail = m[1], int(m[2]), m[3], int(m[4]), m[5]
            row = block if side == "down" else n - 1 - block  # the decoder counts upwards
            if part == "resnets":
                name = f"{side}.{row}.block.{layer}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                name = f"{side}.{row}.{side}sample.{tail}"
        elif mid and mid[1] == "resnets":
            name = f"mid.block_{int(mid[2]) + 1}.{mid[3]}"
        elif mid:
            head, _, tail = mid[3].partition(".")
            tail = tail.removeprefix("0.") if head == "to_out" else tail
            name = f"mid.attn_1.{_VAE_ATTN[head]}.{tail}"
            if head != "group_norm" and value.ndim == 2:
                value = value[:, :, None, None]  # the LDM VAE's attention is 1x1 convolutions
        elif rest.startswith("conv_norm_out."):
            name = "norm_out." + rest.removeprefix("conv_norm_out.")
        else:
            name = rest
        out[f"{coder}.{name}" if coder in ("encoder", "decoder") else key] = value
    return out


def clip_original_keys(sd: dict) -> dict:
    """A transformers CLIPTextModel under OpenAI-CLIP-in-LDM names (`text_model.embeddings...`,
    as in `cond_stage_model.transformer.`); transformers 5 flattens CLIPTextModel's keys."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in sd.items()}


_OPEN_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj":
                    "attn.out_proj", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def open_clip_original_keys(sd: dict) -> dict:
    """A CLIPTextModelWithProjection under OpenCLIP names (`transformer.resblocks.N` with fused
    `attn.in_proj_*`, `positional_embedding`, `text_projection` transposed), no prefix: the
    inverse of diffusers' convert_open_clip_checkpoint. A plain CLIPTextModel (SD 2.x's
    encoder) gets an identity `text_projection`, as real SD 2.x files hold one diffusers
    ignores."""
    import torch

    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {"positional_embedding": sd.pop("embeddings.position_embedding.weight"),
           "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
           "ln_final.weight": sd.pop("final_layer_norm.weight"),
           "ln_final.bias": sd.pop("final_layer_norm.bias")}
    proj = sd.pop("text_projection.weight", None)
    out["text_projection"] = (torch.eye(out["ln_final.weight"].shape[0]) if proj is None
                              else proj.T.contiguous())
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    for i in sorted(layers):
        d, o = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for p in ("weight", "bias"):
            out[f"{o}attn.in_proj_{p}"] = torch.cat(
                [sd.pop(f"{d}self_attn.{x}_proj.{p}") for x in "qkv"])
            for mine, theirs in _OPEN_CLIP_LAYER.items():
                out[f"{o}{theirs}.{p}"] = sd.pop(f"{d}{mine}.{p}")
    if sd:
        raise ValueError(f"no OpenCLIP name for {sorted(sd)}")
    return out


def original_checkpoint(pipe) -> dict:
    """The whole pipeline's weights in one state dict, as an A1111 / Civitai checkpoint:
    SD 1.x `model.diffusion_model.` + `first_stage_model.` + `cond_stage_model.transformer.`;
    SD 2.x the same with its OpenCLIP encoder under `cond_stage_model.model.`; SDXL the same
    UNet / VAE + `conditioner.embedders.0.transformer.` (CLIP-L) +
    `conditioner.embedders.1.model.` (OpenCLIP bigG)."""
    def sd(module):
        return {k: v.detach().contiguous() for k, v in module.state_dict().items()}

    out = {UNET + k: v for k, v in unet_original_keys(sd(pipe.unet), pipe.unet.config).items()}
    out.update({VAE + k: v for k, v in vae_original_keys(sd(pipe.vae), pipe.vae.config).items()})
    xl = getattr(pipe, "text_encoder_2", None) is not None
    if not xl and pipe.text_encoder.config.hidden_size == SD2_WIDTH:  # SD 2.x: OpenCLIP-H
        out.update({SD2_OPEN_CLIP + k: v
                    for k, v in open_clip_original_keys(sd(pipe.text_encoder)).items()})
        return {k: v.contiguous() for k, v in out.items()}
    clip = clip_original_keys(sd(pipe.text_encoder))
    out.update({(SDXL_CLIP if xl else SD1_CLIP) + k: v for k, v in clip.items()})
    if xl:
        out.update({SDXL_OPEN_CLIP + k: v
                    for k, v in open_clip_original_keys(sd(pipe.text_encoder_2)).items()})
    return {k: v.contiguous() for k, v in out.items()}


WEIGHT_PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def write_ldm_single_file(kind: str, models_dir: Path, name: str,
                          folder: Path | None = None) -> Path:
    """A tiny SD 1.x, SD 2.x (`sd2-v`: v-prediction) or SDXL as an all-in-one
    `<models_dir>/<name>.safetensors` in the original layout, plus its configs folder
    `<models_dir>/configs/<repo>/` (families.CONFIG_REPOS `v1` / `v2` / `xl_base`; sd2 and sd2-v
    share one, so one models_dir holds one of them) without the UNet, VAE or text encoder
    weights: they can only come from the file.
    `folder`: the same weights saved as a diffusers folder too."""
    from safetensors.torch import save_file

    from shared.engine.families import CONFIG_REPOS

    if kind not in LDM_BUILDERS:
        raise ValueError(f"unknown LDM tiny family {kind!r}; choices: {', '.join(LDM_BUILDERS)}")
    models_dir = Path(models_dir)
    pipe = LDM_BUILDERS[kind]()
    config = models_dir / "configs" / CONFIG_REPOS[LDM_TYPES[kind]]
    pipe.save_pretrained(config, safe_serialization=True)
    for part in WEIGHT_PARTS:
        for f in (config / part).glob("*.safetensors"):
            f.unlink()
    if folder is not None:
        pipe.save_pretrained(folder, safe_serialization=True)
        (Path(folder) / "SDGATE_TINY").write_text(f"random {kind} weights: draws noise\n")
    out = models_dir / f"{name}.safetensors"
    save_file(original_checkpoint(pipe), str(out))
    return out
