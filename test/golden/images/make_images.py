#!/usr/bin/env python3
"""Golden images for data/image.ts: what PIL and Hugging Face's CLIPImageProcessor make of them.

Run by hand (never in CI; Kiln itself never depends on Python):

    python3 -m venv /tmp/gvenv
    /tmp/gvenv/bin/pip install --no-index --find-links /opt/pypi/files \
        --find-links /opt/pypi-more/files --find-links /opt/wheels \
        "torch==2.13.0+cpu" "transformers==5.18.0" safetensors numpy pillow
    /tmp/gvenv/bin/python test/golden/images/make_images.py          # (re)writes the files here
    /tmp/gvenv/bin/python test/golden/images/make_images.py --check  # recompute from src/, compare, write nothing

It writes, in this folder:
  src/<name>.png|jpg          the source images, one per kind PIL distinguishes (see CASES)
  src/broken_*.{png,jpg}      files PIL refuses (Kiln must refuse them too, naming the file)
  expected.safetensors        per image <name>:
      <name>.rgb          U8 [H, W, 3]   Image.open(f).convert("RGB") (not for NO_RGB: SHA-256 only)
      <name>.crop28       U8 [28, 28, 3] the uint8 image the processor normalises at the tiny
                                         model's image size 28, after expand2square + CLIPImageProcessor
                                         resize + centre crop
      <name>.crop28_nopad U8 [28, 28, 3] the same without expand2square (for NOPAD only)
      lut                 F32 [3, 256]   the processor's output (rescale + normalize) for level v in
                                         channel c (the same at 28 and 336)
  crops/<file>.png            for the images in CROP336 only (to keep the folder small): the uint8
                              RGB crop at 336, saved losslessly
  expected.json               versions, sizes, and for every image the SHA-256 of its RGB decode
                              (uint8 HWC), of the 336 and of the 28 pixel_values (float32 CHW, C order).

The script checks, for every image and size, that the processor's pixel_values equal lut[c][crop]
bit for bit, where crop is the uint8 image after expand2square + resize + centre crop (computed
with HF's own resize/center_crop): so "Kiln's uint8 crop == the stored crop" plus "Kiln's
normalisation == lut" is the same statement as "Kiln's float32 pixel_values == HF's", and the
SHA-256 lets the test make that statement for the 336 crops that are not stored.

expand2square is transcribed from LLaVA-1.5 (haotian-liu/LLaVA, llava/mm_utils.py), as is the
background `tuple(int(x*255) for x in image_processor.image_mean)`. The processor config is
openai/clip-vit-large-patch14-336's preprocessor_config.json (crop_size 336, shortest_edge 336,
resample 3 = bicubic, OpenAI CLIP mean/std, do_convert_rgb) and the same at 28.
"""

import argparse
import hashlib
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, features
import transformers
from transformers import CLIPImageProcessorPil
from transformers.image_processing_utils import SizeDict
from safetensors.numpy import save_file, load_file

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
CROP336 = ["large_jpg", "cmyk_progressive_jpg"]
NOPAD = ["rgb_png", "wide_jpg", "tall_png", "large_jpg"]
NO_RGB = ["large_jpg"]  # 518 KB raw: its decode is checked by SHA-256 only


def expand2square(pil_img, background_color):
    # LLaVA-1.5, llava/mm_utils.py
    width, height = pil_img.size
    if width == height:
        return pil_img
    elif width > height:
        result = Image.new(pil_img.mode, (width, width), background_color)
        result.paste(pil_img, (0, (width - height) // 2))
        return result
    else:
        result = Image.new(pil_img.mode, (height, height), background_color)
        result.paste(pil_img, ((height - width) // 2, 0))
        return result


def processor(size):
    return CLIPImageProcessorPil(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3,
        do_resize=True, do_center_crop=True, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=MEAN, image_std=STD, do_convert_rgb=True)


# ---------------------------------------------------------------------------------------------
# Source images. Content: smooth gradients (what bicubic sees), hard edges (overshoot and clipping),
# and noise (JPEG's high frequencies), from a fixed seed.

def content(h, w, seed, noise=12.0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / max(w, 1) * 5 + seed) * np.cos(y / max(h, 1) * 3)
    g = 255 * (x + y) / (w + h)
    b = 128 + 120 * np.cos((x - y) / 7.0)
    img = np.stack([r, g, b], -1)
    # a few hard-edged rectangles, some saturated
    for _ in range(4):
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        img[y0:y0 + max(2, h // 5), x0:x0 + max(2, w // 4)] = rng.choice([0, 255, 40, 220], 3)
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_raw(width, height, depth, color_type, rows, plte=None, trns=None):
    """A PNG from already-packed scanlines, for layouts PIL does not write (2-bit grey, 16-bit RGB,
    16-bit grey+alpha, a palette shorter than the indices used)."""
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    if plte is not None:
        out += png_chunk(b"PLTE", plte)
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    return out + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")


def write_png_adam7(rgb):
    """An 8-bit RGB PNG with Adam7 interlacing (PIL reads it but does not write it)."""
    h, w, _ = rgb.shape
    passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]
    raw = b""
    for x0, y0, dx, dy in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 1))
    return out + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")


def encode_jpeg_4(width, height, samp, adobe_transform, seed, q=3):
    """A baseline 4-component JPEG with any sampling factors and Adobe transform, for layouts PIL
    does not write (YCCK, component 0 at 1x2 or 4x1, rows of <= 2 subsampled samples). The sample
    planes are arbitrary test data at each component's own resolution; what they decode to is
    whatever PIL says. Huffman tables: every used symbol gets an 8-bit code."""
    maxh, maxv = max(h for h, _ in samp), max(v for _, v in samp)
    mcusx, mcusy = -(-width // (8 * maxh)), -(-height // (8 * maxv))
    T = np.array([[np.sqrt(2 / 8) * (np.sqrt(0.5) if u == 0 else 1) * np.cos((2 * x + 1) * u * np.pi / 16) for x in range(8)] for u in range(8)])
    zz = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21,
          28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61,
          54, 47, 55, 62, 63]
    planes = []
    for ci, (h, v) in enumerate(samp):
        dw, dh = -(-width * h // maxh), -(-height * v // maxv)
        plane = content(dh, dw, seed + ci)[..., ci % 3].astype(np.float64)
        pw, ph = mcusx * h * 8, mcusy * v * 8
        planes.append(np.pad(plane, ((0, ph - dh), (0, pw - dw)), mode="edge"))
    symbols = []  # (table, symbol, extra bits, extra length) in stream order; None = restart of nothing
    preds = [0] * 4
    def cat(x):
        return 0 if x == 0 else int(abs(x)).bit_length()
    def bits_of(x, n):
        return x if x >= 0 else x + (1 << n) - 1
    for my in range(mcusy):
        for mx in range(mcusx):
            for ci, (h, v) in enumerate(samp):
                for by in range(v):
                    for bx in range(h):
                        r0, c0 = (my * v + by) * 8, (mx * h + bx) * 8
                        blk = planes[ci][r0:r0 + 8, c0:c0 + 8] - 128
                        coef = np.rint(T @ blk @ T.T / q).astype(int).reshape(64)
                        d = coef[0] - preds[ci]
                        preds[ci] = coef[0]
                        symbols.append(("dc", cat(d), bits_of(d, cat(d)), cat(d)))
                        run = 0
                        last = max([k for k in range(1, 64) if coef[zz[k]] != 0], default=0)
                        for k in range(1, last + 1):
                            a = coef[zz[k]]
                            if a == 0:
                                run += 1
                                continue
                            while run > 15:
                                symbols.append(("ac", 0xF0, 0, 0))
                                run -= 16
                            symbols.append(("ac", (run << 4) | cat(a), bits_of(a, cat(a)), cat(a)))
                            run = 0
                        if last < 63:
                            symbols.append(("ac", 0x00, 0, 0))
    tables = {}
    dht = b""
    for cls, name in ((0, "dc"), (1, "ac")):
        used = sorted({sym for t, sym, _, _ in symbols if t == name})
        assert len(used) <= 255
        tables[name] = {sym: i for i, sym in enumerate(used)}
        counts = [0] * 16
        counts[7] = len(used)
        dht += bytes([cls << 4]) + bytes(counts) + bytes(used)
    acc, nbits, out = 0, 0, bytearray()
    def put(value, n):
        nonlocal acc, nbits
        for i in range(n - 1, -1, -1):
            acc = (acc << 1) | ((value >> i) & 1)
            nbits += 1
            if nbits == 8:
                out.append(acc)
                if acc == 0xFF:
                    out.append(0)
                acc, nbits = 0, 0
    for t, sym, extra, n in symbols:
        put(tables[t][sym], 8)
        put(extra, n)
    if nbits:
        put((1 << (8 - nbits)) - 1, 8 - nbits)
    seg = lambda m, body: bytes([0xFF, m]) + struct.pack(">H", len(body) + 2) + body
    data = b"\xff\xd8"
    data += seg(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, adobe_transform))
    data += seg(0xDB, bytes([0]) + bytes([q] * 64))
    data += seg(0xC0, struct.pack(">BHHB", 8, height, width, 4) + b"".join(bytes([ci + 1, (h << 4) | v, 0]) for ci, (h, v) in enumerate(samp)))
    data += seg(0xC4, dht)
    data += seg(0xDA, bytes([4]) + b"".join(bytes([ci + 1, 0x00]) for ci in range(4)) + bytes([0, 63, 0]))
    return data + bytes(out) + b"\xff\xd9"


def make_sources():
    """name -> file bytes (name ends with the format, e.g. rgba_png)."""
    files = {}

    def pil_bytes(img, fmt, **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        return buf.getvalue()

    files["rgb_png"] = pil_bytes(Image.fromarray(content(37, 45, 1)), "PNG")
    rgba = np.concatenate([content(45, 37, 2), np.random.default_rng(3).integers(0, 256, (45, 37, 1), dtype=np.uint8)], -1)
    rgba[::3, ::2, 3] = 0  # colour under alpha 0 must survive: convert("RGB") drops alpha, it does not blend
    files["rgba_png"] = pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG")
    pal = Image.fromarray(content(29, 41, 4)).quantize(colors=12, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    files["palette_trns_png"] = pil_bytes(pal, "PNG", transparency=bytes([0, 255, 128] + [255] * 9), bits=4)
    files["grey_png"] = pil_bytes(Image.fromarray(content(40, 30, 5)[..., 1], "L"), "PNG")
    g16 = (content(27, 33, 6)[..., 0].astype(np.uint16) * 257)
    g16[:, ::3] //= 300  # some values below 256, where "I;16" -> RGB does not clip
    files["grey16_png"] = pil_bytes(Image.frombytes("I;16", (33, 27), g16.astype("<u2").tobytes()), "PNG")
    # 2-bit grey (Pillow's "L;2" unpacker), a short palette, 16-bit RGB and 16-bit grey+alpha
    rng = np.random.default_rng(7)
    v2 = rng.integers(0, 4, (9, 11))
    rows2 = [bytes(np.packbits(np.unpackbits(r.astype(np.uint8)[:, None], axis=1)[:, 6:].reshape(-1))) for r in v2]
    files["grey2bit_png"] = write_png_raw(11, 9, 2, 0, rows2)
    idx = rng.integers(0, 6, (7, 10)).astype(np.uint8)  # indices 4 and 5 are past a 4-entry PLTE
    files["palette_short_png"] = write_png_raw(10, 7, 8, 3, [bytes(r) for r in idx], plte=bytes([10, 20, 30, 200, 100, 50, 0, 255, 0, 255, 255, 255]))
    rgb16 = rng.integers(0, 65536, (6, 8, 3)).astype(">u2")
    files["rgb16_png"] = write_png_raw(8, 6, 16, 2, [r.tobytes() for r in rgb16])
    la16 = rng.integers(0, 65536, (6, 5, 2)).astype(">u2")
    files["la16_png"] = write_png_raw(5, 6, 16, 4, [r.tobytes() for r in la16])
    files["tall_png"] = pil_bytes(Image.fromarray(content(70, 24, 8)), "PNG")
    la = content(19, 23, 16)
    files["la8_png"] = pil_bytes(Image.fromarray(np.stack([la[..., 0], la[..., 1]], -1), "LA"), "PNG")
    files["bw1_png"] = pil_bytes(Image.fromarray(content(17, 21, 17)[..., 0] > 128), "PNG")
    files["palette1_png"] = pil_bytes(Image.fromarray(content(13, 19, 18)).quantize(colors=2, dither=Image.Dither.NONE), "PNG", bits=1)
    files["grey_trns_png"] = pil_bytes(Image.fromarray(content(15, 18, 19)[..., 2], "L"), "PNG", transparency=128)
    files["rgb_trns_png"] = pil_bytes(Image.fromarray(content(15, 18, 20)), "PNG", transparency=(255, 255, 255))
    files["interlaced_png"] = write_png_adam7(content(11, 13, 21))

    files["restart_jpg"] = pil_bytes(Image.fromarray(content(40, 52, 22)), "JPEG", quality=90, restart_marker_rows=1)
    files["wide_jpg"] = pil_bytes(Image.fromarray(content(30, 80, 9)), "JPEG", quality=90, subsampling="4:2:0")
    files["rgb444_jpg"] = pil_bytes(Image.fromarray(content(27, 35, 10)), "JPEG", quality=85, subsampling="4:4:4")
    files["rgb422_jpg"] = pil_bytes(Image.fromarray(content(27, 35, 11)), "JPEG", quality=85, subsampling="4:2:2")
    files["grey_jpg"] = pil_bytes(Image.fromarray(content(33, 41, 12)[..., 2], "L"), "JPEG", quality=90)
    cmyk = Image.fromarray(content(36, 48, 13)).convert("CMYK")
    files["cmyk_jpg"] = pil_bytes(cmyk, "JPEG", quality=90)
    cmyk_r = Image.fromarray(content(24, 40, 23)).convert("CMYK")
    files["cmyk_restart_jpg"] = pil_bytes(cmyk_r, "JPEG", quality=85, restart_marker_blocks=3)
    # Pillow's subsampling option on CMYK samples component 0 at 2x2 / 2x1 and the rest at 1x1: the
    # others get libjpeg's fancy upsampling
    files["cmyk_progressive_jpg"] = pil_bytes(Image.fromarray(content(36, 44, 24, noise=4.0)).convert("CMYK"), "JPEG", quality=90, progressive=True)
    files["cmyk_mixed_jpg"] = pil_bytes(Image.fromarray(content(30, 34, 25)).convert("CMYK"), "JPEG", quality=90, subsampling="4:2:0")
    files["cmyk422_jpg"] = pil_bytes(Image.fromarray(content(21, 27, 26)).convert("CMYK"), "JPEG", quality=90, subsampling="4:2:2")
    # written by hand (encode_jpeg_4): YCCK, and sampling layouts Pillow cannot write
    files["ycck_jpg"] = encode_jpeg_4(28, 20, [(1, 1)] * 4, 2, 27)
    files["cmyk12_jpg"] = encode_jpeg_4(22, 19, [(1, 2), (1, 1), (1, 1), (1, 1)], 0, 28)
    files["cmyk41_jpg"] = encode_jpeg_4(37, 11, [(4, 1), (1, 1), (1, 1), (1, 1)], 0, 29)
    files["cmyk_narrow_jpg"] = encode_jpeg_4(4, 13, [(2, 2), (1, 1), (1, 1), (1, 1)], 0, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; PIL's open() does not apply it
    files["exif_rotated_jpg"] = pil_bytes(Image.fromarray(content(32, 48, 14)), "JPEG", quality=90, exif=exif.tobytes())
    big = content(360, 480, 15, noise=3.0)
    files["large_jpg"] = pil_bytes(Image.fromarray(big), "JPEG", quality=80, subsampling="4:2:0", progressive=True)
    return files


def make_broken(files):
    return {
        "broken_truncated_jpg": files["large_jpg"][: len(files["large_jpg"]) // 2],
        "broken_truncated_png": files["tall_png"][: len(files["tall_png"]) // 2],
        "broken_truncated_cmyk_jpg": files["cmyk_jpg"][: len(files["cmyk_jpg"]) * 2 // 3],
        "broken_text_png": b"this is not an image\n",
    }


def filename(name):
    stem, ext = name.rsplit("_", 1)
    return f"{stem}.{ext}"


# ---------------------------------------------------------------------------------------------

def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def expected_for(name, data, p336, p28):
    img = Image.open(io.BytesIO(data))
    mode = img.mode
    rgb = img.convert("RGB")
    bg = tuple(int(x * 255) for x in MEAN)
    sq = expand2square(rgb, bg)
    out = {}
    for key, proc, size, image in [("336", p336, 336, sq), ("28", p28, 28, sq), ("28_nopad", p28, 28, rgb)]:
        pv = proc.preprocess(image, return_tensors="np")["pixel_values"][0]
        assert pv.dtype == np.float32
        # The uint8 image the processor normalises, by HF's own resize and center_crop.
        crop = proc.center_crop(proc.resize(np.transpose(np.array(image), (2, 0, 1)), SizeDict(shortest_edge=size), resample=3),
                                SizeDict(height=size, width=size))
        assert crop.dtype == np.uint8 and crop.shape == (3, size, size), (crop.dtype, crop.shape)
        out[key] = (pv, np.transpose(crop, (1, 2, 0)))
    return mode, np.array(rgb), out


def lut(p):
    """The processor's output for every level in every channel (a 16x16 image holding 0..255)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = np.stack([levels] * 3, 0)
    out = p.normalize(p.rescale(img, 1 / 255), MEAN, STD)
    return out.reshape(3, 256).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="recompute and compare with the stored files; write nothing")
    args = ap.parse_args()
    p336, p28 = processor(336), processor(28)
    files = make_sources()
    broken = make_broken(files)
    regenerated_differ = []
    if args.check:
        # Expected values from the stored sources, so that --check under another Pillow/transformers
        # tests that version against the stored expectations (the encoders may write other bytes).
        for group in (files, broken):
            for name in group:
                with open(os.path.join(SRC, filename(name)), "rb") as f:
                    stored_bytes = f.read()
                if stored_bytes != group[name]:
                    regenerated_differ.append(filename(name))
                group[name] = stored_bytes
    tensors = {}
    crops = {}
    meta = {"pillow": PIL.__version__, "libjpeg_turbo": features.version("libjpeg_turbo"), "transformers": transformers.__version__,
            "numpy": np.__version__, "mean": MEAN, "std": STD, "background": [int(x * 255) for x in MEAN], "images": {}, "broken": {}}
    L = lut(p336)
    assert np.array_equal(L.view(np.uint32), lut(p28).view(np.uint32))
    tensors["lut"] = L
    for name, data in files.items():
        mode, rgb, out = expected_for(name, data, p336, p28)
        # pixel_values == lut[c][crop] bit for bit: the uint8 crop carries all of HF's output.
        for key, (pv, crop) in out.items():
            via_lut = np.stack([L[c][crop[..., c]] for c in range(3)], 0)
            if not np.array_equal(via_lut.view(np.uint32), pv.view(np.uint32)):
                print(f"FAIL {name}: {key} pixel_values are not lut[crop]", file=sys.stderr)
                sys.exit(1)
        if name not in NO_RGB:
            tensors[f"{name}.rgb"] = rgb
        tensors[f"{name}.crop28"] = out["28"][1]
        if name in NOPAD:
            tensors[f"{name}.crop28_nopad"] = out["28_nopad"][1]
        if name in CROP336:
            crops[name] = out["336"][1]
        meta["images"][name] = {"file": "src/" + filename(name), "mode": mode, "width": rgb.shape[1], "height": rgb.shape[0],
                                "sha256_rgb": sha(rgb), "sha256_pv336": sha(out["336"][0]), "sha256_pv28": sha(out["28"][0]),
                                "crop336": f"crops/{filename(name)}.png" if name in CROP336 else None}
    for name, data in broken.items():
        try:
            Image.open(io.BytesIO(data)).convert("RGB")
            print(f"FAIL {name}: PIL reads it", file=sys.stderr)
            sys.exit(1)
        except Exception as e:  # PIL's own complaint, for the record
            meta["broken"][name] = {"file": "src/" + filename(name), "pil_error": f"{type(e).__name__}: {e}"}

    if args.check:
        stored = load_file(os.path.join(HERE, "expected.safetensors"))
        bad = [k for k in tensors if k not in stored or not np.array_equal(stored[k], tensors[k])]
        for name, crop in crops.items():
            if not np.array_equal(np.array(Image.open(os.path.join(HERE, "crops", filename(name) + ".png"))), crop):
                bad.append(f"crops/{filename(name)}.png")
        if regenerated_differ:
            print("note: this Pillow encodes these sources to other bytes (not an error):", regenerated_differ)
        print("check:", "ok" if not bad else f"differs: {bad}")
        sys.exit(1 if bad else 0)

    os.makedirs(SRC, exist_ok=True)
    os.makedirs(os.path.join(HERE, "crops"), exist_ok=True)
    for name, crop in crops.items():
        Image.fromarray(crop).save(os.path.join(HERE, "crops", filename(name) + ".png"), optimize=True)
    for name, data in {**files, **broken}.items():
        with open(os.path.join(SRC, filename(name)), "wb") as f:
            f.write(data)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(HERE, "expected.safetensors"))
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print("wrote", len(files), "images,", len(broken), "broken files")


if __name__ == "__main__":
    main()
