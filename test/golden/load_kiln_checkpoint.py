#!/usr/bin/env python3
"""PyTorch loads a checkpoint folder Kiln wrote and computes its loss on a golden batch.

Run by hand (the venv of make_golden.py); nothing in the tests runs Python. The output is a JSON
record that a test compares with Kiln: test/golden/kiln_checkpoint/*.json.

    node bin/run-ts.js test/golden/kiln-checkpoint.ts /tmp/kc      # Kiln writes /tmp/kc/checkpoint-0
    /tmp/gvenv/bin/python test/golden/load_kiln_checkpoint.py /tmp/kc/checkpoint-0 \
        --batch test/golden/llama_b2/batch.safetensors > test/golden/kiln_checkpoint/llama_b2.json

What "loads" means here, strictly:
  * config.json through transformers' own config classes: LlamaConfig / MistralConfig
    .from_pretrained(DIR) for the decoder (model_type llava_llama / llava_mistral, as LLaVA-1.5's
    LlavaLlamaConfig subclasses them), CLIPVisionConfig(**config["vision_config"]) for the tower;
    the projector from mm_projector_type / mm_hidden_size, the VM head from vocab_size.
  * model.safetensors through safetensors' safe_open: every tensor goes into exactly one module
    with load_state_dict(strict=True) (no missing or unexpected key in any module), and every
    tensor of the file is used (the script fails otherwise). Names: LLaVA-1.5's
    (model.embed_tokens.weight, model.layers.*, model.norm.weight, lm_head.weight absent when
    tie_word_embeddings, model.mm_projector.{0,2}.*, model.vision_tower.vision_tower.vision_model.*)
    plus vm_head.weight.
Then the golden forward of make_golden.py (CLIP hidden_states[-2] without CLS under no_grad ->
projector -> LLaVA splice -> decoder -> lm CE + vm_weight * KL(batchmean)) in float64.
"""

import argparse
import hashlib
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as G  # noqa: E402

TOWER = "model.vision_tower.vision_tower.vision_model."
PROJECTOR = "model.mm_projector."


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def load(dir_, dtype):
    with open(os.path.join(dir_, "config.json")) as f:
        cfg = json.load(f)
    mistral = cfg["model_type"] == "llava_mistral"
    assert cfg["model_type"] in ("llava_llama", "llava_mistral"), cfg["model_type"]
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["mm_vision_select_feature"] == "patch"
    text_cfg = (MistralConfig if mistral else LlamaConfig).from_pretrained(dir_)
    text_cfg._attn_implementation = "eager"
    text_cfg.use_cache = False
    vcfg = CLIPVisionConfig(**{k: v for k, v in cfg["vision_config"].items() if k != "model_type"})
    with safe_open(os.path.join(dir_, "model.safetensors"), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    used = set()

    def take(prefix, module, drop_prefix=True):
        sd = {}
        for k, v in tensors.items():
            if k.startswith(prefix):
                sd[k[len(prefix):] if drop_prefix else k] = v
                used.add(k)
        module.load_state_dict(sd, strict=True)  # raises on any missing or unexpected key
        return module

    llm = (MistralForCausalLM if mistral else LlamaForCausalLM)(text_cfg)
    llm_sd = {k: v for k, v in tensors.items() if (k.startswith("model.") and not k.startswith(TOWER) and not k.startswith(PROJECTOR)) or k == "lm_head.weight"}
    used.update(llm_sd)
    # Rotary inv_freq is a non-persistent buffer (not in the state dict); a tied LM head is no key.
    missing, unexpected = llm.load_state_dict(llm_sd, strict=False)
    assert not unexpected, unexpected
    if text_cfg.tie_word_embeddings:
        assert missing == ["lm_head.weight"] or not missing, missing
        assert llm.lm_head.weight is llm.model.embed_tokens.weight
    else:
        assert not missing, missing
    clip = take(TOWER, CLIPVisionModel(vcfg))
    H, V = cfg["hidden_size"], cfg["vocab_size"]
    projector = take(PROJECTOR, nn.Sequential(nn.Linear(cfg["mm_hidden_size"], H), nn.GELU(), nn.Linear(H, H)))
    vm_head = nn.Linear(H, V, bias=False)
    vm_head.load_state_dict({"weight": tensors["vm_head.weight"]}, strict=True)
    used.add("vm_head.weight")
    unused = sorted(set(tensors) - used)
    assert not unused, f"tensors no module took: {unused}"
    return cfg, clip.to(dtype).eval(), llm.to(dtype).eval(), projector.to(dtype), vm_head.to(dtype), len(tensors)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir", help="a checkpoint-<step> folder written by Kiln")
    ap.add_argument("--batch", required=True, help="safetensors batch: pixel_values, input_ids, labels")
    ap.add_argument("--vm-weight", type=float, default=1.0)
    args = ap.parse_args()
    transformers.logging.set_verbosity_error()
    dtype = torch.float64
    cfg, clip, llm, projector, vm_head, n = load(args.dir, dtype)
    batch = G.read_st(args.batch)
    V = cfg["vocab_size"]
    with torch.no_grad():
        hs = clip(batch["pixel_values"].to(dtype), output_hidden_states=True).hidden_states
        features = hs[cfg["mm_vision_select_layer"]][:, 1:]
        image = projector(features)
        x, lab, is_image = G.splice(llm.model.embed_tokens, image, batch["input_ids"].long(), batch["labels"].long())
        z = llm(inputs_embeds=x, use_cache=False).logits
        lm = nn.CrossEntropyLoss()(z[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
        sel = is_image[:, 1:]
        w = F.softmax(vm_head(x)[:, 1:][sel], dim=-1)
        vm = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(z[:, :-1][sel], dim=-1), w)
    step = os.path.basename(os.path.normpath(args.dir))
    record = {
        "checkpoint": step,
        "tensors_loaded": n,
        "model_sha256": sha256(os.path.join(args.dir, "model.safetensors")),
        "config_sha256": sha256(os.path.join(args.dir, "config.json")),
        "batch": os.path.relpath(args.batch),
        "vm_weight": args.vm_weight,
        "loss": float(lm + args.vm_weight * vm),
        "terms": {"lm": float(lm), "vm": float(vm)},
        "compute_dtype": "float64",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
