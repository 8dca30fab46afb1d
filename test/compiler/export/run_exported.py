"""Runs an exported model.py on a checkpoint and a batch: prints {"loss", "terms"} as JSON and,
with --grads FILE, writes d(loss)/d(param) of every parameter that trains (f32 safetensors)."""
import argparse
import importlib.util
import json
import sys

import torch
from safetensors.torch import load_file, save_file

ap = argparse.ArgumentParser()
ap.add_argument("export")
ap.add_argument("--checkpoint", required=True)
ap.add_argument("--vision-tower")
ap.add_argument("--batch", required=True)
ap.add_argument("--grads")
a = ap.parse_args()

spec = importlib.util.spec_from_file_location("exported_model", a.export + "/model.py")
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
model = m.Model()
m.load_checkpoint(model, a.checkpoint, a.vision_tower)
batch = load_file(a.batch)
r = model(**batch)
if a.grads:
    r["loss"].backward()
    # A trainable parameter the loss does not reach has gradient 0 (Kiln writes zeros too).
    grads = {n: (torch.zeros_like(p) if p.grad is None else p.grad).detach().to(torch.float32).contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(grads, a.grads)
json.dump({"loss": float(r["loss"].detach()), "terms": {k: float(v.detach()) for k, v in r["terms"].items()}}, sys.stdout)
