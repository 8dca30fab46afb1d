#!/usr/bin/env python3
"""Golden files for `kiln loss`: VW-LMM losses and gradients computed with PyTorch + Hugging Face.

Run by hand (never in CI; Kiln itself never depends on Python):

    python3 -m venv /tmp/gvenv
    /tmp/gvenv/bin/pip install --no-index --find-links /opt/pypi/files \
        --find-links /opt/pypi-more/files --find-links /opt/wheels \
        "torch==2.13.0+cpu" "transformers==5.18.0" safetensors numpy
    /tmp/gvenv/bin/python test/golden/make_golden.py            # writes test/golden/<case>/
    /tmp/gvenv/bin/python test/golden/make_golden.py --check    # recompute, compare with the files

Precision: weights, pixels and stored gradients are float32. Weights are drawn in float64 and rounded
to float32 once; the golden forward/backward then runs the Hugging Face modules cast to float64 on
exactly those float32 values. (HF itself still rounds through float32 in a few places even in a
float64 model: LlamaRMSNorm normalises in float32, eager attention does its softmax in float32, and
the rotary cos/sin are computed in float32; so the golden numbers are float32-accurate there, i.e.
~1e-7 relative, far inside the test tolerances.) Three checks run on every case and are recorded in
expected.json under "checks":
  * hf_float32: the same HF forward/backward in float32 (what Kiln's f32 should land near);
  * independent_float64: a from-scratch float64 re-implementation (no HF modules, no nn losses: its
    own CLIP, RMSNorm, rotate_half RoPE, GQA, SwiGLU, explicit cross-entropy and a row-by-row KL);
  * finite_differences: central differences in float64 on the independent implementation, for the
    largest-|grad| entry of several tensors, against the HF autograd gradient.
The script fails (exit 1) when any check is off by more than a tight threshold.

Each case directory holds:
  llava/config.json, llava/model.safetensors (or -0000k-of-0000n shards + model.safetensors.index.json)
  clip/config.json, clip/model.safetensors
  batch.safetensors       pixel_values f32 [B,3,H,W], input_ids i32 [B,T], labels i32 [B,T]
  expected.json           loss, terms (unweighted lm and vm), config, versions, checks
  grads.safetensors       f32 d(total loss)/d(param) for every trainable parameter, checkpoint names
  activations.safetensors f32 intermediates for debugging (see README.md)
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGE_TOKEN = -200
IGNORE = -100
BOS = 1

CASES = {
    # LLaMA (Vicuna-like), no GQA, odd vocab; CLIPVisionModel checkpoint with vision_model.* names.
    "llama_b2": dict(
        arch="llama",
        text=dict(vocab=97, hidden=48, heads=4, kv_heads=4, layers=2, ffn=80, rope_theta=10000.0, eps=1e-5),
        vision=dict(image_size=28, patch=7, width=32, heads=2, layers=3, mlp=64, eps=1e-5),
        clip_layout="vision_model",
        B=2, T=9, image_pos=[2, 2], vm_weight=1.0, shards=1,
        weight_seed=1234, batch_seed=4321,
    ),
    # Mistral with GQA (8 query heads, 2 KV heads), rope theta 1e6; full CLIPModel checkpoint (text
    # tower, logit_scale, projections and int64 position_ids buffers that Kiln must skip); the LLaVA
    # weights sharded in two files with an index.
    "mistral_gqa": dict(
        arch="mistral",
        text=dict(vocab=131, hidden=64, heads=8, kv_heads=2, layers=3, ffn=96, rope_theta=1000000.0, eps=1e-5),
        vision=dict(image_size=30, patch=10, width=24, heads=3, layers=2, mlp=40, eps=1e-5),
        clip_layout="clip_full",
        B=3, T=7, image_pos=[3, 3, 3], vm_weight=1.0, shards=2,
        weight_seed=2024, batch_seed=4202,
    ),
    # Exactly llama_b2's weights (same seed: identical llava/ files, identical CLIP values) but:
    # vm_weight 0.5; B=3 with the placeholder at a different index in each row (1, 2, 4: the spliced
    # length is still T-1+P for every row, so no padding); the CLIP checkpoint as transformers 5.x
    # CLIPVisionModel.save_pretrained writes it, WITHOUT the vision_model. prefix.
    "llama_vmw": dict(
        arch="llama",
        text=dict(vocab=97, hidden=48, heads=4, kv_heads=4, layers=2, ffn=80, rope_theta=10000.0, eps=1e-5),
        vision=dict(image_size=28, patch=7, width=32, heads=2, layers=3, mlp=64, eps=1e-5),
        clip_layout="unprefixed",
        B=3, T=8, image_pos=[1, 2, 4], vm_weight=0.5, shards=1,
        weight_seed=1234, batch_seed=777,
    ),
}
# mistral_gqa's files (same seeds: identical weights, CLIP and batch) with Mistral's sliding window
# of 4 positions: the spliced rows have 15, so the window masks most of each row's past
# (transformers' masking_utils: query i sees keys j with i - 4 < j <= i).
CASES["mistral_swa"] = dict(CASES["mistral_gqa"], sliding_window=4)
# llama_b2's files (same seeds: identical weights, CLIP and batch) as a pseudo-image-feature model
# (the release's vw_pif_arch, config.json architectures vwPifLlamaForCausalLM, model_type "llava" as
# the release's LlavaConfig says): each projector output v enters the decoder as
# softmax(vm_head(v)) @ embed_tokens.weight, and the VM target at image positions is that softmax.
CASES["llama_pif"] = dict(CASES["llama_b2"], pif=True)

# Tiny CLIP text tower for the full-CLIPModel case (its values are irrelevant, Kiln must skip it).
CLIP_TEXT = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                 num_attention_heads=2, max_position_embeddings=12)
CLIP_PROJECTION_DIM = 16

# ----------------------------------------------------------------------------------------------
# Configs


def text_hf_config(case):
    t = case["text"]
    common = dict(
        vocab_size=t["vocab"], hidden_size=t["hidden"], intermediate_size=t["ffn"],
        num_hidden_layers=t["layers"], num_attention_heads=t["heads"], num_key_value_heads=t["kv_heads"],
        head_dim=t["hidden"] // t["heads"], rms_norm_eps=t["eps"], rope_theta=t["rope_theta"],
        rope_scaling=None, max_position_embeddings=64, tie_word_embeddings=False, hidden_act="silu",
        attention_dropout=0.0, bos_token_id=1, eos_token_id=2, pad_token_id=0, use_cache=False,
    )
    if case["arch"] == "llama":
        cfg = LlamaConfig(attention_bias=False, mlp_bias=False, pretraining_tp=1, **common)
    else:
        cfg = MistralConfig(sliding_window=case.get("sliding_window"), **common)
    cfg._attn_implementation = "eager"
    assert cfg.rope_parameters == {"rope_theta": t["rope_theta"], "rope_type": "default"}, cfg.rope_parameters
    return cfg


def llava_config_json(case):
    """config.json in the LLaVA-1.5 release layout (liuhaotian/llava-v1.5-7b style)."""
    t, v = case["text"], case["vision"]
    llama = case["arch"] == "llama"
    cfg = {
        "_name_or_path": "kiln-golden/" + ("vicuna" if llama else "mistral") + "-tiny",
        "architectures": ["LlavaLlamaForCausalLM" if llama else "LlavaMistralForCausalLM"],
        "model_type": "llava_llama" if llama else "llava_mistral",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": t["hidden"],
        "image_aspect_ratio": "pad",
        "initializer_range": 0.02,
        "intermediate_size": t["ffn"],
        "max_length": 64,
        "max_position_embeddings": 64,
        "mm_hidden_size": v["width"],
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        # Relative to this llava/ folder; the real release names a hub id
        # ("openai/clip-vit-large-patch14-336"). Tests should pass the CLIP folder explicitly.
        "mm_vision_tower": "../clip",
        "num_attention_heads": t["heads"],
        "num_hidden_layers": t["layers"],
        "num_key_value_heads": t["kv_heads"],
        "pretraining_tp": 1,
        "rms_norm_eps": t["eps"],
        "rope_scaling": None,
        "rope_theta": t["rope_theta"],
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 64,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float32",
        "transformers_version": transformers.__version__,
        "tune_mm_mlp_adapter": False,
        "tune_mm_vision_resampler": False,
        "unfreeze_mm_vision_tower": False,
        "use_cache": True,
        "use_mm_proj": True,
        "vocab_size": t["vocab"],
    }
    if not llama:
        cfg["sliding_window"] = case.get("sliding_window")
    if case.get("pif"):
        assert llama  # the release has vwPifLlamaForCausalLM only
        cfg["architectures"] = ["vwPifLlamaForCausalLM"]
        cfg["model_type"] = "llava"
    return cfg


def clip_vision_hf_config(case):
    v = case["vision"]
    return CLIPVisionConfig(
        hidden_size=v["width"], intermediate_size=v["mlp"], num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"], image_size=v["image_size"], patch_size=v["patch"],
        num_channels=3, hidden_act="quick_gelu", layer_norm_eps=v["eps"], projection_dim=CLIP_PROJECTION_DIM,
        attention_dropout=0.0,
    )


# ----------------------------------------------------------------------------------------------
# Weights


def init_value(name, shape, g):
    """Random values by tensor name, float64 then rounded to float32. Norm weights 1 + 0.1 randn and
    biases 0.1 randn so every parameter matters; linear weights randn / sqrt(fan_in) so activations and
    logits are O(1) (with 0.02 every softmax is nearly uniform and the losses sit at log(vocab));
    decoder q/k x3 and v/o x1.5, token embeddings 0.5 randn."""
    r = torch.randn(shape, generator=g, dtype=torch.float64)
    base = name.split(".")[-2] if "." in name else name
    if name == "logit_scale":
        v = torch.full(shape, math.log(1 / 0.07), dtype=torch.float64)
    elif name.endswith(".bias"):
        v = 0.1 * r
    elif ("norm" in base or "layrnorm" in base) and name.endswith(".weight"):
        v = 1.0 + 0.1 * r
    elif name.endswith("class_embedding"):
        v = 0.5 * r
    elif "position_embedding" in name:
        v = 0.5 * r
    elif "embed_tokens" in name:
        v = 0.5 * r
    elif "token_embedding" in name:
        v = 0.02 * r
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = r / math.sqrt(fan_in)
        # Decoder attention made sharp enough that the LM term alone notices RoPE layout/theta, the
        # causal mask and the GQA head mapping (measured: each moves a loss term by >= 2e-3 relative).
        if name.startswith("model.layers.") and ("q_proj" in name or "k_proj" in name):
            v = 3.0 * v
        elif name.startswith("model.layers.") and ("v_proj" in name or "o_proj" in name):
            v = 1.5 * v
    else:
        raise ValueError(f"no init rule for {name} {shape}")
    return v.to(torch.float32)


def llava_param_shapes(case):
    """(name, shape) in the LLaVA-1.5 checkpoint naming, in a fixed order."""
    t, v = case["text"], case["vision"]
    H, V, hd = t["hidden"], t["vocab"], t["hidden"] // t["heads"]
    out = [("model.embed_tokens.weight", (V, H))]
    for i in range(t["layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (t["heads"] * hd, H)),
            (p + "self_attn.k_proj.weight", (t["kv_heads"] * hd, H)),
            (p + "self_attn.v_proj.weight", (t["kv_heads"] * hd, H)),
            (p + "self_attn.o_proj.weight", (H, t["heads"] * hd)),
            (p + "mlp.gate_proj.weight", (t["ffn"], H)),
            (p + "mlp.up_proj.weight", (t["ffn"], H)),
            (p + "mlp.down_proj.weight", (H, t["ffn"])),
            (p + "input_layernorm.weight", (H,)),
            (p + "post_attention_layernorm.weight", (H,)),
        ]
    out += [
        ("model.norm.weight", (H,)),
        ("lm_head.weight", (V, H)),
        ("model.mm_projector.0.weight", (H, v["width"])),
        ("model.mm_projector.0.bias", (H,)),
        ("model.mm_projector.2.weight", (H, H)),
        ("model.mm_projector.2.bias", (H,)),
        ("vm_head.weight", (V, H)),
    ]
    return out


def clip_vision_shapes(case):
    v = case["vision"]
    W, M, n_pos = v["width"], v["mlp"], (v["image_size"] // v["patch"]) ** 2 + 1
    out = [
        ("embeddings.class_embedding", (W,)),
        ("embeddings.patch_embedding.weight", (W, 3, v["patch"], v["patch"])),
        ("embeddings.position_embedding.weight", (n_pos, W)),
        ("pre_layrnorm.weight", (W,)),
        ("pre_layrnorm.bias", (W,)),
    ]
    for i in range(v["layers"]):
        p = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out += [(p + f"self_attn.{proj}.weight", (W, W)), (p + f"self_attn.{proj}.bias", (W,))]
        out += [
            (p + "layer_norm1.weight", (W,)), (p + "layer_norm1.bias", (W,)),
            (p + "mlp.fc1.weight", (M, W)), (p + "mlp.fc1.bias", (M,)),
            (p + "mlp.fc2.weight", (W, M)), (p + "mlp.fc2.bias", (W,)),
            (p + "layer_norm2.weight", (W,)), (p + "layer_norm2.bias", (W,)),
        ]
    out += [("post_layernorm.weight", (W,)), ("post_layernorm.bias", (W,))]
    return out


def make_weights(case):
    """Returns (llava tensors by checkpoint name, CLIP vision tensors by unprefixed name)."""
    g = torch.Generator().manual_seed(case["weight_seed"])
    llava = {n: init_value(n, s, g) for n, s in llava_param_shapes(case)}
    clip = {n: init_value(n, s, g) for n, s in clip_vision_shapes(case)}
    return llava, clip


def make_batch(case):
    g = torch.Generator().manual_seed(case["batch_seed"])
    B, T, V = case["B"], case["T"], case["text"]["vocab"]
    S = case["vision"]["image_size"]
    pixel_values = torch.randn((B, 3, S, S), generator=g, dtype=torch.float64).to(torch.float32)
    ids = torch.randint(3, V, (B, T), generator=g, dtype=torch.int64)
    ids[:, 0] = BOS
    labels = torch.full((B, T), IGNORE, dtype=torch.int64)
    for b in range(B):
        pos = case["image_pos"][b]
        assert pos >= 1
        ids[b, pos] = IMAGE_TOKEN
        # The prompt (BOS .. placeholder) is ignored. Row 0: the answer starts right after the image
        # (so the last patch position predicts a real token); other rows: one more prompt token.
        start = pos + 1 if b == 0 else pos + 2
        labels[b, start:] = ids[b, start:]
    # A hole inside an answer.
    labels[B - 1, T - 2] = IGNORE
    return pixel_values, ids.to(torch.int32), labels.to(torch.int32)


# ----------------------------------------------------------------------------------------------
# Writing checkpoints


def save_st(path, tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"format": "pt"})


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def write_llava(case, out_dir, llava):
    d = os.path.join(out_dir, "llava")
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "config.json"), llava_config_json(case))
    if case["shards"] == 1:
        save_st(os.path.join(d, "model.safetensors"), llava)
        return
    # Two shards: embeddings and the first layers, then the rest (as HF splits by size).
    n = case["shards"]
    assert n == 2
    names = list(llava)
    first_rest = case["text"]["layers"] - 1
    split = next(i for i, k in enumerate(names) if k.startswith(f"model.layers.{first_rest}."))
    parts = [names[:split], names[split:]]
    weight_map, total = {}, 0
    for i, part in enumerate(parts):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_st(os.path.join(d, fname), {k: llava[k] for k in part})
        for k in part:
            weight_map[k] = fname
            total += llava[k].numel() * llava[k].element_size()
    write_json(os.path.join(d, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})


def write_clip(case, out_dir, clip):
    d = os.path.join(out_dir, "clip")
    os.makedirs(d, exist_ok=True)
    vcfg = clip_vision_hf_config(case)
    layout = case["clip_layout"]
    if layout in ("vision_model", "unprefixed"):
        vcfg.architectures = ["CLIPVisionModel"]
        vcfg.save_pretrained(d)
        prefix = "vision_model." if layout == "vision_model" else ""
        save_st(os.path.join(d, "model.safetensors"), {prefix + k: v for k, v in clip.items()})
        return
    assert layout == "clip_full"
    cfg = CLIPConfig(text_config=CLIP_TEXT, vision_config=vcfg.to_dict(), projection_dim=CLIP_PROJECTION_DIM)
    cfg.architectures = ["CLIPModel"]
    cfg.save_pretrained(d)
    # The text tower and projections: take the names/shapes from HF's CLIPModel, draw values.
    full = CLIPModel(cfg)
    g = torch.Generator().manual_seed(case["weight_seed"] + 1)
    tensors = {}
    for k, p in full.state_dict().items():
        if k.startswith("vision_model."):
            continue
        tensors[k] = init_value(k, tuple(p.shape), g)
    for k, v in clip.items():
        tensors["vision_model." + k] = v
    # transformers 5.x no longer saves the position_ids buffers (persistent=False), but the released
    # openai/clip-vit-large-patch14-336 checkpoint has them (int64, [1, n]); add them the same way.
    n_pos = (case["vision"]["image_size"] // case["vision"]["patch"]) ** 2 + 1
    tensors["vision_model.embeddings.position_ids"] = torch.arange(n_pos, dtype=torch.int64)[None]
    tensors["text_model.embeddings.position_ids"] = torch.arange(CLIP_TEXT["max_position_embeddings"],
                                                                 dtype=torch.int64)[None]
    save_st(os.path.join(d, "model.safetensors"), dict(sorted(tensors.items())))


def read_st(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def read_llava(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for fn in files:
            out.update(read_st(os.path.join(d, fn)))
        return out
    return read_st(os.path.join(d, "model.safetensors"))


# ----------------------------------------------------------------------------------------------
# The golden forward/backward, with Hugging Face modules


def splice(embeds_fn, image, ids, labels):
    """LLaVA's prepare_inputs_labels_for_multimodal for one image per row: embed the ids before and
    after the placeholder, put the projector outputs in between; labels IGNORE there."""
    rows_x, rows_l, rows_m = [], [], []
    P = image.shape[1]
    for b in range(ids.shape[0]):
        pos = int(torch.nonzero(ids[b] == IMAGE_TOKEN)[0, 0])
        assert int((ids[b] == IMAGE_TOKEN).sum()) == 1
        rows_x.append(torch.cat([embeds_fn(ids[b, :pos]), image[b], embeds_fn(ids[b, pos + 1:])], 0))
        rows_l.append(torch.cat([labels[b, :pos], torch.full((P,), IGNORE, dtype=labels.dtype), labels[b, pos + 1:]]))
        rows_m.append(torch.cat([torch.zeros(pos, dtype=torch.bool), torch.ones(P, dtype=torch.bool),
                                 torch.zeros(ids.shape[1] - pos - 1, dtype=torch.bool)]))
    return torch.stack(rows_x), torch.stack(rows_l), torch.stack(rows_m)


def hf_run(case, case_dir, dtype):
    """Loads the written files, runs the HF forward + backward in `dtype`. Returns dict."""
    llava = read_llava(os.path.join(case_dir, "llava"))
    batch = read_st(os.path.join(case_dir, "batch.safetensors"))
    t = case["text"]

    # Vision tower: from the written CLIP folder, through HF's own loader (checks the layout loads).
    clip = CLIPVisionModel.from_pretrained(os.path.join(case_dir, "clip"), attn_implementation="eager")
    # from_pretrained leaves tensors it did not find randomly initialised: make sure it found them all.
    written = read_st(os.path.join(case_dir, "clip", "model.safetensors"))
    for k, p in clip.state_dict().items():
        src = written.get(k, written.get("vision_model." + k))
        assert src is not None and torch.equal(src, p), f"CLIP tensor {k} not loaded from the file"
    clip = clip.to(dtype).eval()
    clip.requires_grad_(False)

    cfg = text_hf_config(case)
    llm = (LlamaForCausalLM if case["arch"] == "llama" else MistralForCausalLM)(cfg)
    llm_sd = {k: v for k, v in llava.items() if not k.startswith("model.mm_projector.") and k != "vm_head.weight"}
    missing, unexpected = llm.load_state_dict(llm_sd, strict=False)
    assert not unexpected and not [m for m in missing if "rotary" not in m], (missing, unexpected)
    llm = llm.to(dtype).eval()

    V, H = t["vocab"], t["hidden"]
    projector = nn.Sequential(nn.Linear(case["vision"]["width"], H), nn.GELU(), nn.Linear(H, H))
    projector.load_state_dict({k[len("model.mm_projector."):]: v for k, v in llava.items()
                               if k.startswith("model.mm_projector.")})
    projector = projector.to(dtype)
    vm_head = nn.Linear(H, V, bias=False)
    vm_head.load_state_dict({"weight": llava["vm_head.weight"]})
    vm_head = vm_head.to(dtype)

    pixel_values = batch["pixel_values"].to(dtype)
    ids = batch["input_ids"].to(torch.int64)
    labels = batch["labels"].to(torch.int64)

    with torch.no_grad():  # LLaVA's CLIPVisionTower.forward is under no_grad
        out = clip(pixel_values, output_hidden_states=True)
        assert len(out.hidden_states) == case["vision"]["layers"] + 1
        features = out.hidden_states[-2][:, 1:]
    image = projector(features)
    if case.get("pif"):
        # vw_pif_arch.prepare_inputs_labels_for_multimodal: textual_image_score = softmax(vm_head(v)),
        # image_features = einsum("id,bli->bld", embed_tokens, score); the VM target at the image
        # positions is that score (new_textual_image_labels), not detached.
        vm_image = vm_head(image)
        score = F.softmax(vm_image, dim=-1)
        pseudo = torch.einsum("id,bli->bld", llm.model.embed_tokens.weight, score)
        x, lab, is_image = splice(llm.model.embed_tokens, pseudo, ids, labels)
        no_words = lambda i: torch.zeros((len(i), V), dtype=dtype)  # noqa: E731 (ignored positions)
        target, _, _ = splice(no_words, score, ids, labels)
        vm_logits, _, _ = splice(no_words, vm_image, ids, labels)
    else:
        x, lab, is_image = splice(llm.model.embed_tokens, image, ids, labels)
        vm_logits = vm_head(x)
        target = F.softmax(vm_logits, dim=-1)
    z = llm(inputs_embeds=x, use_cache=False).logits
    assert z.dtype == dtype

    lm = nn.CrossEntropyLoss()(z[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
    sel = is_image[:, 1:]
    w = target[:, 1:][sel]  # NOT detached
    vm = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(z[:, :-1][sel], dim=-1), w)
    total = lm + case["vm_weight"] * vm
    total.backward()

    grads = {}
    for k, p in llm.named_parameters():
        grads[k] = p.grad.detach().clone()
    for k, p in projector.named_parameters():
        grads["model.mm_projector." + k] = p.grad.detach().clone()
    grads["vm_head.weight"] = vm_head.weight.grad.detach().clone()
    assert set(grads) == set(llava), set(grads) ^ set(llava)

    # VM loss a second way: row by row, sum_v w (log w - log_softmax z) / rows.
    with torch.no_grad():
        acc, rows = 0.0, 0
        for b in range(x.shape[0]):
            for j in range(x.shape[1] - 1):
                if is_image[b, j + 1]:
                    wj = torch.softmax(vm_logits[b, j + 1].double(), -1)
                    lz = torch.log_softmax(z[b, j].double(), -1)
                    acc += float((wj * (wj.log() - lz)).sum())
                    rows += 1
        vm_rowwise = acc / rows

    acts = dict(
        clip_features=features, projector_out=image.detach(), inputs_embeds=x.detach(),
        logits=z.detach(), vm_logits=vm_logits.detach(),
        spliced_labels=lab.to(torch.int32), is_image=is_image.to(torch.int32),
    )
    return dict(lm=lm.item(), vm=vm.item(), total=total.item(), vm_rowwise=vm_rowwise, grads=grads,
                acts=acts, n_lm=int((lab[:, 1:] != IGNORE).sum()), n_vm=int(sel.sum()), L=x.shape[1])


# ----------------------------------------------------------------------------------------------
# Independent float64 implementation (no HF modules, no nn losses)


def ind_layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def ind_clip_features(case, c, pixels):
    v = case["vision"]
    W, nh = v["width"], v["heads"]
    hd = W // nh
    p = F.conv2d(pixels, c["embeddings.patch_embedding.weight"], stride=v["patch"])  # [B,W,g,g]
    Bn = p.shape[0]
    tok = p.reshape(Bn, W, -1).transpose(1, 2)
    cls = c["embeddings.class_embedding"].reshape(1, 1, W).expand(Bn, 1, W)
    h = torch.cat([cls, tok], 1) + c["embeddings.position_embedding.weight"]
    h = ind_layer_norm(h, c["pre_layrnorm.weight"], c["pre_layrnorm.bias"], v["eps"])
    states = [h]
    for i in range(v["layers"]):
        q = f"encoder.layers.{i}."
        lin = lambda x, n: x @ c[q + n + ".weight"].T + c[q + n + ".bias"]
        a_in = ind_layer_norm(h, c[q + "layer_norm1.weight"], c[q + "layer_norm1.bias"], v["eps"])
        sh = lambda t: t.reshape(Bn, -1, nh, hd).transpose(1, 2)
        Q, K, Vv = sh(lin(a_in, "self_attn.q_proj")), sh(lin(a_in, "self_attn.k_proj")), sh(lin(a_in, "self_attn.v_proj"))
        att = torch.softmax(Q @ K.transpose(-1, -2) / math.sqrt(hd), -1) @ Vv
        h = h + lin(att.transpose(1, 2).reshape(Bn, -1, W), "self_attn.out_proj")
        m_in = ind_layer_norm(h, c[q + "layer_norm2.weight"], c[q + "layer_norm2.bias"], v["eps"])
        f1 = lin(m_in, "mlp.fc1")
        h = h + lin(f1 * torch.sigmoid(1.702 * f1), "mlp.fc2")
        states.append(h)
    return states[len(states) - 2][:, 1:]


def ind_rope(x, theta):
    # x [B, heads, L, hd]; rotate_half layout: pairs (i, i + hd/2).
    L, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def ind_rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def ind_losses(case, W, clip, pixels, ids, labels, pif_target_from_x=False):
    """lm and vm from scratch. pif_target_from_x (a mistake the golden must catch): with pif, take
    the VM target from the sequence the decoder reads instead of the projector outputs."""
    t = case["text"]
    H, V, nh, nkv = t["hidden"], t["vocab"], t["heads"], t["kv_heads"]
    hd = H // nh
    feats = ind_clip_features(case, clip, pixels)
    g1 = feats @ W["model.mm_projector.0.weight"].T + W["model.mm_projector.0.bias"]
    g1 = 0.5 * g1 * (1 + torch.erf(g1 / math.sqrt(2)))
    image = g1 @ W["model.mm_projector.2.weight"].T + W["model.mm_projector.2.bias"]
    embed = lambda i: W["model.embed_tokens.weight"][i]  # noqa: E731
    words_x, lab, is_image = splice(embed, image, ids, labels)
    x = words_x
    if case.get("pif"):
        u_img = image @ W["vm_head.weight"].T
        probs = torch.exp(u_img - torch.logsumexp(u_img, -1, keepdim=True))
        x, _, _ = splice(embed, probs @ W["model.embed_tokens.weight"], ids, labels)
        if pif_target_from_x:
            words_x = x
    Bn, L, _ = x.shape
    h = x
    causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    if case.get("sliding_window"):  # also mask keys j <= i - W: query i keeps its last W positions
        causal = causal | torch.tril(torch.ones(L, L, dtype=torch.bool), -case["sliding_window"])
    for i in range(t["layers"]):
        p = f"model.layers.{i}."
        a = ind_rms(h, W[p + "input_layernorm.weight"], t["eps"])
        Q = (a @ W[p + "self_attn.q_proj.weight"].T).reshape(Bn, L, nh, hd).transpose(1, 2)
        K = (a @ W[p + "self_attn.k_proj.weight"].T).reshape(Bn, L, nkv, hd).transpose(1, 2)
        Vv = (a @ W[p + "self_attn.v_proj.weight"].T).reshape(Bn, L, nkv, hd).transpose(1, 2)
        Q, K = ind_rope(Q, t["rope_theta"]), ind_rope(K, t["rope_theta"])
        K = K.repeat_interleave(nh // nkv, dim=1)  # query head j uses KV head j // (nh/nkv)
        Vv = Vv.repeat_interleave(nh // nkv, dim=1)
        s = (Q @ K.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(causal, float("-inf"))
        att = torch.softmax(s, -1) @ Vv
        h = h + att.transpose(1, 2).reshape(Bn, L, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        m = ind_rms(h, W[p + "post_attention_layernorm.weight"], t["eps"])
        gate = m @ W[p + "mlp.gate_proj.weight"].T
        up = m @ W[p + "mlp.up_proj.weight"].T
        h = h + (gate * torch.sigmoid(gate) * up) @ W[p + "mlp.down_proj.weight"].T
    h = ind_rms(h, W["model.norm.weight"], t["eps"])
    z = h @ W["lm_head.weight"].T
    # LM: explicit mean cross-entropy over non-ignored shifted targets.
    zs, ts = z[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1)
    keep = ts != IGNORE
    lse = torch.logsumexp(zs[keep], -1)
    lm = (lse - zs[keep].gather(1, ts[keep][:, None])[:, 0]).mean()
    # VM: KL(w || softmax z) averaged over the selected rows.
    u = words_x @ W["vm_head.weight"].T
    sel = is_image[:, 1:]
    lw = torch.log_softmax(u[:, 1:][sel], -1)
    lz = torch.log_softmax(z[:, :-1][sel], -1)
    vm = (lw.exp() * (lw - lz)).sum() / sel.sum()
    return lm, vm


def independent_check(case, case_dir, hf, fd_entries=True):
    llava = {k: v.to(torch.float64) for k, v in read_llava(os.path.join(case_dir, "llava")).items()}
    craw = read_st(os.path.join(case_dir, "clip", "model.safetensors"))
    if case["clip_layout"] == "unprefixed":
        clip = {k: v.to(torch.float64) for k, v in craw.items()}
    else:
        clip = {k[len("vision_model."):]: v.to(torch.float64) for k, v in craw.items()
                if k.startswith("vision_model.") and not k.endswith("position_ids")}
    batch = read_st(os.path.join(case_dir, "batch.safetensors"))
    pixels = batch["pixel_values"].to(torch.float64)
    ids, labels = batch["input_ids"].long(), batch["labels"].long()

    params = {k: v.clone().requires_grad_(True) for k, v in llava.items()}
    lm, vm = ind_losses(case, params, clip, pixels, ids, labels)
    total = lm + case["vm_weight"] * vm
    total.backward()
    grad_rel = {}
    for k, p in params.items():
        gh = hf["grads"][k].to(torch.float64)
        grad_rel[k] = float((p.grad - gh).norm() / max(gh.norm(), 1e-30))
    out = dict(lm=lm.item(), vm=vm.item(), total=total.item(),
               max_grad_rel_frobenius=max(grad_rel.values()),
               worst_tensor=max(grad_rel, key=grad_rel.get))
    if not fd_entries:
        return out
    # Central differences in float64 for the largest-|grad| entry of a few tensors.
    last = case["text"]["layers"] - 1
    names = ["vm_head.weight", "lm_head.weight", "model.embed_tokens.weight", "model.mm_projector.0.weight",
             "model.mm_projector.2.bias", "model.layers.0.input_layernorm.weight",
             f"model.layers.{last}.self_attn.k_proj.weight", "model.layers.0.self_attn.q_proj.weight",
             "model.norm.weight", f"model.layers.{last}.mlp.down_proj.weight"]
    fd = []
    with torch.no_grad():
        for n in names:
            gh = hf["grads"][n].to(torch.float64)
            idx = np.unravel_index(int(gh.abs().argmax()), tuple(gh.shape))
            eps = 1e-5 * max(1.0, abs(float(llava[n][idx])))
            vals = []
            for sgn in (1, -1):
                Wp = dict(llava)
                Wp[n] = llava[n].clone()
                Wp[n][idx] += sgn * eps
                a, b = ind_losses(case, Wp, clip, pixels, ids, labels)
                vals.append(float(a + case["vm_weight"] * b))
            num = (vals[0] - vals[1]) / (2 * eps)
            fd.append(dict(tensor=n, index=[int(i) for i in idx], finite_difference=num,
                           hf_autograd=float(gh[idx]), rel_err=abs(num - float(gh[idx])) / abs(float(gh[idx]))))
    out["finite_differences"] = fd
    if case.get("pif"):
        # How far the two ways of getting pif wrong land from the golden terms (relative).
        a, b = ind_losses(case, llava, clip, pixels, ids, labels, pif_target_from_x=True)
        plain = dict(case)
        plain.pop("pif")
        c, d = ind_losses(plain, llava, clip, pixels, ids, labels)
        out["pif_mistakes"] = {
            "vm_target_from_the_pif_sequence": dict(lm=rel(float(a), hf["lm"]), vm=rel(float(b), hf["vm"])),
            "no_pif": dict(lm=rel(float(c), hf["lm"]), vm=rel(float(d), hf["vm"])),
        }
    return out


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


# ----------------------------------------------------------------------------------------------


def case_config(case, hf):
    t, v = case["text"], case["vision"]
    grid = v["image_size"] // v["patch"]
    return {
        "arch": case["arch"],
        "text": dict(vocab=t["vocab"], hidden=t["hidden"], layers=t["layers"], heads=t["heads"],
                     kv_heads=t["kv_heads"], head_dim=t["hidden"] // t["heads"], ffn=t["ffn"],
                     rope_theta=t["rope_theta"], eps=t["eps"], tie_word_embeddings=False,
                     **({"sliding_window": case["sliding_window"]} if "sliding_window" in case else {})),
        "vision": dict(image_size=v["image_size"], patch=v["patch"], channels=3, width=v["width"],
                       layers=v["layers"], heads=v["heads"], head_dim=v["width"] // v["heads"], mlp=v["mlp"],
                       eps=v["eps"], select_layer=-2, grid=grid, patches=grid * grid,
                       checkpoint_layout=case["clip_layout"]),
        "projector_hidden": t["hidden"],
        "batch": dict(B=case["B"], T=case["T"], image_positions=case["image_pos"], spliced_length=hf["L"]),
        "image_token": IMAGE_TOKEN,
        "ignore_index": IGNORE,
        "vm_weight": case["vm_weight"],
        **({"pif": True} if case.get("pif") else {}),
        "lm_targets": hf["n_lm"],
        "vm_rows": hf["n_vm"],
        "llava_shards": case["shards"],
        "compute_dtype": "float64 (HF modules cast to float64; float32 weights/inputs)",
        "grads_dtype": "float32",
    }


def build_case(name, case, write):
    case_dir = os.path.join(HERE, name)
    if write:
        os.makedirs(case_dir, exist_ok=True)
        llava, clip = make_weights(case)
        write_llava(case, case_dir, llava)
        write_clip(case, case_dir, clip)
        pv, ids, labels = make_batch(case)
        save_st(os.path.join(case_dir, "batch.safetensors"),
                dict(pixel_values=pv, input_ids=ids, labels=labels))

    hf = hf_run(case, case_dir, torch.float64)
    hf32 = hf_run(case, case_dir, torch.float32)
    ind = independent_check(case, case_dir, hf)

    g32_rel = max(float((hf32["grads"][k].double() - g.double()).norm() / g.double().norm())
                  for k, g in hf["grads"].items())
    checks = {
        "vm_rowwise": hf["vm_rowwise"],
        "hf_float32": dict(lm=hf32["lm"], vm=hf32["vm"], loss=hf32["total"], max_grad_rel_frobenius=g32_rel),
        "independent_float64": {k: v for k, v in ind.items() if k not in ("finite_differences", "pif_mistakes")},
        "finite_differences": ind["finite_differences"],
        **({"pif_mistakes": ind["pif_mistakes"]} if "pif_mistakes" in ind else {}),
    }
    expected = {
        "loss": hf["total"],
        "terms": {"lm": hf["lm"], "vm": hf["vm"]},
        "config": case_config(case, hf),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "checks": checks,
    }

    problems = []
    if rel(hf["vm_rowwise"], hf["vm"]) > 1e-9:
        problems.append(f"vm rowwise {hf['vm_rowwise']} vs {hf['vm']}")
    for term, a, b in (("lm", ind["lm"], hf["lm"]), ("vm", ind["vm"], hf["vm"]), ("loss", ind["total"], hf["total"])):
        if rel(a, b) > 1e-6:
            problems.append(f"independent {term} {a} vs HF {b}")
    for term, a, b in (("lm", hf32["lm"], hf["lm"]), ("vm", hf32["vm"], hf["vm"])):
        if rel(a, b) > 2e-5:
            problems.append(f"HF float32 {term} {a} vs float64 {b}")
    if ind["max_grad_rel_frobenius"] > 1e-4:
        problems.append(f"independent grads differ: {ind['max_grad_rel_frobenius']} ({ind['worst_tensor']})")
    if g32_rel > 1e-3:
        problems.append(f"HF float32 grads differ: {g32_rel}")
    for e in ind["finite_differences"]:
        if e["rel_err"] > 1e-4:
            problems.append(f"finite difference {e}")
    for mistake, moved in ind.get("pif_mistakes", {}).items():
        if max(moved.values()) < 2e-3:  # ten times the 2e-4 term tolerance: the test would not see it
            problems.append(f"pif mistake {mistake} moves the terms by only {moved}")

    if write:
        write_json(os.path.join(case_dir, "expected.json"), expected)
        save_st(os.path.join(case_dir, "grads.safetensors"),
                {k: v.to(torch.float32) for k, v in sorted(hf["grads"].items())})
        save_st(os.path.join(case_dir, "activations.safetensors"),
                {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in hf["acts"].items()})
    else:
        with open(os.path.join(case_dir, "expected.json")) as f:
            old = json.load(f)
        for term in ("lm", "vm"):
            if rel(hf[term], old["terms"][term]) > 1e-9:
                problems.append(f"stored {term} {old['terms'][term]} vs recomputed {hf[term]}")
        stored = read_st(os.path.join(case_dir, "grads.safetensors"))
        for k, g in hf["grads"].items():
            if not torch.equal(stored[k], g.to(torch.float32)):
                d = float((stored[k].double() - g).norm() / g.norm())
                if d > 1e-6:
                    problems.append(f"stored grad {k} differs by {d}")

    print(f"{name}: loss {hf['total']:.9f}  lm {hf['lm']:.9f}  vm {hf['vm']:.9f}  "
          f"(L={hf['L']}, lm targets {hf['n_lm']}, vm rows {hf['n_vm']})")
    print(f"  f32 HF: lm {hf32['lm']:.9f} vm {hf32['vm']:.9f}  grad rel {g32_rel:.2e};  independent f64: "
          f"lm rel {rel(ind['lm'], hf['lm']):.1e} vm rel {rel(ind['vm'], hf['vm']):.1e} "
          f"grad rel {ind['max_grad_rel_frobenius']:.1e};  FD worst rel "
          f"{max(e['rel_err'] for e in ind['finite_differences']):.1e}")
    return problems


def build_clip_select(write):
    """LLaVA's mm_vision_select_layer as a Python index into CLIPVisionModel's hidden_states.

    llama_b2's 3-layer CLIP and pixels (read, not rewritten); for every index i in -4 .. 3 the
    features LLaVA would take, hidden_states[i][:, 1:], indexed by Python itself (float64 run,
    stored as f32) in clip_select/features.safetensors as `select_<i>`.
    """
    src = os.path.join(HERE, "llama_b2")
    out_dir = os.path.join(HERE, "clip_select")
    clip = CLIPVisionModel.from_pretrained(os.path.join(src, "clip"), attn_implementation="eager")
    clip = clip.to(torch.float64).eval()
    pixels = read_st(os.path.join(src, "batch.safetensors"))["pixel_values"].to(torch.float64)
    with torch.no_grad():
        hs = clip(pixels, output_hidden_states=True).hidden_states
    n = len(hs)
    assert n == CASES["llama_b2"]["vision"]["layers"] + 1
    feats = {f"select_{i}": hs[i][:, 1:].to(torch.float32).contiguous() for i in range(-n, n)}
    problems = []
    for i in range(-n, n):  # Python's negative index is the positive one n + i
        if not torch.equal(feats[f"select_{i}"], feats[f"select_{i % n}"]):
            problems.append(f"select {i} differs from {i % n}")
    for i in range(n - 1):  # each layer changes the features, so a wrong count shows
        if torch.equal(feats[f"select_{i}"], feats[f"select_{i + 1}"]):
            problems.append(f"layers {i} and {i + 1} give the same features")
    path = os.path.join(out_dir, "features.safetensors")
    if write:
        os.makedirs(out_dir, exist_ok=True)
        save_st(path, feats)
    else:
        stored = read_st(path)
        problems += [f"stored {k} differs" for k, v in feats.items() if not torch.equal(stored[k], v)]
    print(f"clip_select: {n} hidden states, indices {-n} .. {n - 1}")
    return [f"clip_select: {p}" for p in problems]


def build_inv_freq(write):
    """The rotary inv_freq buffer older LLaMA checkpoints carry (model.layers.{i}.self_attn.rotary_emb.
    inv_freq, persistent before transformers 4.31), as transformers computes it for llama_b2's decoder
    (head_dim 12, theta 1e4), in inv_freq/llama_b2.safetensors as `inv_freq` (f32 [6])."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
    rotary = LlamaRotaryEmbedding(text_hf_config(CASES["llama_b2"]))
    inv = rotary.inv_freq.to(torch.float32).contiguous()
    path = os.path.join(HERE, "inv_freq", "llama_b2.safetensors")
    problems = []
    if write:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        save_st(path, {"inv_freq": inv})
    elif not torch.equal(read_st(path)["inv_freq"], inv):
        problems.append("inv_freq: stored values differ")
    print(f"inv_freq: {inv.tolist()}")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="recompute from the stored files and compare, write nothing")
    ap.add_argument("cases", nargs="*", help="case names (default: all)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    problems = []
    for name in args.cases or [*CASES, "clip_select", "inv_freq"]:
        if name == "clip_select":
            problems += build_clip_select(write=not args.check)
        elif name == "inv_freq":
            problems += build_inv_freq(write=not args.check)
        else:
            problems += [f"{name}: {p}" for p in build_case(name, CASES[name], write=not args.check)]
    if problems:
        print("\n".join(["PROBLEMS:"] + problems))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
