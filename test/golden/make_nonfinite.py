"""NaN / inf behaviour of PyTorch for the ops Kiln implements: writes nonfinite_ops.json.

Each case is one Kiln op on small inputs holding NaN, +inf or -inf, with the op's output and the
gradient of sum(output * cotangent) with respect to every float input, as torch computes them
(float32, CPU). test/compiler/ops/nonfinite.test.ts runs each case through Kiln's reference and
through its WebGPU kernels and expects the same values, NaN for NaN and inf for inf.

Run by hand (see README.md in this folder for the venv); the output is deterministic:
    /tmp/gvenv/bin/python test/golden/make_nonfinite.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
NAN = float("nan")
INF = float("inf")


def enc(values):
    out = []
    for v in values:
        v = float(v)
        out.append("nan" if math.isnan(v) else "inf" if v == INF else "-inf" if v == -INF else v)
    return out


CASES = []


def case(name, op, attrs, inputs, fn, grad=True):
    """inputs: list of (kiln input name, dtype, tensor); fn maps the torch tensors to the output."""
    ts = []
    for _, dtype, t in inputs:
        if dtype == "f32":
            t = t.detach().clone().float().requires_grad_(grad)
        ts.append(t)
    y = fn(*ts)
    entry = {
        "name": name,
        "op": op,
        "attrs": attrs,
        "inputs": [{"name": n, "dtype": d, "shape": list(t.shape), "data": enc(t.flatten().tolist())} for (n, d, _), t in zip(inputs, ts)],
        "output": {"shape": list(y.shape), "data": enc(y.detach().flatten().tolist())},
    }
    if grad:
        # A cotangent without zeros, so that a gradient that is 0 * NaN shows.
        ct = torch.linspace(0.5, 1.5, y.numel()).reshape(y.shape)
        (y * ct).sum().backward()
        entry["cotangent"] = enc(ct.flatten().tolist())
        entry["grads"] = {n: enc((t.grad if t.grad is not None else torch.zeros_like(t)).flatten().tolist()) for (n, d, _), t in zip(inputs, ts) if d == "f32"}
    CASES.append(entry)


t = torch.tensor
special = t([NAN, -INF, -1.5, 0.0, 0.5, INF])

for fn_name, fn in [
    ("relu", torch.relu),
    ("tanh", torch.tanh),
    ("sigmoid", torch.sigmoid),
    ("gelu", F.gelu),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh")),
    ("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x)),
    ("silu", F.silu),
    ("exp", torch.exp),
    ("abs", torch.abs),
    ("neg", torch.neg),
]:
    case(f"{fn_name} of nan and inf", fn_name, {}, [("x", "f32", special)], fn)
case("log of nan, inf and negatives", "log", {}, [("x", "f32", t([NAN, -INF, -1.5, 0.5, INF]))], torch.log)
case("sqrt of nan, inf and negatives", "sqrt", {}, [("x", "f32", t([NAN, -1.5, 0.5, INF]))], torch.sqrt)

pair_a = t([NAN, 1.0, NAN, INF, -INF, 2.0])
pair_b = t([1.0, NAN, NAN, 1.0, 1.0, 2.0])
case("maximum with nan", "maximum", {}, [("a", "f32", pair_a), ("b", "f32", pair_b)], torch.maximum)
case("minimum with nan", "minimum", {}, [("a", "f32", pair_a), ("b", "f32", pair_b)], torch.minimum)
case("add inf and -inf", "add", {}, [("a", "f32", t([INF, INF, NAN])), ("b", "f32", t([-INF, 1.0, 0.0]))], torch.add)
case("mul 0 by inf", "mul", {}, [("a", "f32", t([0.0, 2.0, 0.0])), ("b", "f32", t([INF, INF, NAN]))], torch.mul)

rows = t([[1.0, NAN, 3.0, 0.5], [INF, 1.0, 2.0, 0.0], [-INF, -INF, -INF, -INF], [-INF, 0.0, 1.0, 2.0], [0.5, 1.0, -1.0, 2.0]])
case("max over rows with nan, inf, all -inf", "max", {"axis": [-1]}, [("x", "f32", rows)], lambda x: torch.amax(x, -1))
case("sum over rows with nan, inf", "sum", {"axis": [-1]}, [("x", "f32", rows)], lambda x: x.sum(-1))
case("mean over rows with nan, inf", "mean", {"axis": [-1]}, [("x", "f32", rows)], lambda x: x.mean(-1))
case("softmax of rows with nan, +inf, all -inf", "softmax", {"axis": -1}, [("x", "f32", rows)], lambda x: torch.softmax(x, -1))
case("log_softmax of rows with nan, +inf, all -inf", "log_softmax", {"axis": -1}, [("x", "f32", rows)], lambda x: torch.log_softmax(x, -1))

# Long rows, so the kernels split a row over subgroup lanes.
long_rows = torch.randn(3, 96)
long_rows[0, 70] = NAN
long_rows[1, 5] = INF
case("max over long rows with nan and inf", "max", {"axis": [-1]}, [("x", "f32", long_rows)], lambda x: torch.amax(x, -1))
case("softmax of long rows with nan and inf", "softmax", {"axis": -1}, [("x", "f32", long_rows)], lambda x: torch.softmax(x, -1))

w = torch.randn(4)
case("rms_norm with inf and nan", "rms_norm", {"eps": 1e-6}, [("x", "f32", t([[1.0, INF, 2.0, 3.0], [NAN, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])), ("weight", "f32", w)],
     lambda x, w: (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)) * w)
case("layer_norm with inf", "layer_norm", {"eps": 1e-5}, [("x", "f32", t([[1.0, INF, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]])), ("weight", "f32", w), ("bias", "f32", torch.randn(4))],
     lambda x, w, b: F.layer_norm(x, (4,), w, b, 1e-5))

# 0 * NaN in a matmul: the zero row of a meets the NaN row of b.
case("matmul 0 times nan", "matmul", {}, [("a", "f32", t([[0.0, 1.0], [2.0, 1.0]])), ("b", "f32", t([[NAN, 1.0, 2.0], [3.0, 4.0, 5.0]]))], torch.matmul)

labels = t([1, 0, 2, 1, -100], dtype=torch.int32)
ce_logits = t([[1.0, 2.0, 0.5], [NAN, 0.0, 1.0], [INF, 0.0, 1.0], [0.0, -INF, 1.0], [NAN, NAN, NAN]])
case("cross_entropy with nan, +inf, -inf at the label", "cross_entropy", {"ignore_index": -100}, [("logits", "f32", ce_logits), ("labels", "i32", labels)],
     lambda z, y: F.cross_entropy(z, y.long(), ignore_index=-100))
case("cross_entropy with -inf off the label", "cross_entropy", {"ignore_index": -100}, [("logits", "f32", t([[0.0, -INF, 1.0], [1.0, 2.0, 0.5]])), ("labels", "i32", t([2, 0], dtype=torch.int32))],
     lambda z, y: F.cross_entropy(z, y.long(), ignore_index=-100))


def vm_kl(z, tgt, m):
    # VW-LMM's VM loss: KLDivLoss(batchmean)(log_softmax(z[rows]), softmax(target[rows])).
    rows = m != 0
    return F.kl_div(torch.log_softmax(z[rows], -1), torch.softmax(tgt[rows], -1), reduction="batchmean")


kl_mask = t([1, 1, 0], dtype=torch.int32)
base_z = torch.randn(3, 5)
base_t = torch.randn(3, 5)
for label, (z, tg) in {
    "nan in the target": (base_z, base_t.clone().index_put_((t([1]), t([2])), t(NAN))),
    "nan in the logits": (base_z.clone().index_put_((t([0]), t([4])), t(NAN)), base_t),
    "nan in an unselected row": (base_z.clone().index_put_((t([2]), t([1])), t(NAN)), base_t),
    "-inf logit where p > 0": (base_z.clone().index_put_((t([1]), t([3])), t(-INF)), base_t),
    "-inf target (p = 0) against a finite logit": (base_z, base_t.clone().index_put_((t([0]), t([1])), t(-INF))),
    "-inf target and -inf logit (0 * -inf)": (base_z.clone().index_put_((t([0]), t([1])), t(-INF)), base_t.clone().index_put_((t([0]), t([1])), t(-INF))),
    "+inf target": (base_z, base_t.clone().index_put_((t([1]), t([0])), t(INF))),
}.items():
    # The gradient of an unselected row is 0 in torch (it never enters the loss): Kiln agrees.
    grad = not label.startswith("-inf target (p = 0)")
    case(f"kl_div: {label}", "kl_div", {}, [("logits", "f32", z), ("target_logits", "f32", tg), ("mask", "i32", kl_mask)], vm_kl, grad=grad)


def attention(q, k, v, causal):
    # Kiln's semantics: each row attends to the keys it sees; masked keys take no part (as the
    # fused kernels and torch's flash attention). Written out so torch's backend choice does not
    # matter: scores of masked keys are dropped before the softmax.
    T, S = q.shape[-2], k.shape[-2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    outs = []
    for i in range(T):
        seen = min(S, i + S - T + 1) if causal else S
        p = torch.softmax(s[..., i, :seen], -1)
        outs.append(p @ v[..., :seen, :])
    return torch.stack(outs, -2)


q = torch.randn(1, 1, 4, 8)
k = torch.randn(1, 1, 4, 8)
v = torch.randn(1, 1, 4, 8)
v_nan = v.clone()
v_nan[0, 0, 2, 3] = NAN
case("attention: nan in a value row, causal", "attention", {"causal": True, "scale": None}, [("q", "f32", q), ("k", "f32", k), ("v", "f32", v_nan)], lambda q, k, v: attention(q, k, v, True))
k_inf = k.clone()
k_inf[0, 0, 1, 0] = INF
case("attention: inf in a key, not causal", "attention", {"causal": False, "scale": None}, [("q", "f32", q), ("k", "f32", k_inf), ("v", "f32", v)], lambda q, k, v: attention(q, k, v, False))
q_nan = q.clone()
q_nan[0, 0, 3, 0] = NAN
case("attention: nan in a query row", "attention", {"causal": True, "scale": None}, [("q", "f32", q_nan), ("k", "f32", k), ("v", "f32", v)], lambda q, k, v: attention(q, k, v, True))

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "nonfinite_ops.json"), "w") as f:
    json.dump({"torch": torch.__version__, "cases": CASES}, f, indent=None, separators=(",", ":"))
    f.write("\n")
print(f"wrote {len(CASES)} cases")
