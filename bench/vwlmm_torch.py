#!/usr/bin/env python3
"""The PyTorch eager CPU peer of `npm run bench -- --only train_speed` (bench/train-speed.ts runs it).

    python bench/vwlmm_torch.py DIR

DIR (written by the bench) holds job.json (dims, trainable names, lr, AdamW hyperparameters,
passes), params.safetensors (Kiln's parameter names = the LLaVA-1.5 checkpoint names + vm_head)
and batches.safetensors ("<k>.pixel_values", "<k>.input_ids", "<k>.labels"). The model is the
Hugging Face modules as test/golden/make_golden.py runs them (CLIPVisionModel under no_grad,
hidden_states[-2] without the class token; nn.Sequential(Linear, GELU, Linear); LLaVA's splice;
LlamaForCausalLM on inputs_embeds; CE + vm_weight * KL(batchmean) with softmax(vm_head(x)) not
detached), in float32 with the default attention, trained with clip_grad_norm_ and
torch.optim.AdamW, one cold pass over the batches then `steady` passes. Prints one JSON line with
the same fields as bench/train-speed.ts's PeerTiming, plus the FLOPs of one step per length
(torch.utils.flop_counter).
"""

import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

IMAGE_TOKEN = -200
IGNORE = -100
VISION = "model.vision_tower.vision_tower."


def read_st(path):
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def main(d):
    job = json.load(open(os.path.join(d, "job.json")))
    params = read_st(os.path.join(d, "params.safetensors"))
    data = read_st(os.path.join(d, "batches.safetensors"))
    v, t = job["vision"], job["text"]

    clip = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=v["width"], intermediate_size=v["mlp"], num_hidden_layers=v["layersRun"] + 1,
        num_attention_heads=v["heads"], image_size=v["imageSize"], patch_size=v["patch"],
        num_channels=v["channels"], hidden_act="quick_gelu", layer_norm_eps=v["eps"], attention_dropout=0.0))
    # transformers 5.x names CLIPVisionModel's tensors without the vision_model. prefix.
    prefix = VISION if next(iter(clip.state_dict())).startswith("vision_model.") else VISION + "vision_model."
    clip_sd = {k[len(prefix):]: p for k, p in params.items() if k.startswith(prefix)}
    # Layers past the selected one never run (hidden_states[-2]); the spec has them, HF must too.
    missing, unexpected = clip.load_state_dict(clip_sd, strict=False)
    assert not unexpected and not [m for m in missing if "position_ids" not in m], (missing, unexpected)
    clip.eval().requires_grad_(False)

    cfg = LlamaConfig(
        vocab_size=t["vocab"], hidden_size=t["hidden"], intermediate_size=t["ffn"],
        num_hidden_layers=t["layers"], num_attention_heads=t["heads"], num_key_value_heads=t["kvHeads"],
        head_dim=t["headDim"], rms_norm_eps=t["eps"], rope_theta=t["theta"], rope_scaling=None,
        max_position_embeddings=4096, tie_word_embeddings=False, hidden_act="silu", attention_dropout=0.0,
        attention_bias=False, mlp_bias=False, pretraining_tp=1, use_cache=False)
    llm = LlamaForCausalLM(cfg)
    llm_sd = {k: p for k, p in params.items() if k.startswith("model.") and not k.startswith(VISION)
              and not k.startswith("model.mm_projector.")}
    llm_sd["lm_head.weight"] = params["lm_head.weight"]
    missing, unexpected = llm.load_state_dict(llm_sd, strict=False)
    assert not unexpected and not [m for m in missing if "rotary" not in m], (missing, unexpected)
    H, V = t["hidden"], t["vocab"]
    projector = nn.Sequential(nn.Linear(v["width"], H), nn.GELU(), nn.Linear(H, H))
    projector.load_state_dict({k[len("model.mm_projector."):]: p for k, p in params.items() if k.startswith("model.mm_projector.")})
    vm_head = nn.Linear(H, V, bias=False)
    vm_head.load_state_dict({"weight": params["vm_head.weight"]})

    named = {}
    for k, p in llm.named_parameters():
        named[k] = p
    for k, p in projector.named_parameters():
        named["model.mm_projector." + k] = p
    named["vm_head.weight"] = vm_head.weight
    trainable = [named[n] for n in job["trainable"]]
    for p in named.values():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    h = job["hyper"]
    opt = torch.optim.AdamW(trainable, lr=job["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"], weight_decay=h["weightDecay"])

    batches = []
    for k in range(len(job["batches"])):
        batches.append((data[f"{k}.pixel_values"], data[f"{k}.input_ids"].long(), data[f"{k}.labels"].long(), job["batches"][k]))

    def step(pixels, ids, labels):
        with torch.no_grad():
            features = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        image = projector(features)
        P = image.shape[1]
        xs, ls, ms = [], [], []
        for b in range(ids.shape[0]):
            pos = int(torch.nonzero(ids[b] == IMAGE_TOKEN)[0, 0])
            emb = llm.model.embed_tokens
            xs.append(torch.cat([emb(ids[b, :pos]), image[b], emb(ids[b, pos + 1:])], 0))
            ls.append(torch.cat([labels[b, :pos], torch.full((P,), IGNORE, dtype=labels.dtype), labels[b, pos + 1:]]))
            ms.append(torch.cat([torch.zeros(pos, dtype=torch.bool), torch.ones(P, dtype=torch.bool),
                                 torch.zeros(ids.shape[1] - pos - 1, dtype=torch.bool)]))
        x, lab, is_image = torch.stack(xs), torch.stack(ls), torch.stack(ms)
        z = llm(inputs_embeds=x, use_cache=False).logits
        lm = nn.CrossEntropyLoss()(z[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
        sel = is_image[:, 1:]
        w = F.softmax(vm_head(x)[:, 1:][sel], dim=-1)
        vm = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(z[:, :-1][sel], dim=-1), w)
        loss = lm + job["vm_weight"] * vm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, job["max_grad_norm"])
        opt.step()
        return loss.item()

    losses = []
    t0 = time.perf_counter()
    first = None
    for pixels, ids, labels, _ in batches:
        s0 = time.perf_counter()
        losses.append(step(pixels, ids, labels))
        if first is None:
            first = time.perf_counter() - s0
    cold = time.perf_counter() - t0
    step_ms, by_t, tokens = [], {}, 0
    t1 = time.perf_counter()
    for _ in range(job["steady"]):
        for pixels, ids, labels, n in batches:
            s0 = time.perf_counter()
            losses.append(step(pixels, ids, labels))
            ms = (time.perf_counter() - s0) * 1000
            step_ms.append(ms)
            by_t.setdefault(str(ids.shape[1]), []).append(ms)
            tokens += n
    steady = time.perf_counter() - t1
    # The floating-point work of one step per length, as PyTorch counts it (matmuls, attention,
    # convolutions: 2 per multiply-add), after the timed passes so that it cannot slow them.
    flops = {}
    for pixels, ids, labels, _ in batches:
        if str(ids.shape[1]) not in flops:
            with FlopCounterMode(display=False) as fc:
                step(pixels, ids, labels)
            flops[str(ids.shape[1])] = fc.get_total_flops()
    print(json.dumps(dict(
        first_step_ms=round(first * 1000), cold_pass_s=round(cold, 2), compiles=0, compiles_in_steady=0,
        steady_tokens_per_s=round(tokens / steady, 1), steady_step_ms_median=round(median(step_ms), 1),
        step_ms_by_T={k: round(median(v), 1) for k, v in by_t.items()}, flops_by_T=flops, losses=losses,
        threads=torch.get_num_threads(), version=torch.__version__)))


def median(xs):
    xs = sorted(xs)
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


if __name__ == "__main__":
    torch.manual_seed(0)
    main(sys.argv[1])
