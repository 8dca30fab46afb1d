"""Trains the exported model (model.py beside this file) with torchrun + FSDP2, as `kiln train` does.

Written by `kiln export --target torch` (static: compiler/export/torch/train.py in Kiln). The step is
`kiln train`'s, which is the Hugging Face Trainer's as LLaVA runs it: torch AdamW with the stage's
hyperparameters (--lr overrides), transformers' cosine/linear/constant schedule with warmup (the
first step runs at the rate of schedule step 0), clip_grad_norm_ over the trainable parameters
(--max-grad-norm, default 1.0; 0: none), the logged loss is the step's batch loss before its update.
Data parallel over the processes torchrun starts: each step's batch is split by rows, and each loss
term is normalised by its item count over the whole batch (the loss ops' counts, all-reduced), so
N processes compute the same loss and gradients as one. A step whose loss or gradient norm is not
finite is not applied and training stops (exit 1), as in Kiln.

Checkpoints: --out DIR gets checkpoint-<step>/ every --save-every steps and at the end, in the layout
`kiln train` writes (config.json, model.safetensors under the checkpoint names, optimizer.safetensors
with `adamw.m:<param>` / `adamw.v:<param>`, trainer_state.json), written atomically; --resume
continues from the newest one there, whichever of the two wrote it.

  torchrun --nproc_per_node 8 train.py --checkpoint LLAVA --vision-tower CLIP --batch batch.safetensors --steps 100 --out run
"""
import argparse
import datetime
import json
import math
import os
import re
import shutil
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as exported  # noqa: E402

STEP_DIR = re.compile(r"^checkpoint-(\d+)$")


class UsageError(Exception):
    pass


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", default=exported.DEFAULT_STAGE, help="the spec's training stage (default: %(default)s)")
    ap.add_argument("--checkpoint", help="Hugging Face folder to start from (LLaVA-1.5 layout)")
    ap.add_argument("--vision-tower", help="Hugging Face CLIP folder for the tower")
    ap.add_argument("--batch", required=True, help="safetensors batch (pixel_values, input_ids, labels), repeated every step")
    ap.add_argument("--steps", type=int, required=True, help="optimiser steps")
    ap.add_argument("--lr", type=float, help="base learning rate (default: the stage's)")
    ap.add_argument("--warmup-steps", type=int, help="warmup steps (default: the stage's)")
    ap.add_argument("--warmup-ratio", type=float, help="warmup as ceil(R * steps)")
    ap.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the global gradient 2-norm (0: no clipping)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="out/train", help="checkpoint folder (default: %(default)s)")
    ap.add_argument("--save-every", type=int, default=0, help="a checkpoint every N steps (and one at the end)")
    ap.add_argument("--save-total-limit", type=int, default=3, help="checkpoints kept, newest first")
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out, same flags")
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision (FSDP2 MixedPrecisionPolicy: bf16 compute, f32 parameters, moments and gradient reduction)")
    ap.add_argument("--json", action="store_true", help="one JSON line per step")
    a = ap.parse_args(argv)
    if a.stage not in exported.STAGES and a.stage is not None:
        raise UsageError(f"--stage {a.stage}: no such stage; the model has {', '.join(exported.STAGES) or 'none'}")
    if a.warmup_steps is not None and a.warmup_ratio is not None:
        raise UsageError("--warmup-steps and --warmup-ratio exclude each other: give one")
    if a.steps < 1:
        raise UsageError("--steps must be at least 1")
    if a.max_grad_norm < 0:
        raise UsageError("--max-grad-norm must be >= 0 (0: no clipping)")
    if not os.path.isfile(a.batch):
        raise UsageError(f"--batch {a.batch}: no such file")
    if not a.checkpoint and not a.resume:
        raise UsageError("--checkpoint DIR is required (or --resume): Kiln's initialisation is not reproduced here")
    return a


# ---- the schedule: transformers' lr_lambda, as runtime/optim/schedule.ts ----


def lr_lambda(kind, warmup, total, t):
    if t < warmup:
        return t / max(1, warmup)
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, (total - t) / max(1, total - warmup))
    progress = (t - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def run_settings(a):
    stage = exported.STAGES.get(a.stage) if a.stage is not None else None
    opt = (stage or {}).get("optimizer") or {"name": "adamw", "args": {}}
    if opt["name"] != "adamw":
        raise UsageError(f"stage {a.stage}: optimizer {opt['name']} is not supported (adamw is)")
    args = opt["args"]
    lr = a.lr if a.lr is not None else args.get("lr")
    if lr is None:
        raise UsageError(f"stage {a.stage} gives no learning rate: pass --lr X")
    sched = (stage or {}).get("schedule") or {"name": "constant", "args": {}}
    kind = sched["name"]
    if kind not in ("constant", "cosine", "linear"):
        raise UsageError(f"stage {a.stage}: schedule {kind} is not supported (constant, cosine, linear)")
    ws = sched["args"].get("warmup_steps")
    wr = sched["args"].get("warmup_ratio")
    steps = a.warmup_steps if a.warmup_steps is not None else (ws if a.warmup_ratio is None else None)
    ratio = a.warmup_ratio if a.warmup_ratio is not None else wr
    warmup = steps if steps is not None and steps > 0 else math.ceil(a.steps * (ratio or 0))
    return {
        "lr": lr,
        "schedule": {"kind": kind, "base_lr": lr, "warmup": warmup, "total": a.steps},
        "optimizer": {"name": "adamw", "beta1": args.get("beta1", 0.9), "beta2": args.get("beta2", 0.999), "eps": args.get("eps", 1e-8), "weight_decay": args.get("weight_decay", 0.0)},
        "max_grad_norm": a.max_grad_norm if a.max_grad_norm > 0 else None,
    }


# ---- checkpoints in kiln train's layout (runtime/node/checkpoint.ts) ----


def list_checkpoints(root):
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = STEP_DIR.match(name)
        if m and os.path.exists(os.path.join(root, name, "trainer_state.json")):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return sorted(found)


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def write_checkpoint(root, step, model_tensors, optimizer_tensors, state, keep):
    """Writes checkpoint-<step> into a temporary sibling folder, fsyncs, renames: a kill leaves it absent or whole."""
    from safetensors.torch import save_file

    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"checkpoint-{step}")
    tmp = os.path.join(root, f".checkpoint-{step}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    os.makedirs(tmp)
    files = {
        "config.json": json.dumps(exported.HF_CONFIG, indent=2) + "\n",
        "trainer_state.json": json.dumps(state, indent=2) + "\n",
    }
    for name, text in files.items():
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text)
    save_file(model_tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    save_file(optimizer_tensors, os.path.join(tmp, "optimizer.safetensors"))
    for name in os.listdir(tmp):
        fd = os.open(os.path.join(tmp, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    fsync_dir(tmp)
    if os.path.exists(final):
        old = os.path.join(root, f".checkpoint-{step}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.rename(final, old)
        shutil.rmtree(old)
    os.rename(tmp, final)
    fsync_dir(root)
    for s, path in list_checkpoints(root)[:-keep] if keep > 0 else []:
        old = os.path.join(root, f".checkpoint-{s}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.rename(path, old)
        shutil.rmtree(old)
    return final


def same_run(state, settings, extra, path):
    """--resume continues the run the checkpoint belongs to, as kiln train checks it."""
    theirs_extra = state.get("extra") or {}
    pairs = [
        ("seed", state.get("seed"), extra["seed"]),
        ("schedule", state.get("schedule"), settings["schedule"]),
        ("optimizer", state.get("optimizer"), settings["optimizer"]),
        ("max_grad_norm", state.get("max_grad_norm"), settings["max_grad_norm"]),
        ("max_steps", state.get("max_steps"), extra["max_steps"]),
    ] + [(f"extra.{k}", theirs_extra.get(k), v) for k, v in extra["run"].items()]
    for field, was, now in pairs:
        if not _same_json(was, now):
            raise UsageError(f"{path}: field \"{field}\" is {json.dumps(was)} but this run has {json.dumps(now)}: --resume continues the same run (same flags); start a new --out for other settings")


def _same_json(a, b):
    """JSON equality as kiln train compares it (after a JSON round trip, 12.0 is 12)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)
    return a == b


# ---- the run ----


def init_distributed():
    """torchrun's process group; a plain `python train.py` is a group of one (so one code path)."""
    if "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ.get("MASTER_PORT", "29511")})
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device("cpu")


def term_counts(model, batch, world):
    """Each loss term's item count on this rank's rows and over all ranks (the rows it averages over)."""
    with torch.no_grad():
        local = {k: v.detach().to(torch.float64).reshape(()) for k, v in model.counts(**batch).items()}
    total = {}
    for k in exported.LOSS_WEIGHTS:
        if k not in local:
            if world > 1:
                raise UsageError(f"loss term {k} declares no item count (its op has no `count`), so {world} processes cannot split a batch exactly")
            local[k] = torch.ones((), dtype=torch.float64)
        t = local[k].clone().to(torch.float64)
        dist.all_reduce(t)
        total[k] = t
    return local, total


def main(argv):
    a = parse_args(argv)
    settings = run_settings(a)
    device = init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    from safetensors.torch import load_file
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import distribute_tensor

    torch.manual_seed(a.seed)
    batch_all = load_file(a.batch)
    rows = next(iter(batch_all.values())).shape[0]
    if rows % world != 0:
        raise UsageError(f"--batch {a.batch}: {rows} rows do not split over {world} processes")
    per = rows // world
    batch = {k: v[rank * per : (rank + 1) * per].to(device) for k, v in batch_all.items()}
    run_extra = {
        "config": exported.CONFIG_NAME,
        "stage": a.stage,
        "batch_size": rows,
        "grad_accum": 1,
        "accum_mean_of_means": False,
        "steps_per_epoch": 1,
    }
    extra = {"seed": a.seed, "max_steps": a.steps, "run": run_extra}

    model = exported.Model(stage=a.stage)
    resume_dir = None
    if a.resume:
        found = list_checkpoints(a.out)
        if not found:
            raise UsageError(f"--resume: no checkpoint to resume from in {a.out} (no complete checkpoint-<step> folder)")
        resume_dir = found[-1][1]
        with open(os.path.join(resume_dir, "trainer_state.json")) as f:
            state = json.load(f)
        same_run(state, settings, extra, os.path.join(resume_dir, "trainer_state.json"))
        exported.load_checkpoint(model, resume_dir)
    else:
        exported.load_checkpoint(model, a.checkpoint, a.vision_tower)
    model.to(device)
    # Before sharding: counting reads only the batch (and, in general, whole parameters).
    counts_local, counts_total = term_counts(model, batch, world)
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if a.bf16 else MixedPrecisionPolicy()
    # Each repeated layer is its own FSDP2 unit (gathered for its forward and backward only), then
    # the rest of the model.
    for scope in exported.BLOCKS:
        fully_shard(model.get_submodule(scope), mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    o = settings["optimizer"]
    opt = torch.optim.AdamW([params[n] for n in names], lr=settings["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"], foreach=False)

    start = 0
    history = []
    if resume_dir is not None:
        moments = load_file(os.path.join(resume_dir, "optimizer.safetensors"))
        want = {f"adamw.{w}:{n}" for n in names for w in "mv"}
        extra_state = sorted(set(moments) - want)
        missing = sorted(want - set(moments))
        if missing or extra_state:
            raise UsageError(f"{resume_dir}/optimizer.safetensors: state of another stage or model (missing {missing[:3]}, extra {extra_state[:3]})")
        start = int(state["global_step"])
        history = list(state["log_history"])
        for n in names:
            p = params[n]
            opt.state[p] = {
                "step": torch.tensor(float(start)),
                "exp_avg": distribute_tensor(moments[f"adamw.m:{n}"].to(device), p.device_mesh, p.placements),
                "exp_avg_sq": distribute_tensor(moments[f"adamw.v:{n}"].to(device), p.device_mesh, p.placements),
            }
        if rank == 0:
            print(f"resuming from {resume_dir} (step {start} of {a.steps})", file=sys.stderr)

    weights = exported.LOSS_WEIGHTS

    def save(step):
        full_params = {n: p.full_tensor().detach().to("cpu").contiguous() for n, p in model.named_parameters()}
        moments = {}
        for n in names:
            st = opt.state.get(params[n])
            for w, key in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                moments[f"adamw.{w}:{n}"] = (st[key].full_tensor() if st else torch.zeros(params[n].shape)).detach().to("cpu", torch.float32).contiguous()
        if rank == 0:
            state = {
                "format": "kiln.trainer_state",
                "format_version": 1,
                "seed": a.seed,
                "schedule": settings["schedule"],
                "optimizer": settings["optimizer"],
                "max_grad_norm": settings["max_grad_norm"],
                "max_steps": a.steps,
                "global_step": step,
                "epoch": step,
                "data": {"epoch": step, "position": 0},
                "learning_rate": settings["lr"] * lr_lambda(settings["schedule"]["kind"], settings["schedule"]["warmup"], a.steps, step),
                "log_history": history,
                "extra": {**run_extra, "backend": f"torch {torch.__version__} fsdp2 x{world} {device.type}"},
            }
            write_checkpoint(a.out, step, full_params, moments, state, a.save_total_limit)
        dist.barrier()

    s = settings["schedule"]
    last_saved = start
    for step in range(start + 1, a.steps + 1):
        t0 = time.time()
        lr = settings["lr"] * lr_lambda(s["kind"], s["warmup"], s["total"], step - 1)
        for g in opt.param_groups:
            g["lr"] = lr
        out = model(**batch)
        # The whole batch's loss: each term's sum over this rank's items over all ranks' items.
        # FSDP averages gradients over the ranks, so each rank's share is scaled by the world size.
        local = sum(weights[k] * out["terms"][k] * (counts_local[k] / counts_total[k].clamp(min=1)).to(out["terms"][k].dtype) for k in out["terms"])
        (local * world).backward()
        terms = {}
        for k, v in out["terms"].items():
            t = (v.detach().to(torch.float64) * counts_local[k] / counts_total[k].clamp(min=1)).reshape(1)
            dist.all_reduce(t)
            terms[k] = float(t)
        loss = sum(weights[k] * terms[k] for k in terms)
        trainable = [params[n] for n in names]
        norm = torch.nn.utils.clip_grad_norm_(trainable, settings["max_grad_norm"] or float("inf"))
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            if rank == 0:
                print(f"step {step}: the loss ({loss}) or the gradient norm ({norm}) is not finite; the step is not applied and training stops", file=sys.stderr)
            dist.destroy_process_group()
            return 1
        opt.step()
        opt.zero_grad(set_to_none=True)
        record = {"step": step, "epoch": step - 1, "loss": loss, "terms": terms, "learning_rate": lr, "grad_norm": norm}
        history.append(record)
        if rank == 0:
            if a.json:
                print(json.dumps({"step": step, "loss": loss, "terms": terms, "lr": lr, "grad_norm": norm, "seconds": round(time.time() - t0, 3)}), flush=True)
            else:
                print(f"step {step}/{a.steps}  loss {loss:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in terms.items()) + f"  lr {lr:.3g}  grad_norm {norm:.4f}", flush=True)
        if a.save_every > 0 and step % a.save_every == 0:
            save(step)
            last_saved = step
    if last_saved != a.steps:
        save(a.steps)
    if rank == 0 and a.json:
        print(json.dumps({"summary": {"steps": a.steps, "checkpoint": os.path.join(a.out, f"checkpoint-{a.steps}"), "processes": world}}), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (UsageError, exported.CheckpointError, ValueError) as e:
        # Bad flags exit 2; a bad checkpoint or batch (the model's input checks) exits 1.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UsageError) else 1)
