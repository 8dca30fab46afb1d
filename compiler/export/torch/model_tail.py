# ---- parameters and checkpoints (static part of model.py: compiler/export/torch/model_tail.py) ----


class _Scope(nn.Module):
    """One level of the checkpoint-name tree (`model`, `model.layers`, `model.layers.0`, ...).

    A repeated layer's scope is called as a module with its layer function, so module hooks (FSDP2's
    gather before and free after) run around exactly that layer's computation.
    """

    def forward(self, fn, syms, *args):
        return fn(self, syms, *args)


def _register(root, name, param):
    parts = name.split(".")
    node = root
    for part in parts[:-1]:
        child = node._modules.get(part)
        if child is None:
            child = _Scope()
            node.add_module(part, child)
        node = child
    node.register_parameter(parts[-1], param)


def _initialise(p, init, generator=None):
    kind = init[0]
    if p.device.type == "meta":
        return
    if kind == "zeros":
        p.zero_()
    elif kind == "ones":
        p.fill_(1.0)
    elif kind == "normal":
        p.normal_(init[2], init[1], generator=generator)
    elif kind == "uniform":
        p.uniform_(init[1], init[2], generator=generator)
    elif kind == "constant":
        p.fill_(init[1])
    else:
        raise ValueError(f"unknown initialiser {init!r}")


class CheckpointError(Exception):
    """A checkpoint folder that does not fit the model: the message names the folder and tensor."""


def _glob(patterns):
    # `*` matches any run of characters, dots included, as Kiln's `unused` and `buffer` globs.
    rx = [re.compile("^" + ".*".join(re.escape(s) for s in p.split("*")) + "$") for p in patterns]
    return lambda name: any(r.match(name) for r in rx)


def read_folder(folder):
    """Tensors of a Hugging Face folder by name: model.safetensors, or an index and its shards."""
    from safetensors.torch import load_file

    if not os.path.isdir(folder):
        raise CheckpointError(f"{folder}: no such folder")
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: field \"weight_map\" is missing or not an object")
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            path = os.path.join(folder, shard)
            if os.path.basename(shard) != shard or not os.path.exists(path):
                raise CheckpointError(f"{index}: shard {shard!r} named in the index does not exist in {folder}")
            tensors.update(load_file(path))
        missing = [n for n in weight_map if n not in tensors]
        if missing:
            raise CheckpointError(f"{index}: tensor {missing[0]!r}: the index maps it to shard {weight_map[missing[0]]!r}, which has no such tensor")
        return tensors
    if os.path.exists(single):
        return load_file(single)
    raise CheckpointError(f"{folder}: no model.safetensors or model.safetensors.index.json in the folder")


def checkpoint_state(checkpoint_dir, vision_tower_dir=None):
    """The model's state dict from the folders, by the spec's rules; tensors keep their file dtype."""
    state = {}
    origin = {}
    unused = _glob(UNUSED)
    buffers = [(b, _glob([b["pattern"]])) for b in BUFFERS]
    params = {name: shape for name, shape, _d, _i, _p in PARAMS}

    def offer(folder, file_name, name, tensor):
        if name in TIED:
            target = TIED[name]
            if target in state and not torch.equal(state[target].float(), tensor.float()):
                raise CheckpointError(f"{folder}: tensor {file_name!r}: the model ties it to {target!r}, but the two differ")
            return
        for b, match in buffers:
            if match(name) or match(file_name):
                want = torch.tensor(b["values"], dtype=torch.float64)
                got = tensor.to(torch.float64).reshape(-1)
                tol = {torch.float64: 1e-6, torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(tensor.dtype)
                if tol is None or got.shape != want.shape or not bool(((got - want).abs() <= tol * want.abs()).all()):
                    raise CheckpointError(f"{folder}: tensor {file_name!r}: the model computes this buffer as {b['what']}, and the file's values differ")
                return
        if name not in params:
            if unused(file_name) or unused(name):
                return
            raise CheckpointError(f"{folder}: tensor {file_name!r} matches no parameter of the model and no `unused` pattern")
        state[name] = tensor
        origin[name] = folder

    if vision_tower_dir is not None:
        if not CHECKPOINT_SOURCES:
            raise CheckpointError(f"{vision_tower_dir}: vision_tower_dir given, but model {MODEL_NAME} declares no 'checkpoint <sub> from \"<prefix>\"'")
        src = CHECKPOINT_SOURCES[0]
        tower = read_folder(vision_tower_dir)
        # transformers 5 saves a CLIPVisionModel without the `vision_model.` prefix; accept both.
        prefix = src["file_prefix"] if any(n.startswith(src["file_prefix"]) for n in tower) else ""
        for n, t in tower.items():
            if n.startswith(prefix):
                offer(vision_tower_dir, n, src["ckpt_prefix"] + n[len(prefix):], t)
            elif not unused(n):
                raise CheckpointError(f"{vision_tower_dir}: tensor {n!r} matches no parameter of the model and no `unused` pattern")
    main = read_folder(checkpoint_dir)
    for n, t in main.items():
        offer(checkpoint_dir, n, n, t)
    missing = [n for n in params if n not in state]
    if missing:
        hint = ""
        for src in CHECKPOINT_SOURCES:
            if vision_tower_dir is None and any(n.startswith(src["ckpt_prefix"]) for n in missing):
                hint = f"; the {src['path']} parameters ({src['ckpt_prefix']}*) come from their own Hugging Face folder: pass vision_tower_dir"
        raise CheckpointError(f"{checkpoint_dir}: {len(missing)} parameter(s) of the model are not in the checkpoint: {', '.join(missing[:5])}{hint}")
    for name, shape in params.items():
        if tuple(state[name].shape) != tuple(shape):
            raise CheckpointError(f"{origin[name]}: tensor {name!r}: shape {list(state[name].shape)} in the checkpoint, but the model's parameter is {list(shape)}")
    return state


def model_state(model, checkpoint_dir, vision_tower_dir=None):
    """The folders' tensors by the model's parameter names, in its parameters' dtypes (checked as load_checkpoint checks).

    Reads only the files: `model` may live on the meta device or be sharded (FSDP2), so a trainer can
    read the checkpoint on one process and broadcast it into the shards.
    """
    state = checkpoint_state(checkpoint_dir, vision_tower_dir)
    own = dict(model.named_parameters())
    for name, t in state.items():
        if t.dtype.is_floating_point != own[name].dtype.is_floating_point:
            raise CheckpointError(f"{checkpoint_dir}: tensor {name!r}: dtype {t.dtype} cannot be loaded into the model's {own[name].dtype} parameter")
        state[name] = t.to(own[name].dtype)
    return state


def load_checkpoint(model, checkpoint_dir, vision_tower_dir=None):
    """Loads Hugging Face folders into `model` strictly (every parameter, nothing unknown)."""
    model.load_state_dict(model_state(model, checkpoint_dir, vision_tower_dir), strict=True)
    return model
