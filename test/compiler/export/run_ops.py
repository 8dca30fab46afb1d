"""Runs rendered graph functions (compiler/export/torch.ts renderGraphFunction) on stored feeds.

argv[1]: an export folder, whose model.py gives the namespace (torch, F, math, the input checks);
argv[2]: a JSON list of {"function": file, "feeds": safetensors, "params": [names], "inputs":
[names], "names": [one per returned value], "out": safetensors to write}."""
import importlib.util
import json
import sys

import torch
from safetensors.torch import load_file, save_file

spec = importlib.util.spec_from_file_location("exported_model", sys.argv[1] + "/model.py")
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
for job in json.loads(sys.argv[2]):
    ns = dict(vars(model))
    with open(job["function"]) as f:
        exec(compile(f.read(), job["function"], "exec"), ns)
    feeds = load_file(job["feeds"])
    P = {n: feeds[n] for n in job["params"]}
    values = ns["grads"](P, **{n: feeds[n] for n in job["inputs"]})
    save_file({n: v.detach().to(torch.float32).contiguous() for n, v in zip(job["names"], values)}, job["out"])
