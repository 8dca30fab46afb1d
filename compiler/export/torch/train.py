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

Data: --data DIR|FILE reads a LLaVA conversation JSON and its image folder through data.py (Kiln's data
pipeline in Python: the same tokenizer, template, labels, truncation and LLaVA image preprocessing, the
same seeded order of batches as `kiln train --data`); --batch FILE repeats one safetensors batch.

Loading: the model is built on the meta device and sharded first; only rank 0 reads the checkpoint
(one copy in host memory) and broadcasts it into the shards (set_model_state_dict with
full_state_dict and broadcast_from_rank0), so N processes on a node do not hold N copies.

  torchrun --nproc_per_node 8 train.py --checkpoint LLAVA --vision-tower CLIP --data llava.json --image-folder IMAGES --out run
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
import data as kdata  # noqa: E402
import model as exported  # noqa: E402

STEP_DIR = re.compile(r"^checkpoint-(\d+)$")


class UsageError(Exception):
    pass


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", default=exported.DEFAULT_STAGE, help="the spec's training stage (default: %(default)s)")
    ap.add_argument("--checkpoint", help="Hugging Face folder to start from (LLaVA-1.5 layout)")
    ap.add_argument("--vision-tower", help="Hugging Face CLIP folder for the tower")
    ap.add_argument("--data", help="LLaVA conversation JSON, or a folder holding one and its images")
    ap.add_argument("--image-folder", help="where the records' images are (default: the JSON's folder)")
    ap.add_argument("--tokenizer", help="folder with tokenizer.json (default: the checkpoint's)")
    ap.add_argument("--template", default="auto", help="vicuna_v1, mistral or auto (default): as kiln train chooses")
    ap.add_argument("--max-length", type=int, default=2048, help="longest sequence after the image splice (default: %(default)s)")
    ap.add_argument("--limit", type=int, help="only records with index < N")
    ap.add_argument("--batch-size", type=int, help="rows per optimiser step over all processes (default: the stage's batch_size, else 8)")
    ap.add_argument("--epochs", type=int, help="epochs (with --data; default: the stage's epochs, else 1)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loader processes per rank (0: in the training process; default: %(default)s)")
    ap.add_argument("--batch", help="safetensors batch (pixel_values, input_ids, labels), repeated every step")
    ap.add_argument("--steps", type=int, help="optimiser steps (with --data: default epochs x steps per epoch)")
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
    if (a.data is None) == (a.batch is None):
        raise UsageError("--data and --batch exclude each other: give one" if a.data else "say what to train on: --data DIR|FILE or --batch FILE")
    if a.batch is not None:
        if a.steps is None:
            raise UsageError("--batch repeats one batch: say how many steps with --steps N")
        for flag in ("image_folder", "tokenizer", "limit", "batch_size", "epochs"):
            if getattr(a, flag) is not None:
                raise UsageError(f"--{flag.replace('_', '-')} is a data pipeline option; it does not apply to --batch FILE")
        if not os.path.isfile(a.batch):
            raise UsageError(f"--batch {a.batch}: no such file")
    if a.steps is not None and a.epochs is not None:
        raise UsageError("--steps and --epochs exclude each other: give one")
    for flag in ("steps", "epochs", "batch_size", "max_length", "limit"):
        v = getattr(a, flag)
        if v is not None and v < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 1")
    if a.workers < 0:
        raise UsageError("--workers must be >= 0")
    if a.max_grad_norm < 0:
        raise UsageError("--max-grad-norm must be >= 0 (0: no clipping)")
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
    warmup = steps if steps is not None and steps > 0 else math.ceil(a.total_steps * (ratio or 0))
    return {
        "lr": lr,
        "schedule": {"kind": kind, "base_lr": lr, "warmup": warmup, "total": a.total_steps},
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


def write_checkpoint(root, step, model_tensors, optimizer_tensors, state, keep, extra_files=None):
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
    for name, data in (extra_files or {}).items():
        with open(os.path.join(tmp, name), "wb") as f:
            f.write(data)
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
    """Each loss term's item count on this rank's rows and over all ranks (the rows it averages over).

    The counts read only the batch (labels, the image placeholders), never a parameter, so they
    run on the sharded model without gathering anything.
    """
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


# ---- batches: one repeated file, or the data pipeline (data.py) ----


class RepeatedBatch:
    """--batch FILE: the same rows every step; this rank's share of them."""

    def __init__(self, path, rank, world):
        from safetensors.torch import load_file

        batch = load_file(path)
        rows = next(iter(batch.values())).shape[0]
        if rows % world != 0:
            raise UsageError(f"--batch {path}: {rows} rows do not split over {world} processes")
        per = rows // world
        self.local = {k: v[rank * per : (rank + 1) * per] for k, v in batch.items()}
        self.batch_size = rows
        self.steps_per_epoch = 1

    def epoch_of(self, t):
        return t

    def batches(self, start, stop, workers):
        for _t in range(start, stop):
            yield self.local


class _Steps(torch.utils.data.Dataset):
    """Step t's batch for one rank, made in a loader process; an error comes back as a value (its message intact)."""

    def __init__(self, source, start, stop):
        self.source, self.start, self.stop = source, start, stop

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, i):
        try:
            return self.source.local_batch(self.start + i)
        except kdata.DataError as e:
            return {"error": str(e)}


class _ScanChunks(torch.utils.data.Dataset):
    def __init__(self, pipe, size=512):
        self.pipe, self.size = pipe, size

    def __len__(self):
        return -(-len(self.pipe.records) // self.size)

    def __getitem__(self, i):
        return self.pipe.scan(range(i * self.size, min((i + 1) * self.size, len(self.pipe.records))))


class DataBatches:
    """--data: the records `kiln train --data` uses, in its order (data.py), each step's rows split over the ranks.

    Rank 0 tokenises every record once to learn which make a sample (the text alone decides it;
    images are read when their batch is made) and broadcasts the list; each rank then makes only
    its own rows, in --workers loader processes.
    """

    def __init__(self, a, rank, world, workers):
        folder = a.tokenizer or (a.checkpoint if a.checkpoint and os.path.isfile(os.path.join(a.checkpoint, "tokenizer.json")) else None)
        if folder is None:
            raise UsageError("--data needs a tokenizer: --tokenizer DIR, or a --checkpoint folder with tokenizer.json (kiln train writes its tokenizer into its checkpoints; `kiln data --save-tokenizer DIR` writes the vocabulary Kiln builds from the data)")
        self.tokenizer_dir = folder
        tok = kdata.Tokenizer(folder)
        dc = exported.DATA_CONFIG
        if dc["image_size"] is None or dc["image_tokens"] is None:
            raise UsageError(f"--data: the model's config {exported.CONFIG_NAME} has no vision.image_size / vision.patches")
        if dc["vocab"] is not None and tok.vocab_size > dc["vocab"]:
            raise kdata.DataError(f"{folder}: the tokenizer has {tok.vocab_size} ids but the model's vocabulary (text.vocab) is {dc['vocab']}")
        template = kdata.choose_template(a.template, a.checkpoint, tok, exported.CONFIG_NAME)
        self.pipe = kdata.Pipeline(a.data, tok, template, dc["image_size"], dc["image_tokens"], a.max_length, a.image_folder, a.limit)
        # Rank 0's verdict, an error included, reaches every rank (none waits for a scan that failed).
        box = [None]
        if rank == 0:
            try:
                box[0] = ("ok", self._scan(workers))
            except kdata.DataError as e:
                box[0] = ("error", str(e))
        dist.broadcast_object_list(box, src=0)
        if box[0][0] == "error":
            raise kdata.DataError(box[0][1])
        self.used = box[0][1]
        stage = exported.STAGES.get(a.stage) or {}
        self.batch_size = a.batch_size or (stage.get("settings") or {}).get("batch_size") or 8
        if self.batch_size % world != 0:
            raise UsageError(f"--batch-size {self.batch_size} does not split over {world} processes")
        self.per = self.batch_size // world
        self.rank, self.seed = rank, a.seed
        self.steps_per_epoch = len(self.used) // self.batch_size
        if self.steps_per_epoch == 0:
            raise kdata.DataError(f"the data has {len(self.used)} usable samples, fewer than one batch of {self.batch_size} (--batch-size)")
        self._order = None

    def _scan(self, workers):
        pipe = self.pipe
        if workers > 0 and len(pipe.records) > 512:
            loader = torch.utils.data.DataLoader(_ScanChunks(pipe), batch_size=None, num_workers=workers, collate_fn=_as_is)
            results = [r for part in loader for r in part]
        else:
            results = pipe.scan()
        counts = {"used": 0, "too_long": 0, "all_masked": 0, "truncated": 0}
        used = []
        for i, status, _reason in results:
            counts[status] += 1
            if status in ("used", "truncated"):
                used.append(i)
        text_only = [pipe.records[i] for i in used if pipe.records[i]["image"] is None]
        if text_only:
            r = text_only[0]
            raise kdata.DataError(f"{len(text_only)} records have no image (record {r['index']}, id {r['id']}, is the first): the model's splice takes one image per row, and training on text-only rows is not supported yet")
        print(
            f"data: {len(pipe.records) + len(pipe.malformed)} records: {len(used)} used, {len(pipe.malformed)} malformed, {counts['all_masked']} with every label masked (left out), "
            f"{counts['too_long']} too long (left out), {counts['truncated']} truncated; template {pipe.template}, tokenizer {pipe.tok.folder}",
            file=sys.stderr,
        )
        return used

    def epoch_of(self, t):
        return t // self.steps_per_epoch

    def local_batch(self, t):
        """Rows of 0-based step t for this rank: kiln train's SampleBatches order, this rank's slice."""
        epoch, k = divmod(t, self.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, kdata.epoch_order(len(self.used), self.seed, epoch))
        rows = self._order[1][k * self.batch_size : (k + 1) * self.batch_size]
        mine = rows[self.rank * self.per : (self.rank + 1) * self.per]
        batch = kdata.collate([self.pipe.sample(self.used[r]) for r in mine], self.pipe.tok.pad_id, self.pipe.image_size)
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def batches(self, start, stop, workers):
        loader = torch.utils.data.DataLoader(_Steps(self, start, stop), batch_size=None, num_workers=workers, collate_fn=_as_is, prefetch_factor=2 if workers > 0 else None)
        for b in loader:
            if "error" in b:
                raise kdata.DataError(b["error"])
            yield b


def main(argv):
    a = parse_args(argv)
    device = init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    from safetensors import safe_open
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    from torch.distributed.tensor import distribute_tensor

    torch.manual_seed(a.seed)
    # The data first, so bad data fails before weights are read.
    if a.batch is not None:
        source = RepeatedBatch(a.batch, rank, world)
        a.total_steps = a.steps
    else:
        source = DataBatches(a, rank, world, a.workers)
        stage = exported.STAGES.get(a.stage) or {}
        a.total_steps = a.steps or (a.epochs or (stage.get("settings") or {}).get("epochs") or 1) * source.steps_per_epoch
    settings = run_settings(a)
    total = a.total_steps
    run_extra = {
        "config": exported.CONFIG_NAME,
        "stage": a.stage,
        "batch_size": source.batch_size,
        "grad_accum": 1,
        "accum_mean_of_means": False,
        "steps_per_epoch": source.steps_per_epoch,
    }
    extra = {"seed": a.seed, "max_steps": total, "run": run_extra}

    resume_dir = None
    if a.resume:
        found = list_checkpoints(a.out)
        if not found:
            raise UsageError(f"--resume: no checkpoint to resume from in {a.out} (no complete checkpoint-<step> folder)")
        resume_dir = found[-1][1]
        with open(os.path.join(resume_dir, "trainer_state.json")) as f:
            state = json.load(f)
        same_run(state, settings, extra, os.path.join(resume_dir, "trainer_state.json"))

    # Built on the meta device (no memory), sharded, then filled: rank 0 reads the checkpoint and
    # broadcasts it, each rank keeping its shards. Each repeated layer is its own FSDP2 unit
    # (gathered for its forward and backward only), then the rest of the model.
    model = exported.Model(stage=a.stage, device="meta")
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if a.bf16 else MixedPrecisionPolicy()
    for scope in exported.BLOCKS:
        fully_shard(model.get_submodule(scope), mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    model.to_empty(device=device)
    full = {}
    if rank == 0:
        full = exported.model_state(model, resume_dir, None) if resume_dir else exported.model_state(model, a.checkpoint, a.vision_tower)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True))
    del full
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    o = settings["optimizer"]
    opt = torch.optim.AdamW([params[n] for n in names], lr=settings["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"], weight_decay=o["weight_decay"], foreach=False)

    start = 0
    history = []
    if resume_dir is not None:
        path = os.path.join(resume_dir, "optimizer.safetensors")
        keys = [None]
        if rank == 0:
            with safe_open(path, framework="pt") as f:
                keys[0] = sorted(f.keys())
        dist.broadcast_object_list(keys, src=0)
        want = {f"adamw.{w}:{n}" for n in names for w in "mv"}
        extra_state = sorted(set(keys[0]) - want)
        missing = sorted(want - set(keys[0]))
        if missing or extra_state:
            raise UsageError(f"{path}: state of another stage or model (missing {missing[:3]}, extra {extra_state[:3]})")
        start = int(state["global_step"])
        history = list(state["log_history"])
        # Rank 0 reads one moment at a time and distribute_tensor scatters it from there (the
        # other ranks pass an empty tensor of the shape).
        with (safe_open(path, framework="pt") if rank == 0 else _nothing()) as f:
            for n in names:
                p = params[n]
                moment = {}
                for w, key in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                    t = f.get_tensor(f"adamw.{w}:{n}").to(device, p.dtype) if rank == 0 else torch.empty(p.shape, dtype=p.dtype, device=device)
                    moment[key] = distribute_tensor(t, p.device_mesh, p.placements, src_data_rank=0)
                opt.state[p] = {"step": torch.tensor(float(start)), **moment}
        if rank == 0:
            print(f"resuming from {resume_dir} (step {start} of {total})", file=sys.stderr)

    weights = exported.LOSS_WEIGHTS
    tokenizer_files = _tokenizer_files(source)

    def save(step):
        # One tensor at a time: each is gathered (a collective every rank joins, in the same
        # order), and only rank 0 keeps a host copy to write.
        full_params, moments = {}, {}
        for n, p in model.named_parameters():
            t = p.full_tensor().detach()
            if rank == 0:
                full_params[n] = t.to("cpu").contiguous()
            del t
        for n in names:
            st = opt.state.get(params[n])
            for w, key in (("m", "exp_avg"), ("v", "exp_avg_sq")):
                t = st[key].full_tensor() if st else torch.zeros(params[n].shape)
                if rank == 0:
                    moments[f"adamw.{w}:{n}"] = t.detach().to("cpu", torch.float32).contiguous()
                del t
        if rank == 0:
            spe = source.steps_per_epoch
            state = {
                "format": "kiln.trainer_state",
                "format_version": 1,
                "seed": a.seed,
                "schedule": settings["schedule"],
                "optimizer": settings["optimizer"],
                "max_grad_norm": settings["max_grad_norm"],
                "max_steps": total,
                "global_step": step,
                "epoch": step / spe,
                "data": {"epoch": step // spe, "position": step % spe},
                "learning_rate": settings["lr"] * lr_lambda(settings["schedule"]["kind"], settings["schedule"]["warmup"], total, step),
                "log_history": history,
                "extra": {**run_extra, "backend": f"torch {torch.__version__} fsdp2 x{world} {device.type}"},
            }
            write_checkpoint(a.out, step, full_params, moments, state, a.save_total_limit, tokenizer_files)
        dist.barrier()

    s = settings["schedule"]
    last_saved = start
    step = start
    for batch in source.batches(start, total, a.workers):
        step += 1
        t0 = time.time()
        batch = {k: v.to(device) for k, v in batch.items()}
        counts_local, counts_total = term_counts(model, batch, world)
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
        record = {"step": step, "epoch": source.epoch_of(step - 1), "loss": loss, "terms": terms, "learning_rate": lr, "grad_norm": norm}
        history.append(record)
        if rank == 0:
            if a.json:
                print(json.dumps({"step": step, "loss": loss, "terms": terms, "lr": lr, "grad_norm": norm, "seconds": round(time.time() - t0, 3)}), flush=True)
            else:
                print(f"step {step}/{total}  loss {loss:.4f}  " + "  ".join(f"{k} {v:.4f}" for k, v in terms.items()) + f"  lr {lr:.3g}  grad_norm {norm:.4f}", flush=True)
        if a.save_every > 0 and step % a.save_every == 0:
            save(step)
            last_saved = step
    if last_saved != total:
        save(total)
    if rank == 0 and a.json:
        print(json.dumps({"summary": {"steps": total, "checkpoint": os.path.join(a.out, f"checkpoint-{total}"), "processes": world}}), flush=True)
    dist.destroy_process_group()
    return 0


def _as_is(x):
    return x


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _tokenizer_files(source):
    """The tokenizer's files, copied into each checkpoint as kiln train copies them."""
    folder = getattr(source, "tokenizer_dir", None)
    out = {}
    if folder is None:
        return out
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "chat_template.jinja"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[name] = f.read()
    return out


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (UsageError, exported.CheckpointError, kdata.DataError, ValueError) as e:
        # Bad flags exit 2; a bad checkpoint or batch (the model's input checks) exits 1.
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, UsageError) else 1)
