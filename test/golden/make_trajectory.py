#!/usr/bin/env python3
"""Golden training trajectory: K optimiser steps of the Hugging Face Trainer on a golden case.

Run by hand, in the venv of make_golden.py plus `accelerate` (the Trainer needs it):

    /tmp/gvenv/bin/pip install --no-index --find-links /opt/pypi/files --find-links /opt/pypi-more/files \
        --find-links /opt/wheels accelerate
    /tmp/gvenv/bin/python test/golden/make_trajectory.py           # writes test/golden/llama_b2/trajectory{,_wd}.json
    /tmp/gvenv/bin/python test/golden/make_trajectory.py --check   # recomputes, compares, writes nothing

Two runs, each its own file: trajectory.json (weight decay 0) and trajectory_wd.json (weight decay
WD_DECAY, everything else equal), where the Trainer's own parameter groups decide what decays
(Trainer.create_optimizer / get_decay_parameter_names: biases and norm weights are exempt). For
the second, the script also runs the Trainer with every parameter decaying and checks that this
moves some loss term by more than 1e-3 relative, so a Kiln that decays everything fails the 1e-4
test (checks.decay_all_vs_split_max_rel).

What runs: `transformers.Trainer` itself (not a re-implementation of its loop) on llama_b2's
checkpoint and batch, the batch repeated every step (a one-item dataset whose item is the whole
batch), with the finetune stage of models/vwlmm.kiln: the CLIP tower frozen, everything else
trained; torch AdamW (`optim="adamw_torch"`, betas 0.9/0.999, eps 1e-8, weight decay 0),
`lr_scheduler_type="cosine"` (get_cosine_schedule_with_warmup) with warmup 2 of 5 steps,
`max_grad_norm` small enough that clip_grad_norm_ clips on some steps and not others,
`logging_steps=1`. The model is the golden one of make_golden.py (HF CLIPVisionModel,
LlamaForCausalLM, the mlp2x_gelu projector, the VM head; loss = lm + vm_weight * vm) in float64
on the case's float32 values.

Recorded per optimiser step k = 1..K (trajectory.json "steps"), with the Trainer's semantics:
  loss, terms.lm, terms.vm  the loss of the forward pass of step k, i.e. before step k's update
                            (terms are unweighted; recorded from the model's forward in float64,
                            and checked against the Trainer's own logged loss, which it
                            accumulates in a float32 tensor)
  learning_rate             the rate step k's update used: the Trainer logs get_last_lr() after
                            optimizer.step() and before lr_scheduler.step(), so step 1 uses the
                            schedule's step 0, which is 0 under warmup (step 1 then moves no
                            parameter, but AdamW's moments and step count still advance)
  grad_norm                 clip_grad_norm_'s return value: the global L2 norm before clipping
  clipped                   grad_norm > max_grad_norm (then every gradient is scaled by
                            max_grad_norm / (grad_norm + 1e-6), torch's clip_coef)
"final": the loss terms after all K updates, on the same batch (what a checkpoint written at the
end must give). "trainer_log_history": the Trainer's own log records. Checks (exit 1 if off):
the Trainer's logged loss and learning rate equal the recorded ones (float32 rounding of the
loss), the same run in float32 stays within 5e-5 relative of the float64 one in every loss term
and grad_norm (so a float32 implementation can be held to 1e-4; measured 1.8e-5), the learning rates equal the formula
lr * schedule(step - 1), and clipping is active on some steps and not on others.
"""

import argparse
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from transformers import CLIPVisionModel, LlamaForCausalLM, Trainer, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as G  # noqa: E402

CASE = "llama_b2"
K = 5
LR = 1e-3
WARMUP = 2
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY = 0.0
# The weight-decay run: large, so that the exempt parameters (biases, norms) would move the loss
# terms by more than 1e-3 if they decayed too (measured: checks.decay_all_vs_split_max_rel).
WD_DECAY = 5.0
# Pre-clip norms of this case (--norms, no clipping): 15.71, 15.71 (step 2 has step 1's
# parameters: lr 0), 10.04, 20.34, 7.28; with 12, clip_grad_norm_ scales steps 1, 2 and 4 (20.46
# on the clipped trajectory) and leaves 3 and 5 alone.
MAX_GRAD_NORM = 12.0


class GoldenVWLMM(nn.Module):
    """make_golden.hf_run's forward as one module: CLIP tower (frozen, no_grad) -> projector ->
    LLaVA splice -> LLaMA -> lm/vm losses. Parameters keep the LLaVA checkpoint names via
    `llava_state_dict`."""

    def __init__(self, case, case_dir, dtype):
        super().__init__()
        self.case = case
        llava = G.read_llava(os.path.join(case_dir, "llava"))
        self.clip = CLIPVisionModel.from_pretrained(os.path.join(case_dir, "clip"), attn_implementation="eager").to(dtype).eval()
        self.clip.requires_grad_(False)
        self.llm = LlamaForCausalLM(G.text_hf_config(case))
        sd = {k: v for k, v in llava.items() if not k.startswith("model.mm_projector.") and k != "vm_head.weight"}
        missing, unexpected = self.llm.load_state_dict(sd, strict=False)
        assert not unexpected and not [m for m in missing if "rotary" not in m], (missing, unexpected)
        self.llm = self.llm.to(dtype)
        H, V = case["text"]["hidden"], case["text"]["vocab"]
        self.projector = nn.Sequential(nn.Linear(case["vision"]["width"], H), nn.GELU(), nn.Linear(H, H))
        self.projector.load_state_dict({k[len("model.mm_projector."):]: v for k, v in llava.items() if k.startswith("model.mm_projector.")})
        self.projector = self.projector.to(dtype)
        self.vm_head = nn.Linear(H, V, bias=False)
        self.vm_head.load_state_dict({"weight": llava["vm_head.weight"]})
        self.vm_head = self.vm_head.to(dtype)
        self.dtype_ = dtype
        self.last_terms = None

    def train(self, mode=True):
        super().train(mode)
        self.clip.eval()  # LLaVA's tower runs in eval mode under no_grad (no dropout either way)
        return self

    def terms(self, pixel_values, input_ids, labels):
        V = self.case["text"]["vocab"]
        with torch.no_grad():
            out = self.clip(pixel_values.to(self.dtype_), output_hidden_states=True)
            features = out.hidden_states[-2][:, 1:]
        image = self.projector(features)
        x, lab, is_image = G.splice(self.llm.model.embed_tokens, image, input_ids.long(), labels.long())
        z = self.llm(inputs_embeds=x, use_cache=False).logits
        lm = nn.CrossEntropyLoss()(z[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1))
        sel = is_image[:, 1:]
        w = F.softmax(self.vm_head(x)[:, 1:][sel], dim=-1)  # not detached
        vm = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(z[:, :-1][sel], dim=-1), w)
        return lm, vm

    def forward(self, pixel_values, input_ids, labels):
        lm, vm = self.terms(pixel_values, input_ids, labels)
        loss = lm + self.case["vm_weight"] * vm
        self.last_terms = dict(loss=loss.item(), lm=lm.item(), vm=vm.item())
        return {"loss": loss}

    def llava_state_dict(self):
        out = {"model.mm_projector." + k: v for k, v in self.projector.state_dict().items()}
        out["vm_head.weight"] = self.vm_head.weight
        for k, v in self.llm.state_dict().items():
            if "rotary" not in k:
                out[k] = v
        return {k: v.detach() for k, v in out.items()}


class OneBatch(torch.utils.data.Dataset):
    """One item: the whole golden batch (the collator unwraps it), so every step sees it all."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.batch


class RecordTerms(transformers.TrainerCallback):
    """Collects the model's float64 loss terms of each optimiser step's forward pass."""

    def __init__(self, model):
        self.model = model
        self.per_step = []

    def on_step_end(self, args, state, control, **kw):
        self.per_step.append(dict(self.model.last_terms))


class DecayAllTrainer(Trainer):
    """The Trainer with one parameter group: weight decay on every parameter (the check's foil)."""

    def get_decay_parameter_names(self, model):
        return [n for n, _ in model.named_parameters()]


def run(dtype, max_grad_norm=MAX_GRAD_NORM, weight_decay=WEIGHT_DECAY, decay_all=False):
    case = G.CASES[CASE]
    case_dir = os.path.join(G.HERE, CASE)
    torch.manual_seed(0)
    model = GoldenVWLMM(case, case_dir, dtype)
    batch = G.read_st(os.path.join(case_dir, "batch.safetensors"))
    rec = RecordTerms(model)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=K, per_device_train_batch_size=1, gradient_accumulation_steps=1,
            learning_rate=LR, adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS, weight_decay=weight_decay,
            optim="adamw_torch", lr_scheduler_type="cosine", warmup_steps=WARMUP, max_grad_norm=max_grad_norm,
            logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, remove_unused_columns=False,
            dataloader_num_workers=0, seed=0, disable_tqdm=True,
        )
        trainer = (DecayAllTrainer if decay_all else Trainer)(model=model, args=args, train_dataset=OneBatch(batch), data_collator=lambda items: items[0], callbacks=[rec])
        trainer.train()
        history = [h for h in trainer.state.log_history if "loss" in h]
    with torch.no_grad():
        lm, vm = model.terms(batch["pixel_values"], batch["input_ids"], batch["labels"])
    final = dict(loss=float(lm + case["vm_weight"] * vm), terms=dict(lm=float(lm), vm=float(vm)))
    return rec.per_step, history, final, model.llava_state_dict()


def schedule(step):
    """get_cosine_schedule_with_warmup's factor at scheduler step `step` (0-based)."""
    if step < WARMUP:
        return float(step) / float(max(1, WARMUP))
    progress = float(step - WARMUP) / float(max(1, K - WARMUP))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="recompute and compare with the stored file, write nothing")
    ap.add_argument("--norms", action="store_true", help="print the pre-clip norms of an unclipped run (to choose MAX_GRAD_NORM)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    if args.norms:
        _, hist, _, _ = run(torch.float64, max_grad_norm=1e9)
        print([h["grad_norm"] for h in hist])
        return

    failed = False
    for suffix, wd in (("", WEIGHT_DECAY), ("_wd", WD_DECAY)):
        failed |= make(suffix, wd, args.check)
    if failed:
        sys.exit(1)


def make(suffix, weight_decay, check):
    """One trajectory file (trajectory{suffix}.json) for this weight decay; True when a check failed."""
    terms64, hist64, final64, params64 = run(torch.float64, weight_decay=weight_decay)
    terms32, hist32, final32, _ = run(torch.float32, weight_decay=weight_decay)
    case = G.CASES[CASE]
    steps = []
    problems = []
    for k in range(K):
        h = hist64[k]
        t = terms64[k]
        assert h["step"] == k + 1, h
        steps.append(dict(step=k + 1, loss=t["loss"], terms=dict(lm=t["lm"], vm=t["vm"]), learning_rate=h["learning_rate"],
                          grad_norm=float(h["grad_norm"]), clipped=bool(h["grad_norm"] > MAX_GRAD_NORM)))
        if G.rel(h["loss"], t["loss"]) > 1e-6:  # the Trainer sums losses in a float32 tensor
            problems.append(f"step {k + 1}: Trainer logged loss {h['loss']} vs forward {t['loss']}")
        if h["learning_rate"] != LR * schedule(k):
            problems.append(f"step {k + 1}: Trainer lr {h['learning_rate']} vs formula {LR * schedule(k)}")
    clipped = [s["clipped"] for s in steps]
    if all(clipped) or not any(clipped):
        problems.append(f"clipping should be active on some steps only: {clipped}")
    f32_by = {}
    for k in range(K):
        for key in ("lm", "vm"):
            f32_by[f"step {k + 1} {key}"] = G.rel(terms32[k][key], terms64[k][key])
        f32_by[f"step {k + 1} grad_norm"] = G.rel(float(hist32[k]["grad_norm"]), float(hist64[k]["grad_norm"]))
    for key in ("lm", "vm"):
        f32_by[f"final {key}"] = G.rel(final32["terms"][key], final64["terms"][key])
    f32_worst = max(f32_by, key=f32_by.get)
    f32_rel = f32_by[f32_worst]
    if f32_rel > 5e-5:
        problems.append(f"float32 run differs from float64 by {f32_rel:.2e} relative")
    checks = {"float32_vs_float64_max_rel": f32_rel, "float32_vs_float64_worst": f32_worst, "float32_vs_float64": f32_by}
    if weight_decay > 0:
        terms_all, _, final_all, _ = run(torch.float64, weight_decay=weight_decay, decay_all=True)
        by = {f"step {k + 1} {key}": G.rel(terms_all[k][key], terms64[k][key]) for k in range(K) for key in ("lm", "vm")}
        by.update({f"final {key}": G.rel(final_all["terms"][key], final64["terms"][key]) for key in ("lm", "vm")})
        worst_all = max(by, key=by.get)
        checks["decay_all_vs_split_max_rel"] = by[worst_all]
        checks["decay_all_vs_split_worst"] = worst_all
        if by[worst_all] < 1e-3:
            problems.append(f"decaying every parameter moves the terms by only {by[worst_all]:.2e}: the test could not tell the split")

    record = {
        "case": CASE,
        "description": "HF Trainer, K optimiser steps on the case's batch repeated; see make_trajectory.py",
        "kiln_train": ["--config", "tiny", "--stage", "finetune", "--lr", str(LR), "--warmup-steps", str(WARMUP), "--steps", str(K),
                       "--max-grad-norm", str(MAX_GRAD_NORM)] + (["--weight-decay", str(weight_decay)] if weight_decay > 0 else []),
        "hyper": dict(steps=K, lr=LR, schedule="cosine", warmup_steps=WARMUP, beta1=BETAS[0], beta2=BETAS[1], eps=EPS,
                      weight_decay=weight_decay, max_grad_norm=MAX_GRAD_NORM, gradient_accumulation_steps=1,
                      trainable="everything but the CLIP tower (finetune stage)", vm_weight=case["vm_weight"]),
        "steps": steps,
        "final": final64,
        "trainer_log_history": hist64,
        "checks": checks,
        "compute_dtype": "float64 (HF modules cast to float64; float32 weights/inputs)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    path = os.path.join(G.HERE, CASE, f"trajectory{suffix}.json")
    params_path = os.path.join(G.HERE, CASE, f"trajectory{suffix}_params.safetensors")
    if check:
        with open(path) as f:
            old = json.load(f)
        for a, b in zip(old["steps"], steps):
            for key in ("lm", "vm"):
                if G.rel(a["terms"][key], b["terms"][key]) > 1e-9:
                    problems.append(f"stored step {a['step']} {key} {a['terms'][key]} vs recomputed {b['terms'][key]}")
    else:
        G.write_json(path, record)
        G.save_st(params_path, {k: v.to(torch.float32) for k, v in sorted(params64.items())})
    print(f"== trajectory{suffix}.json (weight decay {weight_decay})")
    for s in steps:
        print(f"step {s['step']}: loss {s['loss']:.9f}  lm {s['terms']['lm']:.9f}  vm {s['terms']['vm']:.9f}  "
              f"lr {s['learning_rate']:.3e}  grad_norm {s['grad_norm']:.6f}{'  (clipped)' if s['clipped'] else ''}")
    print(f"final: loss {final64['loss']:.9f}  lm {final64['terms']['lm']:.9f}  vm {final64['terms']['vm']:.9f}")
    print(f"float32 vs float64: max rel {f32_rel:.2e} ({f32_worst})")
    if weight_decay > 0:
        print(f"every parameter decaying vs the Trainer's groups: max rel {checks['decay_all_vs_split_max_rel']:.2e} ({checks['decay_all_vs_split_worst']})")
    if problems:
        print("\n".join(["PROBLEMS:"] + problems))
        return True
    print("all checks passed")
    return False


if __name__ == "__main__":
    main()
