"""Runs a rendered graph function (compiler/export/torch.ts renderGraphFunction) in the namespace of
an exported model.py on a checkpoint and a batch, and compares its values with a safetensors file
(Kiln's, by name): prints {name: relative Frobenius error} as JSON."""
import argparse
import importlib.util
import json
import sys

import torch
from safetensors.torch import load_file

ap = argparse.ArgumentParser()
ap.add_argument("export")
ap.add_argument("function")
ap.add_argument("--names", required=True, help="JSON list: the name of each returned value")
ap.add_argument("--checkpoint", required=True)
ap.add_argument("--vision-tower")
ap.add_argument("--batch", required=True)
ap.add_argument("--expected", required=True)
a = ap.parse_args()

spec = importlib.util.spec_from_file_location("exported_model", a.export + "/model.py")
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
with open(a.function) as f:
    exec(compile(f.read(), a.function, "exec"), vars(m))
model = m.Model()
m.load_checkpoint(model, a.checkpoint, a.vision_tower)
values = m.graph_values(dict(model.named_parameters()), **load_file(a.batch))
expected = load_file(a.expected)
errors = {}
for name, v in zip(json.loads(a.names), values):
    e = expected[name].to(torch.float64)
    errors[name] = float((v.to(torch.float64) - e).norm() / e.norm().clamp(min=1e-30))
json.dump(errors, sys.stdout)
