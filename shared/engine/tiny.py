"""A tiny random-weight Stable Diffusion pipeline built from the real diffusers classes.

It draws noise, but it exercises the same `from_pretrained` path, 8x VAE latents, tokenizer and
schedulers as real SD1.5 weights, fast enough to run on a 2-core CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_NAME = "tiny-sd"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_tokenizer(out: Path):
    """A CLIP tokenizer with a byte-level vocabulary and no merges, written to `out`."""
    from transformers import CLIPTokenizer

    out.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = {}
    for c in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(c, len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    # model_max_length=77 as in real SD, or encoding fails.
    tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77)
    tok.save_pretrained(out)
    return tok


def build_components(seed: int = 0, full_res_attention: bool = False) -> dict:
    """The pipeline components with random weights (diffusers' get_dummy_components style).

    `full_res_attention`: attention in the full-resolution blocks (as real SD 1.x has; the
    default tiny UNet has it at half resolution only), where token merging acts."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D") if full_res_attention
        else ("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D") if full_res_attention
        else ("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
    )
    # 4 blocks -> 8x spatial factor, like every real SD VAE.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(8, 8, 16, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=512,
    )
    with tempfile.TemporaryDirectory() as d:
        tokenizer = build_tokenizer(Path(d))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    ))
    # Real CLIP's final layer norm has a bias far from zero, so the hidden states' mean is too;
    # A1111's emphasis restores that mean by dividing by it. Zero-initialised, the tiny model's
    # mean sat near 0 and weighted prompts such as ((red)) blew up to NaN (black images).
    with torch.no_grad():
        getattr(text_encoder, "text_model", text_encoder).final_layer_norm.bias.normal_(0.5, 0.1)
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                scheduler=scheduler, safety_checker=None, feature_extractor=None,
                image_encoder=None)


def build_safety_checker(seed: int = 0):
    """A tiny StableDiffusionSafetyChecker (random CLIP vision tower) and its image processor.

    Its concept thresholds are above any cosine similarity, so it never flags on its own; tests
    lower them (to -2, below any similarity) to make it flag every image.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                         num_hidden_layers=2, vocab_size=99, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                           num_hidden_layers=2, image_size=32, patch_size=4),
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, processor


def write_tiny_model(out: Path, seed: int = 0, full_res_attention: bool = False) -> Path:
    """Save the tiny pipeline to `out` with save_pretrained (diffusers layout)."""
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    checker, processor = build_safety_checker(seed)
    components = {**build_components(seed, full_res_attention), "safety_checker": checker,
                  "feature_extractor": processor}
    pipe = StableDiffusionPipeline(**components, requires_safety_checker=True)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "SDGATE_TINY").write_text("random weights: draws noise, for tests and local runs\n")
    return out


def write_tiny_controlnet(models_dir: Path, name: str = "tiny-cn", seed: int = 1) -> Path:
    """A ControlNet of the tiny model (ControlNetModel.from_unet) under <models_dir>/ControlNet:
    `name/` with save_pretrained and `name-file.safetensors` as one file. Its zero convolutions
    (the hint embedding's last one included) get random weights, or it would change nothing, or
    not depend on the control image."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    models_dir = Path(models_dir)
    unet = UNet2DConditionModel.from_pretrained(models_dir / TINY_NAME / "unet")
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for p in [*net.controlnet_down_blocks.parameters(), *net.controlnet_mid_block.parameters(),
                  *net.controlnet_cond_embedding.conv_out.parameters()]:
            p.normal_(0, 0.5)
    out = models_dir / "ControlNet"
    net.save_pretrained(out / name, safe_serialization=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(out / f"{name}-file.safetensors"))
    return out / name


def write_tiny_ip_adapter(models_dir: Path, name: str = "tiny-ip-adapter", seed: int = 2,
                          model: str = TINY_NAME) -> Path:
    """A random IP-Adapter for a tiny model (`model`'s UNet) in h94/IP-Adapter's layout under
    <models_dir>/IP-Adapter: `image_encoder/` (a tiny CLIPVisionModelWithProjection) and
    `name.safetensors` with the original keys (image_proj.proj / norm, ip_adapter.<n>.to_k_ip /
    to_v_ip for each cross-attention layer, n = 1, 3, 5, ...)."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    models_dir = Path(models_dir)
    unet = UNet2DConditionModel.from_pretrained(models_dir / model / "unet")
    torch.manual_seed(seed)
    embed = 32
    out = models_dir / "IP-Adapter"
    if not (out / "image_encoder" / "config.json").is_file():  # one encoder for every adapter
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            image_size=32, patch_size=4, projection_dim=embed))
        encoder.save_pretrained(out / "image_encoder", safe_serialization=True)
    cross = unet.config.cross_attention_dim
    state = {"image_proj.proj.weight": torch.randn(cross * 4, embed) * 0.5,
             "image_proj.proj.bias": torch.randn(cross * 4) * 0.5,
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for proc, module in _cross_attentions(unet):
        hidden = module.to_q.out_features
        state[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.5
        state[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.5
        key += 2
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / f"{name}.safetensors"))
    return out / f"{name}.safetensors"


def _cross_attentions(unet):
    """(processor name, Attention) of each cross-attention layer, in attn_processors order."""
    modules = dict(unet.named_modules())
    for proc in unet.attn_processors:
        if not proc.endswith("attn1.processor"):
            yield proc, modules[proc.removesuffix(".processor")]
