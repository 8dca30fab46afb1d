"""LLaVA conversation JSON + image folder -> training samples and batches, as Kiln makes them.

Written by `kiln export --target torch` (static: compiler/export/torch/data.py in Kiln). It is Kiln's
data pipeline (`kiln data`, `kiln train --data`; Kiln's data/ folder) in Python, step for step, so
train.py trains on the ids, labels and pixels `kiln train` trains on:

- records: a JSON list of {"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}]};
  `--data` is that file or a folder holding exactly one .json (images beside it, or --image-folder).
  A malformed record is left out and named (index, id, reason), as Kiln does.
- the tokenizer: a Hugging Face folder (tokenizer.json + tokenizer_config.json) through
  transformers' AutoTokenizer (transformers 5 rebuilds a LlamaTokenizer's pre-tokenizer from
  `legacy`, which Kiln reproduces); `kiln data --save-tokenizer DIR` writes the word-level vocabulary
  Kiln builds when there is none, and `kiln train` copies the tokenizer into its checkpoints.
- the template: vicuna_v1 (LLaVA-1.5's conv_vicuna_v1), mistral (`[INST] q [/INST]a</s>`), or the
  tokenizer's jinja chat_template; `auto` chooses as Kiln does. `<image>` is moved to the front of
  its turn (LLaVA's preprocess_multimodal) and becomes -200 between separately tokenised chunks,
  the tokenizer's BOS once in front (LLaVA's tokenizer_image_token).
- labels: the ids of the tokens whose characters lie in an answer (and its closing EOS) in the
  tokenisation of the whole prompt; -100 elsewhere. A record with every label -100 is left out.
  A sequence longer than max_length after the image splice (an image counts its patches) is cut at
  the end; one whose image does not fit is left out.
- pixels: PIL's `Image.open(f).convert("RGB")`, LLaVA's expand2square with the CLIP mean colour,
  CLIPImageProcessor's bicubic resize of the shortest side, centre crop, rescale, CLIP
  normalisation (float32), as [3, S, S]. Kiln's data/image.ts follows Pillow's integer arithmetic,
  so the two are equal bit for bit.
- batches: each epoch a seeded permutation (SplitMix32 Fisher-Yates, data/random.ts), batches of
  batch_size in that order, the last short one dropped, rows right-padded with the pad id (labels
  -100); so `kiln train --data` and train.py --data see the same rows at every step.

As a command it prints what `kiln data --json` prints for the same flags (and --dump writes the
same safetensors batch):

  python data.py --data llava.json --tokenizer DIR --json --dump batch.safetensors
"""
import argparse
import json
import os
import sys
import warnings

import numpy as np

IGNORE_INDEX = -100
IMAGE_TOKEN_ID = -200
IMAGE = "<image>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TEMPLATES = ("vicuna_v1", "mistral", "chat_template")
# JavaScript's String.prototype.trim() set (WhiteSpace and LineTerminator), which Kiln's
# preprocess_multimodal uses; Python's str.strip() strips a slightly different set.
_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"


class DataError(Exception):
    """Data that cannot be used (a missing file, bad JSON, a bad image): the message names it."""


# ---- records (data/llava-json.ts, data/node.ts) ----


def _record_id(r, index):
    if isinstance(r, dict):
        i = r.get("id")
        if isinstance(i, str):
            return i
        if isinstance(i, (int, float)) and not isinstance(i, bool):
            return str(int(i)) if float(i).is_integer() else repr(i)
    return f"#{index}"


def _problem(r):
    if not isinstance(r, dict):
        return "a record must be an object"
    if "image" in r and not isinstance(r["image"], str):
        return '"image" must be a file name (a string)'
    conv = r.get("conversations")
    if not isinstance(conv, list) or len(conv) == 0:
        return '"conversations" must be a non-empty list'
    for k, t in enumerate(conv):
        if not isinstance(t, dict):
            return f'turn {k} must be an object with "from" and "value"'
        if t.get("from") not in ("human", "gpt"):
            return f'turn {k}: "from" must be "human" or "gpt", not {json.dumps(t.get("from"))}'
        if not isinstance(t.get("value"), str):
            return f'turn {k}: "value" must be a string'
        expected = "human" if k % 2 == 0 else "gpt"
        if t["from"] != expected:
            return f'turn {k} is from "{t["from"]}"; turns must alternate human, gpt, human, ...'
    count = sum(t["value"].count(IMAGE) for t in conv)
    has_image = isinstance(r.get("image"), str)
    if has_image and count == 0:
        return f"has an image but no {IMAGE} placeholder in its first turn"
    if has_image and count > 1:
        return f"has {count} {IMAGE} placeholders; LLaVA-1.5 takes one image per record"
    if has_image and IMAGE not in conv[0]["value"]:
        return f"its {IMAGE} placeholder is not in the first turn"
    if not has_image and count > 0:
        return f'has {IMAGE} in its text but no "image"'
    if not any(t["from"] == "gpt" for t in conv):
        return 'has no answer (no turn from "gpt")'
    return None


def read_conversations(data, image_folder=None):
    """`data` (a JSON file, or a folder with exactly one) -> (records, malformed, image folder).

    records: [{"index", "id", "image" (str or None), "turns": [{"from", "value"}]}]; malformed:
    [{"index", "id", "reason"}]. Raises DataError naming the file.
    """
    if not os.path.exists(data):
        raise DataError(f"{data}: cannot read: no such file or folder")
    path = data
    if os.path.isdir(data):
        jsons = sorted(f for f in os.listdir(data) if f.lower().endswith(".json"))
        if len(jsons) != 1:
            raise DataError(f"{data}: the folder holds no .json conversation file" if not jsons else f"{data}: the folder holds {len(jsons)} .json files ({', '.join(jsons)}); pass the one to use as --data FILE")
        path = os.path.join(data, jsons[0])
    if image_folder is not None and not os.path.isdir(image_folder):
        raise DataError(f"{image_folder}: --image-folder is not a folder")
    folder = image_folder if image_folder is not None else os.path.dirname(path)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from e
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON list of LLaVA conversation records")
    records, malformed = [], []
    for index, r in enumerate(value):
        rid = _record_id(r, index)
        why = _problem(r)
        if why is not None:
            malformed.append({"index": index, "id": rid, "reason": why})
            continue
        turns = [{"from": t["from"], "value": t["value"]} for t in r["conversations"]]
        records.append({"index": index, "id": rid, "image": r.get("image"), "turns": turns})
    return records, malformed, folder


# ---- tokenizer (data/tokenizer.ts) ----


class Tokenizer:
    """A Hugging Face tokenizer folder as Kiln reads it: encode without special tokens, with character offsets."""

    def __init__(self, folder):
        if not os.path.isfile(os.path.join(folder, "tokenizer.json")):
            raise DataError(f"{folder}: no tokenizer.json in the folder")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        self.folder = folder
        self.tok = AutoTokenizer.from_pretrained(folder)
        cfg_path = os.path.join(folder, "tokenizer_config.json")
        cfg = {}
        if os.path.isfile(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                cfg = json.load(f)
        self.chat_template = cfg.get("chat_template") if isinstance(cfg.get("chat_template"), str) else None
        self.eos_token = self.tok.eos_token if self.tok.eos_token is not None else "</s>"
        pad = self.tok.pad_token_id
        if pad is None:
            pad = self.tok.unk_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.vocab_size = max(self.tok.get_vocab().values()) + 1
        # The ids the post-processor adds around one sequence: what add_special_tokens adds to a probe.
        bare = self.tok("a", add_special_tokens=False)["input_ids"]
        full = self.tok("a", add_special_tokens=True)["input_ids"]
        at = next(i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare)
        self.prefix_ids, self.suffix_ids = full[:at], full[at + len(bare) :]

    def encode(self, text):
        """ids and (start, end) character offsets of `text` without special tokens."""
        if text == "":
            return [], []
        enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def choose_template(flag, checkpoint, tok, config_name):
    """--template auto as Kiln chooses: the checkpoint's model_type, else a chat_template, else the config's name."""
    if flag in ("vicuna_v1", "mistral"):
        return flag
    if flag not in (None, "auto"):
        raise ValueError(f"--template {flag}: expected vicuna_v1, mistral or auto")
    cfg_path = os.path.join(checkpoint, "config.json") if checkpoint else None
    if cfg_path and os.path.isfile(cfg_path):
        with open(cfg_path) as f:
            mtype = json.load(f).get("model_type")
        if isinstance(mtype, str) and "mistral" in mtype.lower():
            return "mistral"
        import re

        if isinstance(mtype, str) and re.search(r"llama|vicuna|^llava$", mtype, re.I):
            return "vicuna_v1"
    if tok is not None and tok.chat_template:
        return "chat_template"
    return "mistral" if "mistral" in config_name.lower() else "vicuna_v1"


# ---- templates and encoding (data/template.ts, data/encode.ts) ----


def render(turns, tok, template):
    """(prompt, answer spans, whether the tokenizer's BOS/EOS are added)."""
    eos = tok.eos_token
    spans = []
    if template == "vicuna_v1":
        text = VICUNA_SYSTEM + " "
        for t in turns:
            if t["from"] == "human":
                text += f"USER: {t['value']} "
            else:
                text += "ASSISTANT:"
                start = len(text)
                text += f" {t['value']}{eos}"
                spans.append((start, len(text)))
        return text, spans, True
    if template == "mistral":
        text = ""
        for t in turns:
            if t["from"] == "human":
                text += f"[INST] {t['value']} [/INST]"
            else:
                start = len(text)
                text += t["value"] + eos
                spans.append((start, len(text)))
        return text, spans, True
    if template == "chat_template":
        if tok.chat_template is None:
            raise DataError(f"{tok.folder}: the tokenizer has no chat_template in tokenizer_config.json")
        msgs = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in turns]
        text = tok.tok.apply_chat_template(msgs, tokenize=False)
        cursor = 0
        for m in msgs:
            if m["role"] != "assistant":
                continue
            start = text.find(m["content"], cursor)
            if start < 0:
                raise DataError(f"{tok.folder}: chat_template: an assistant message does not appear verbatim in the rendered prompt, so its label span is unknown")
            end = start + len(m["content"])
            if text.startswith(eos, end):
                end += len(eos)
            spans.append((start, end))
            cursor = end
        return text, spans, False
    raise ValueError(f"template {template!r}: expected one of {', '.join(TEMPLATES)}")


def _image_to_front(turns):
    out = []
    for t in turns:
        if IMAGE in t["value"]:
            rest = t["value"].replace(IMAGE, "").strip(_JS_SPACE)
            out.append({"from": t["from"], "value": f"{IMAGE}\n{rest}".strip(_JS_SPACE)})
        else:
            out.append(t)
    return out


def _scored(start, end, spans):
    if start == end:
        return any(a <= start < b for a, b in spans)
    return any(start < b and end > a for a, b in spans)


class TooLong(Exception):
    pass


def encode(turns, has_image, tok, template, max_length, image_tokens, placement="front"):
    """One conversation -> dict(input_ids, labels, full_length, truncated, all_masked); raises TooLong."""
    if has_image and placement == "front":
        turns = _image_to_front(turns)
    text, spans, special = render(turns, tok, template)
    chunks = text.split(IMAGE) if has_image else [text]
    ids, offs = [], []
    if special:
        ids += tok.prefix_ids
        offs += [(0, 0)] * len(tok.prefix_ids)
    base = 0
    for k, chunk in enumerate(chunks):
        if k > 0:
            ids.append(IMAGE_TOKEN_ID)
            offs.append((base - len(IMAGE), base))
        cids, coffs = tok.encode(chunk)
        ids += cids
        offs += [(a + base, b + base) for a, b in coffs]
        base += len(chunk) + len(IMAGE)
    if special:
        ids += tok.suffix_ids
        offs += [(len(text), len(text))] * len(tok.suffix_ids)
    labels = [i if i != IMAGE_TOKEN_ID and _scored(a, b, spans) else IGNORE_INDEX for i, (a, b) in zip(ids, offs)]
    images = ids.count(IMAGE_TOKEN_ID)
    extra = images * (image_tokens - 1)
    full = len(ids) + extra
    keep = len(ids)
    if full > max_length:
        keep = max_length - extra
        last = len(ids) - 1 - ids[::-1].index(IMAGE_TOKEN_ID) if images else -1
        if keep <= last:
            raise TooLong(f"the prompt up to its image is {last + 1 + extra} positions after the splice, more than the maximum length {max_length}")
    kept = labels[:keep]
    return {"input_ids": ids[:keep], "labels": kept, "full_length": full, "truncated": keep < len(ids), "all_masked": all(l == IGNORE_INDEX for l in kept)}


# ---- images (data/image.ts, data/preprocess.ts) ----


def _sniff(head):
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    return None


def load_pixels(path, size, pad_to_square=True):
    """LLaVA-1.5's pixel_values of one image file: float32 [3, size, size]. Raises DataError naming the file."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from e
    if _sniff(head) is None:
        # Kiln reads PNG and JPEG only (what it decodes exactly as Pillow does).
        raise DataError(f"{path}: not an image Kiln can read: expected a PNG or JPEG file (by its first bytes)")
    try:
        with Image.open(path) as im, warnings.catch_warnings():
            # convert("RGB") drops a palette's transparency, as LLaVA's pipeline does; PIL says so each time.
            warnings.filterwarnings("ignore", message="Palette images with Transparency")
            img = im.convert("RGB")
    except Exception as e:  # PIL raises many kinds for broken files
        raise DataError(f"{path}: broken image: {e}") from e
    if pad_to_square and img.width != img.height:
        # LLaVA-1.5's expand2square with background tuple(int(x * 255) for x in image_mean).
        side = max(img.width, img.height)
        canvas = Image.new("RGB", (side, side), tuple(int(m * 255) for m in CLIP_MEAN))
        canvas.paste(img, (0, (side - img.height) // 2) if img.width > img.height else ((side - img.width) // 2, 0))
        img = canvas
    # CLIPImageProcessor: shortest edge to `size` (long side int(size * long / short)), bicubic.
    short, long = min(img.width, img.height), max(img.width, img.height)
    new_long = int(size * long / short)
    w, h = (size, new_long) if img.width <= img.height else (new_long, size)
    if (w, h) != (img.width, img.height):
        img = img.resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    top, left = (h - size) // 2, (w - size) // 2
    arr = arr[top : top + size, left : left + size]
    x = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


# ---- the dataset (data/dataset.ts) and batches (data/batch.ts, data/random.ts) ----


class Pipeline:
    """Records -> samples as Kiln prepares them. `used` lists the records that make a sample, in order."""

    def __init__(self, data, tokenizer, template, image_size, image_tokens, max_length=2048, image_folder=None, limit=None, placement="front"):
        records, malformed, folder = read_conversations(data, image_folder)
        if limit is not None:
            records = [r for r in records if r["index"] < limit]
            malformed = [r for r in malformed if r["index"] < limit]
        self.records, self.malformed, self.image_folder = records, malformed, folder
        self.tok = tokenizer
        self.template = template
        self.image_size, self.image_tokens, self.max_length, self.placement = image_size, image_tokens, max_length, placement

    def encode(self, rec):
        return encode(rec["turns"], rec["image"] is not None, self.tok, self.template, self.max_length, self.image_tokens, self.placement)

    def scan(self, indices=None):
        """Tokenises records (no images): [(position in self.records, status, reason)], status used|too_long|all_masked|truncated."""
        out = []
        for i in range(len(self.records)) if indices is None else indices:
            rec = self.records[i]
            try:
                e = self.encode(rec)
            except TooLong as t:
                out.append((i, "too_long", str(t)))
                continue
            if e["all_masked"]:
                out.append((i, "all_masked", "every answer lies beyond the maximum length" if e["truncated"] else "no token of the prompt lies in an answer span"))
            elif e["truncated"]:
                out.append((i, "truncated", f"{e['full_length']} positions cut to {self.max_length}"))
            else:
                out.append((i, "used", ""))
        return out

    def sample(self, i):
        """(input_ids, labels, pixels or None) of record position i (a used one)."""
        rec = self.records[i]
        e = self.encode(rec)
        pixels = None
        if rec["image"] is not None:
            try:
                pixels = load_pixels(os.path.join(self.image_folder, rec["image"]), self.image_size)
            except DataError as err:
                raise DataError(f"record {rec['index']} (id {rec['id']}): image {rec['image']}: {err}") from err
        return e["input_ids"], e["labels"], pixels


def collate(samples, pad_id, image_size):
    """Right-padded numpy batch: pixel_values f32 [B,3,S,S], input_ids i32 [B,T], labels i32 [B,T]."""
    B = len(samples)
    T = max(len(s[0]) for s in samples)
    ids = np.full((B, T), pad_id, dtype=np.int32)
    labels = np.full((B, T), IGNORE_INDEX, dtype=np.int32)
    pixels = np.zeros((B, 3, image_size, image_size), dtype=np.float32)
    for b, (i, l, p) in enumerate(samples):
        ids[b, : len(i)] = i
        labels[b, : len(l)] = l
        if p is not None:
            pixels[b] = p
    return {"pixel_values": pixels, "input_ids": ids, "labels": labels}


_M32 = 0xFFFFFFFF


class Rng:
    """Kiln's SplitMix32 (data/random.ts), bit for bit."""

    def __init__(self, seed):
        self.state = seed & _M32

    def next_u32(self):
        self.state = (self.state + 0x9E3779B9) & _M32
        z = self.state
        z = ((z ^ (z >> 16)) * 0x85EBCA6B) & _M32
        z = ((z ^ (z >> 13)) * 0xC2B2AE35) & _M32
        return (z ^ (z >> 16)) & _M32

    def int(self, n):
        limit = 0x100000000 - (0x100000000 % n)
        while True:
            x = self.next_u32()
            if x < limit:
                return x % n

    def shuffle(self, items):
        for i in range(len(items) - 1, 0, -1):
            j = self.int(i + 1)
            items[i], items[j] = items[j], items[i]
        return items


def derive_seed(seed, *parts):
    h = seed & _M32
    for p in parts:
        h = Rng(h ^ (((p & _M32) * 0x27D4EB2D) & _M32)).next_u32()
    return h


def epoch_order(n, seed, epoch):
    """The order of n samples in `epoch` (0-based) for `seed`: Kiln's epochOrder."""
    return Rng(derive_seed(seed, epoch)).shuffle(list(range(n)))


# ---- as a command: what `kiln data --json [--dump]` prints ----


def main(argv):
    ap = argparse.ArgumentParser(description="What training sees, as `kiln data --json` prints it")
    ap.add_argument("--data", required=True)
    ap.add_argument("--image-folder")
    ap.add_argument("--tokenizer", help="tokenizer folder (default: the checkpoint's)")
    ap.add_argument("--checkpoint", help="checkpoint folder: its tokenizer and model_type")
    ap.add_argument("--template", default="auto")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--image-placement", default="front", choices=["front", "inplace"])
    ap.add_argument("--on-bad-image", default="fail", choices=["fail", "skip"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dump")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import model as exported

    folder = a.tokenizer or (a.checkpoint if a.checkpoint and os.path.isfile(os.path.join(a.checkpoint, "tokenizer.json")) else None)
    if folder is None:
        raise ValueError("a tokenizer folder is needed (--tokenizer DIR, or a --checkpoint with tokenizer.json); `kiln data --save-tokenizer DIR` writes the vocabulary Kiln builds from the data")
    tok = Tokenizer(folder)
    dc = exported.DATA_CONFIG
    template = choose_template(a.template, a.checkpoint, tok, exported.CONFIG_NAME)
    pipe = Pipeline(a.data, tok, template, dc["image_size"], dc["image_tokens"], a.max_length, a.image_folder, a.limit, a.image_placement)
    summary = {"records": len(pipe.records) + len(pipe.malformed), "used": 0, "malformed": pipe.malformed, "bad_image": [], "all_masked": [], "too_long": [], "truncated": []}
    samples = []
    for i, status, reason in pipe.scan():
        rec = pipe.records[i]
        issue = {"index": rec["index"], "id": rec["id"], "reason": reason}
        if status in ("too_long", "all_masked"):
            summary[status].append(issue)
            continue
        try:
            s = pipe.sample(i)
        except DataError as e:
            if a.on_bad_image == "fail":
                raise
            summary["bad_image"].append({"index": rec["index"], "id": rec["id"], "reason": str(e).split(": ", 1)[1]})
            continue
        if status == "truncated":
            summary["truncated"].append(issue)
        summary["used"] += 1
        samples.append((rec, s))
    if a.json:
        for rec, (ids, labels, _p) in samples:
            print(json.dumps({"id": rec["id"], "input_ids": ids, "labels": labels, "image": rec["image"]}, ensure_ascii=False, separators=(",", ":")))
        print(json.dumps({"summary": summary}, ensure_ascii=False, separators=(",", ":")))
    if a.dump:
        import torch
        from safetensors.torch import save_file

        batch = collate([s for _r, s in samples], tok.pad_id, dc["image_size"])
        save_file({k: torch.from_numpy(v) for k, v in batch.items()}, a.dump)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
