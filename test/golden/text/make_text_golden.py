#!/usr/bin/env python3
"""Golden files for Kiln's tokenisation and label spans (data/), made with Hugging Face `tokenizers`
and `transformers` and LLaVA-1.5's own preprocessing, without any hub download.

Run by hand (never in CI; Kiln itself never depends on Python):

    python3 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install --no-index --find-links /opt/pypi/files \
        --find-links /opt/pypi-more/files --find-links /opt/wheels \
        "transformers==5.18.0" tokenizers sentencepiece jinja2 protobuf numpy
    /tmp/tvenv/bin/python test/golden/text/make_text_golden.py          # (re)writes test/golden/text/
    /tmp/tvenv/bin/python test/golden/text/make_text_golden.py --check  # recomputes, compares, writes nothing

What it builds (deterministic: BPE training in `tokenizers` is deterministic for a fixed corpus):
  llama_legacy/     a Llama-style byte-fallback BPE tokenizer.json (the layout transformers' LlamaConverter
                    writes: Prepend+Replace normaliser, <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF> = 3..258),
                    tokenizer_config.json with "legacy": true
  llama_nolegacy/   the same tokenizer.json, "legacy": false
  bytelevel/        a GPT-2-style byte-level BPE (PreTrainedTokenizerFast: the file is used as it is)
  mistral/          a second BPE tokenizer (other corpus, other size) as Mistral-7B-Instruct ships it:
                    tokenizer_class LlamaTokenizer, no "legacy" key (transformers 5 then uses False),
                    and Mistral's chat_template
  expected.json     for every (folder, template, image placement, record): the prompt, input_ids,
                    labels, and for Vicuna v1 the labels LLaVA's preprocess_v1 arithmetic gives
  wordlevel.json    (only when test/golden/text/wordlevel/tokenizer.json exists, which Kiln writes for
                    the builtin:shapes vocabulary) ids that Hugging Face tokenizers gives for a few strings

transformers 5.18's LlamaTokenizer ignores the normaliser and pre-tokeniser in tokenizer.json: it keeps
vocab, merges and post-processor, and rebuilds normalizer=None, pre_tokenizer=Metaspace("▁",
prepend_scheme="always" if legacy else "first", split=False), BPE(fuse_unk, byte_fallback). With
legacy=False the text right after a special token (</s>USER) gets no "▁"; with legacy=True it does.

Labels ("correct spans"): each template records the character spans of every answer and its closing
EOS in the prompt; a token of the whole prompt's tokenisation is scored iff its offsets overlap one of
those spans (a zero-width token iff it lies inside one). input_ids follow LLaVA's tokenizer_image_token:
the prompt is split at "<image>", each chunk tokenised on its own, -200 between the chunks, the BOS
only once at the front.

LLaVA's preprocess_v1 arithmetic, for comparison (recorded as `llava_v1_labels`): per round it counts
len(tokenizer(round)) and len(tokenizer(instruction)) - 2, and with tokenizers >= 0.14 and legacy=False
subtracts 1 more from both for rounds after the first; if the total is not the sequence length it
prints "tokenization mismatch" and masks every label of the sample. The count assumes a round
tokenises alone as it does inside the conversation. With legacy=True that holds here (all 12 Vicuna
cases equal the span labels). With legacy=False it does not: after "</s>" the round starts without
"▁" ("USER", ":" inside the conversation, "▁USER:" alone in these vocabularies), and the fixed -1
is right only when dropping the "▁" removes exactly one token, which is a property of Llama-2's
vocabulary, not of the method: here every multi-round record is off and LLaVA masks the whole
sample (16 of 24 legacy=False cases). Kiln takes the labels from the spans instead.

Vicuna span: the answer's span starts at the space after "ASSISTANT:" (the inference prompt ends
with "ASSISTANT:", so the model generates that space; a lone "▁" token before a byte-fallback first
character is scored, as LLaVA's arithmetic also scores it) and ends after its "</s>".
"""

import argparse
import copy
import json
import os
import sys

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
IGNORE = -100
IMAGE_TOKEN_INDEX = -200
IMAGE = "<image>"

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)

MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

LLAMA_CORPUS = [
    VICUNA_SYSTEM,
    "USER: What is shown in the picture? ASSISTANT: A red circle on a white background.",
    "USER: How many shapes are there? ASSISTANT: There are two shapes in the image.",
    "USER: Is the square big or small? ASSISTANT: The square is small, it sits at the top.",
    "USER: Describe the image in detail. ASSISTANT: The image shows three blue triangles and a green star.",
    "USER: What colour is the circle? ASSISTANT: The circle is red. What else would you like to know?",
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!",
    "Look at this and tell me the colour of the largest shape, please. Thank you very much.",
    "Answer with one word. Yes. No. Maybe. Left, right, top, bottom, centre, center.",
    "[INST] Hello there [/INST] Hi! How can I help you today? (numbers: 0 1 2 3 4 5 6 7 8 9 10 42)",
    "Line one. Line two; line three: the end - a quote \"like this\" and 'that' / slash # hash % @ & * + = < > ? _ ~ ` | { } [ ] ^ $",
]

MISTRAL_CORPUS = [
    "[INST] What do you see in this image? [/INST]I see a dog sitting on grass.",
    "[INST] Tell me more about it. [/INST]It is a brown dog with a red collar, looking to the left.",
    "[INST] Count the objects. [/INST]There are four objects: two cups, a plate and a fork.",
    "Mistral instruct models use [INST] and [/INST] around the user's turn, then the answer.",
    "A chat between a curious user and an artificial intelligence assistant. USER: ASSISTANT:",
    "Colours: red, green, blue, yellow, purple, orange, black, white. Shapes: circle, square, star.",
    "Punctuation: . , ; : ! ? ( ) [ ] { } < > / \\ | - _ + = * & ^ % $ # @ ~ ` \" ' and digits 0123456789",
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm windowsill.",
]

# LLaVA conversation records: several turns, the placeholder at the start, inside and at the end of
# the first turn, text-only records, characters outside the vocabulary (byte fallback).
RECORDS = [
    {"id": "multi-start", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown in the picture?"},
        {"from": "gpt", "value": "A red circle on a white background."},
        {"from": "human", "value": "How many shapes are there?"},
        {"from": "gpt", "value": "There is one shape."},
        {"from": "human", "value": "Is it big or small?"},
        {"from": "gpt", "value": "It is small."},
    ]},
    {"id": "middle", "image": "b.png", "conversations": [
        {"from": "human", "value": "Look at this <image> and tell me the colour of the square."},
        {"from": "gpt", "value": "Blue."},
        {"from": "human", "value": "And the triangle?"},
        {"from": "gpt", "value": "Green, with a yellow border."},
    ]},
    {"id": "end", "image": "c.png", "conversations": [
        {"from": "human", "value": "Describe the image in detail.\n<image>"},
        {"from": "gpt", "value": "The image shows three blue triangles and a green star."},
    ]},
    {"id": "text-only", "conversations": [
        {"from": "human", "value": "What is 2 + 2?"},
        {"from": "gpt", "value": "4"},
        {"from": "human", "value": "And 10 + 32?"},
        {"from": "gpt", "value": "42, of course."},
    ]},
    {"id": "oov", "image": "d.jpg", "conversations": [
        {"from": "human", "value": "<image>\nQu'est-ce que c'est ? Un café 中文 🙂"},
        {"from": "gpt", "value": "C'est un café — très bon ☕!"},
        {"from": "human", "value": "Ünïcödé?"},
        {"from": "gpt", "value": "Ja: äöü ß"},
    ]},
    {"id": "whitespace", "conversations": [
        {"from": "human", "value": "Two  spaces,\ta tab and\nnew lines?"},
        {"from": "gpt", "value": "Line one\nLine two"},
    ]},
]


# ---- tokenizer construction ------------------------------------------------------------------

def train_bpe(corpus, vocab_size):
    """A BPE over Metaspace pieces trained by `tokenizers` (deterministic); returns (vocab list, merges)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, special_tokens=[])
    tok.train_from_iterator(corpus * 3, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    by_id = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, list) else m.split(" ") for m in model["merges"]]
    return [t for t, _ in by_id], merges


def llama_tokenizer_json(pieces, merges):
    """tokenizer.json in the layout transformers' LlamaConverter writes for a byte-fallback SentencePiece BPE."""
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {}
    for s in specials:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for p in pieces:
        if p not in vocab:
            vocab[p] = len(vocab)
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(specials)]
    bos = {"SpecialToken": {"id": "<s>", "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def tokenizer_config(legacy, chat_template=None):
    cfg = {
        "add_bos_token": True, "add_eos_token": False,
        "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for i, s in enumerate(["<unk>", "<s>", "</s>"])},
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
        "clean_up_tokenization_spaces": False, "model_max_length": 2048,
        "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
    }
    if legacy is not None:
        cfg["legacy"] = legacy
    if chat_template is not None:
        cfg["chat_template"] = chat_template
    return cfg


def bytelevel_folder():
    """A GPT-2-style byte-level BPE (tokenizer_class PreTrainedTokenizerFast: transformers uses the file
    as it is), BOS from a "<s> $A" post-processor: checks spans over ByteLevel tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, show_progress=False, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((LLAMA_CORPUS + MISTRAL_CORPUS) * 3, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
    tj = json.loads(tok.to_str())
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
           "clean_up_tokenization_spaces": False, "model_max_length": 2048}
    return tj, cfg


def build_folders():
    llama = llama_tokenizer_json(*train_bpe(LLAMA_CORPUS, 420))
    mistral = llama_tokenizer_json(*train_bpe(MISTRAL_CORPUS, 380))
    return {
        "llama_legacy": (llama, tokenizer_config(True)),
        "llama_nolegacy": (llama, tokenizer_config(False)),
        "mistral": (mistral, tokenizer_config(None, MISTRAL_CHAT_TEMPLATE)),
        "bytelevel": bytelevel_folder(),
    }


# ---- LLaVA preprocessing ---------------------------------------------------------------------

def preprocess_multimodal(conversations):
    """LLaVA's preprocess_multimodal (mm_use_im_start_end False): the placeholder moves to the front."""
    out = copy.deepcopy(conversations)
    for s in out:
        if IMAGE in s["value"]:
            s["value"] = s["value"].replace(IMAGE, "").strip()
            s["value"] = IMAGE + "\n" + s["value"]
            s["value"] = s["value"].strip()
    return out


def vicuna_prompt(conv, eos):
    """conv_vicuna_v1.get_prompt() (SeparatorStyle.TWO, sep " ", sep2 "</s>") with answer spans."""
    text = VICUNA_SYSTEM + " "
    spans = []
    for i, s in enumerate(conv):
        role = "USER" if s["from"] == "human" else "ASSISTANT"
        text += role + ":"
        if role == "ASSISTANT":
            # The space after "ASSISTANT:" is generated by the model at inference (the prompt ends
            # "ASSISTANT:"), so it belongs to the scored span.
            start = len(text)
            text += " " + s["value"] + eos
            spans.append((start, len(text)))
        else:
            text += " " + s["value"] + " "
    return text, spans


def mistral_prompt(conv, eos):
    """The Mistral template of vwlmm.md: [INST] {q} [/INST]{a}</s>, repeated; BOS from the tokenizer."""
    text = ""
    spans = []
    for s in conv:
        if s["from"] == "human":
            text += "[INST] " + s["value"] + " [/INST]"
        else:
            start = len(text)
            text += s["value"] + eos
            spans.append((start, len(text)))
    return text, spans


def chat_template_prompt(tok, conv):
    msgs = [{"role": "user" if s["from"] == "human" else "assistant", "content": s["value"]} for s in conv]
    text = tok.apply_chat_template(msgs, tokenize=False)
    spans = []
    cursor = 0
    for m in msgs:
        if m["role"] != "assistant":
            continue
        start = text.index(m["content"], cursor)
        end = start + len(m["content"])
        if text.startswith(tok.eos_token, end):
            end += len(tok.eos_token)
        spans.append((start, end))
        cursor = end
    return text, spans


def tokenizer_image_token(prompt, tok, add_special_tokens=True):
    """LLaVA's mm_utils.tokenizer_image_token, with offsets kept (chunk offsets shifted to the prompt)."""
    chunks = prompt.split(IMAGE)
    encs = [tok(c, add_special_tokens=add_special_tokens, return_offsets_mapping=True) for c in chunks]
    ids, offs = [], []
    drop = 0
    if encs[0]["input_ids"] and encs[0]["input_ids"][0] == tok.bos_token_id and add_special_tokens:
        drop = 1
        ids.append(tok.bos_token_id)
        offs.append((0, 0))
    base = 0
    for k, (c, e) in enumerate(zip(chunks, encs)):
        if k > 0:
            ids.append(IMAGE_TOKEN_INDEX)
            offs.append((base - len(IMAGE), base))
        ids.extend(e["input_ids"][drop:])
        offs.extend((a + base, b + base) for a, b in e["offset_mapping"][drop:])
        base += len(c) + len(IMAGE)
    return ids, offs


def span_labels(ids, offs, spans):
    labels = []
    for i, (a, b) in zip(ids, offs):
        if i == IMAGE_TOKEN_INDEX:
            labels.append(IGNORE)
            continue
        if a == b:
            hit = any(s <= a < e for s, e in spans)
        else:
            hit = any(a < e and b > s for s, e in spans)
        labels.append(i if hit else IGNORE)
    return labels


def llava_v1_labels(prompt, ids, tok, has_image):
    """LLaVA-1.5 train.py preprocess_v1's masking arithmetic, verbatim in effect (no padding)."""
    def count(text):
        if has_image:
            return len(tokenizer_image_token(text, tok)[0])
        return len(tok(text).input_ids)
    target = list(ids)
    sep = " ASSISTANT: "
    total_len = len(target)
    rounds = prompt.split("</s>")
    cur_len = 1
    target[:cur_len] = [IGNORE] * cur_len
    for i, rou in enumerate(rounds):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = count(rou)
        instruction_len = count(parts[0]) - 2
        if i != 0 and not tok.legacy:  # IS_TOKENIZER_GREATER_THAN_0_14
            round_len -= 1
            instruction_len -= 1
        for j in range(cur_len, min(cur_len + instruction_len, total_len)):
            target[j] = IGNORE
        cur_len += round_len
    for j in range(cur_len, total_len):
        target[j] = IGNORE
    mismatch = cur_len != total_len
    if mismatch:
        target = [IGNORE] * total_len
    return target, mismatch


def make(folder_root):
    os.makedirs(folder_root, exist_ok=True)
    folders = build_folders()
    files = {}
    for name, (tj, cfg) in folders.items():
        files[f"{name}/tokenizer.json"] = json.dumps(tj, ensure_ascii=False, indent=1) + "\n"
        files[f"{name}/tokenizer_config.json"] = json.dumps(cfg, ensure_ascii=False, indent=1) + "\n"
    # Load through transformers from a scratch folder so the files we compare are the files we write.
    scratch = os.path.join("/tmp", "kiln-text-golden")
    for rel, text in files.items():
        os.makedirs(os.path.dirname(os.path.join(scratch, rel)), exist_ok=True)
        with open(os.path.join(scratch, rel), "w", encoding="utf-8") as f:
            f.write(text)
    cases = []
    for name in folders:
        tok = AutoTokenizer.from_pretrained(os.path.join(scratch, name))
        if name != "bytelevel":
            assert type(tok).__name__ == "LlamaTokenizer", type(tok)
            assert tok.legacy == bool(folders[name][1].get("legacy", False))
        for template in ["vicuna_v1", "mistral"] + (["chat_template"] if name == "mistral" else []):
            for placement in ["front", "inplace"]:
                for rec in RECORDS:
                    has_image = "image" in rec
                    conv = preprocess_multimodal(rec["conversations"]) if placement == "front" and has_image else rec["conversations"]
                    if template == "vicuna_v1":
                        prompt, spans = vicuna_prompt(conv, tok.eos_token)
                    elif template == "mistral":
                        prompt, spans = mistral_prompt(conv, tok.eos_token)
                    else:
                        prompt, spans = chat_template_prompt(tok, conv)
                    add_special = template != "chat_template"
                    if has_image:
                        ids, offs = tokenizer_image_token(prompt, tok, add_special)
                    else:
                        enc = tok(prompt, add_special_tokens=add_special, return_offsets_mapping=True)
                        ids, offs = enc["input_ids"], enc["offset_mapping"]
                    labels = span_labels(ids, offs, [tuple(s) for s in spans])
                    case = {"folder": name, "template": template, "placement": placement, "id": rec["id"],
                            "prompt": prompt, "spans": spans, "input_ids": ids, "labels": labels}
                    if template == "vicuna_v1":
                        if name == "bytelevel":
                            cases.append(case)
                            continue
                        llava, mismatch = llava_v1_labels(prompt, ids, tok, has_image)
                        case["llava_v1_labels"] = llava
                        case["llava_v1_mismatch"] = mismatch
                        case["llava_v1_equal"] = llava == labels
                    cases.append(case)
    # Byte fallback must actually happen somewhere, or the oov record tests nothing.
    oov = next(c for c in cases if c["id"] == "oov")
    assert any(3 <= i < 259 for i in oov["input_ids"]), "no byte-fallback token in the oov record"
    expected = {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
                "records": RECORDS, "cases": cases}
    files["expected.json"] = json.dumps(expected, ensure_ascii=False, indent=1) + "\n"

    wl = os.path.join(HERE, "wordlevel", "tokenizer.json")
    if os.path.exists(wl):
        t = Tokenizer.from_file(wl)
        auto = AutoTokenizer.from_pretrained(os.path.join(HERE, "wordlevel"))
        strings = ["what colour is the shape ?", "how many shapes are there ? unknownword",
                   "</s>USER: is the circle small or large ? ASSISTANT: small</s>", "  red\tcircle  ", ""]
        out = []
        for s in strings:
            out.append({"text": s, "ids": t.encode(s).ids, "ids_no_special": t.encode(s, add_special_tokens=False).ids,
                        "auto_ids": auto(s).input_ids})
        files["wordlevel.json"] = json.dumps({"tokenizers": tokenizers.__version__, "encodings": out},
                                             ensure_ascii=False, indent=1) + "\n"
    return files


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    files = make(HERE)
    bad = 0
    for rel, text in sorted(files.items()):
        path = os.path.join(HERE, rel)
        if args.check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    print(f"differs: {rel}")
                    bad += 1
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    cases = json.loads(files["expected.json"])["cases"]
    vic = [c for c in cases if c["template"] == "vicuna_v1" and c["folder"] != "bytelevel"]
    print(f"{len(cases)} cases; LLaVA preprocess_v1 arithmetic equals the span labels in "
          f"{sum(c['llava_v1_equal'] for c in vic)}/{len(vic)} Vicuna cases "
          f"({sum(c['llava_v1_mismatch'] for c in vic)} 'tokenization mismatch', every label masked)")
    for c in vic:
        if not c["llava_v1_equal"]:
            diff = [k for k, (a, b) in enumerate(zip(c["labels"], c["llava_v1_labels"])) if a != b]
            print(f"  {c['folder']}/{c['placement']}/{c['id']}: mismatch={c['llava_v1_mismatch']} differs at {diff[:8]}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
