"""Greedy generation golden: PyTorch + Hugging Face transformers decode each golden checkpoint
(make_golden.py's llama_b2, mistral_gqa, mistral_swa, llama_pif) from row 0 of its batch, with the model's
own KV cache (past_key_values, as generate() uses it; Mistral's sliding window applies to the
cache as transformers applies it), and record per step the chosen token and the top-1 minus
top-2 logit, so a near-tie is visible. Writes test/golden/generate.json. No end-of-sequence stop:
every case runs STEPS steps. llama_pif is llama_b2's checkpoint as a pseudo-image-feature model:
each projector output v enters the decoder as softmax(vm_head(v)) @ embed_tokens.weight (the
release's vw_pif_arch einsum "id,bli->bld", as make_golden.py computes the pif loss); the decode
steps after the prompt are plain token steps.

    /tmp/gvenv/bin/python test/golden/make_generate.py
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden import CASES, HERE, IMAGE_TOKEN, read_llava, read_st, text_hf_config  # noqa: E402
from transformers import CLIPVisionModel, LlamaForCausalLM, MistralForCausalLM  # noqa: E402

STEPS = 8


def generate(name):
    case = CASES[name]
    d = os.path.join(HERE, name)
    llava = read_llava(os.path.join(d, "llava"))
    batch = read_st(os.path.join(d, "batch.safetensors"))
    clip = CLIPVisionModel.from_pretrained(os.path.join(d, "clip"), attn_implementation="eager").eval()
    llm = (LlamaForCausalLM if case["arch"] == "llama" else MistralForCausalLM)(text_hf_config(case))
    llm_sd = {k: v for k, v in llava.items() if not k.startswith("model.mm_projector.") and k != "vm_head.weight"}
    missing, unexpected = llm.load_state_dict(llm_sd, strict=False)
    assert not unexpected and not [m for m in missing if "rotary" not in m], (missing, unexpected)
    llm = llm.eval()
    H = case["text"]["hidden"]
    projector = nn.Sequential(nn.Linear(case["vision"]["width"], H), nn.GELU(), nn.Linear(H, H))
    projector.load_state_dict({k[len("model.mm_projector."):]: v for k, v in llava.items() if k.startswith("model.mm_projector.")})

    ids = batch["input_ids"][0].to(torch.int64)  # row 0, the whole row (the golden batches have no padding)
    with torch.no_grad():
        feats = clip(batch["pixel_values"][:1], output_hidden_states=True).hidden_states[-2][:, 1:]
        image = projector(feats)[0]
        if case.get("pif"):
            score = F.softmax(image @ llava["vm_head.weight"].T, dim=-1)
            image = torch.einsum("id,li->ld", llm.model.embed_tokens.weight, score)
        pos = int(torch.nonzero(ids == IMAGE_TOKEN)[0, 0])
        emb = llm.model.embed_tokens
        x = torch.cat([emb(ids[:pos]), image, emb(ids[pos + 1:])], 0)[None]
        out = llm(inputs_embeds=x, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1]
        tokens, margins = [], []
        for step in range(STEPS):
            top = torch.topk(logits, 2)
            tok = int(top.indices[0])
            tokens.append(tok)
            margins.append(float(top.values[0] - top.values[1]))
            if step + 1 == STEPS:
                break
            out = llm(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1]
    return dict(prompt_length=int(x.shape[1]), tokens=tokens, margins=margins)


def main():
    torch.manual_seed(0)
    result = {"transformers": __import__("transformers").__version__, "torch": torch.__version__, "steps": STEPS, "cases": {}}
    for name in ["llama_b2", "mistral_gqa", "mistral_swa", "llama_pif"]:
        result["cases"][name] = generate(name)
        print(name, result["cases"][name])
    with open(os.path.join(HERE, "generate.json"), "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
