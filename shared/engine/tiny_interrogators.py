"""Tiny random-weight interrogator models in the real formats, for tests.

BLIP: BlipForConditionalGeneration with a tiny BlipConfig and a BlipProcessor (a real BERT
WordPiece vocab.txt of a few words plus BLIP's [DEC] start token), saved with save_pretrained.
CLIP: CLIPModel with a tiny CLIPConfig and a CLIPProcessor around the byte-level CLIP tokenizer
the tiny pipeline uses. Both load through `from_pretrained`, as the real weights do. The tagger
is a WD14-layout ONNX file and tag list, run by onnxruntime as real taggers are.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "cat", "dog", "on", "the",
         "table", "photo", "of", "red", "blue", "sitting", "with", "and", "an", "image", "tree"]


def blip(path: Path, seed: int = 0) -> Path:
    """A BLIP captioner folder (config, weights, processor, tokenizer)."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForConditionalGeneration,
                              BlipImageProcessor, BlipProcessor)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tok = BertTokenizer(str(path / "vocab.txt"), do_lower_case=True, model_max_length=64)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    proc = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                         tokenizer=tok)
    text = dict(vocab_size=len(WORDS), hidden_size=32, encoder_hidden_size=32,
                intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=64, bos_token_id=5, pad_token_id=0, sep_token_id=3,
                eos_token_id=3)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(seed)
    BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision,
                                            projection_dim=32)).save_pretrained(str(path))
    proc.save_pretrained(str(path))
    return path


def clip(path: Path, seed: int = 1) -> Path:
    """A CLIP model folder (config, weights, processor with the byte-level tokenizer)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from shared.engine.tiny import build_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(path / "tok")
    text = dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
              ).save_pretrained(str(path))
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}),
                         tokenizer=tok)
    proc.save_pretrained(str(path))
    return path


TAGS = [("1girl", "0"), ("red_background", "0"), ("blue_sky", "0"), ("smile", "0"),
        ("(parody)", "0"), ("green_(color)", "0"), ("artist_name", "1"), ("general", "9")]


def tagger(folder: Path, side: int = 32, seed: int = 2) -> Path:
    """A WD14-layout tagger: model.onnx (NHWC BGR in, sigmoid scores out: mean colour times a
    random matrix) and selected_tags.csv with a rating tag, as SmilingWolf's files are."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((3, len(TAGS))) / 20).astype(np.float32)
    b = (-w.sum(axis=0) * 127.5).astype(np.float32)  # mid-grey scores 0.5: colours decide
    nodes = [helper.make_node("ReduceMean", ["input_1:0"], ["mean"], axes=[1, 2], keepdims=0),
             helper.make_node("MatMul", ["mean", "w"], ["logits0"]),
             helper.make_node("Add", ["logits0", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"])]
    graph = helper.make_graph(
        nodes, "tiny-wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [1, side, side, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT,
                                       [1, len(TAGS)])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    rows = ["tag_id,name,category,count"] + [f"{i},{n},{c},{100 - i}"
                                             for i, (n, c) in enumerate(TAGS)]
    (folder / "selected_tags.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_interrogators(models_dir: Path, with_clip: bool = True) -> Path:
    """BLIP (and CLIP with two category files) under a models folder, as the op reads them."""
    from shared.interrogation import BLIP_DIR, CATEGORIES_DIR, CLIP_DIR, TAGGER_DIR

    models_dir = Path(models_dir)
    blip(models_dir / BLIP_DIR)
    tagger(models_dir / TAGGER_DIR)
    if with_clip:
        clip(models_dir / CLIP_DIR)
        cats = models_dir / CATEGORIES_DIR
        cats.mkdir(parents=True, exist_ok=True)
        (cats / "mediums.txt").write_text("an oil painting\na photograph\na pencil sketch\n")
        (cats / "flavors.top3.txt").write_text("\n".join(
            ["vivid", "muted", "dark", "bright", "grainy", "sharp"]) + "\n")
    return models_dir
