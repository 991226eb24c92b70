"""Task-level fidelity metrics: CTC text decoding/agreement, text-mask IoU and embedding cosine (numpy only)."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np


def ctc_greedy_decode(probs: np.ndarray, charset: Sequence[str], blank: int = 0) -> List[str]:
    """Greedy CTC decode of [B,T,C] (or [T,C]) scores: argmax, merge repeats, drop blanks (as PaddleOCR does)."""
    arr = np.asarray(probs)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"CTC decode expects scores shaped [batch, time, classes], got {arr.shape}")
    if arr.shape[-1] != len(charset):
        raise ValueError(f"CTC scores have {arr.shape[-1]} classes but the charset has {len(charset)} entries")
    idx = arr.argmax(axis=-1)
    texts = []
    for row in idx:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        keep &= row != blank
        texts.append("".join(charset[i] for i in row[keep]))
    return texts


def same_line(a: str, b: str) -> bool:
    """Two recognised lines read the same: identical text, spaces at the ends of a line ignored. A cropped line's edge
    spaces carry no text, and an OCR model is often undecided there (PP-OCRv4 rec: space against blank near 0.50/0.49
    on a line's first or last timesteps; OpenVINO's own bf16 run of the FP32 model adds or drops such a space on 26 of
    1056 held-out lines). PaddleOCR's RecMetric (ignore_space=True, its default) drops every space; a space inside a
    line still counts here."""
    return a.strip() == b.strip()


def text_agreement(ref_texts: Sequence[str], new_texts: Sequence[str]) -> float:
    """Fraction of lines that read the same (`same_line`); 1.0 for no lines."""
    if len(ref_texts) != len(new_texts):
        raise ValueError(f"{len(ref_texts)} reference lines vs {len(new_texts)} candidate lines")
    if not ref_texts:
        return 1.0
    return sum(same_line(a, b) for a, b in zip(ref_texts, new_texts)) / len(ref_texts)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(pred: str, truth: str) -> float:
    """1 - edit distance / len(truth), clipped to [0, 1]; 1.0 when both are empty."""
    if not truth:
        return 1.0 if not pred else 0.0
    return max(0.0, 1.0 - edit_distance(pred, truth) / len(truth))


def binary_mask(prob_map: np.ndarray, thresh: float) -> np.ndarray:
    """Binarise a probability map at `thresh` (strictly greater, as DB post-processing does)."""
    return np.asarray(prob_map) > thresh


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks count as identical (1.0)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def mean_mask_iou(ref_maps: Sequence[np.ndarray], new_maps: Sequence[np.ndarray], thresh: float) -> float:
    """Mean text-mask IoU over samples, each map binarised at `thresh`."""
    if len(ref_maps) != len(new_maps):
        raise ValueError(f"{len(ref_maps)} reference maps vs {len(new_maps)} candidate maps")
    if not ref_maps:
        return 1.0
    return float(np.mean([mask_iou(binary_mask(r, thresh), binary_mask(n, thresh)) for r, n in zip(ref_maps, new_maps)]))


def cosine(a, b) -> float:
    """Cosine similarity of two arrays taken as flat float64 vectors: 1.0 if both are zero, 0.0 if one is.

    The one output-cosine of edgekit: fidelity checks, compression reports and the INT8 searches all use it."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of two [N, D] (or [D]) arrays; zero vectors give 0."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"embedding shapes differ: {a.shape} vs {b.shape}")
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.where(denom > 0, dots / np.where(denom > 0, denom, 1.0), 0.0)


def mean_cosine(ref: Sequence[np.ndarray], new: Sequence[np.ndarray]) -> float:
    """Mean cosine similarity over all embedding rows of all samples."""
    if len(ref) != len(new):
        raise ValueError(f"{len(ref)} reference embeddings vs {len(new)} candidate embeddings")
    if not ref:
        return 1.0
    return float(np.mean(np.concatenate([cosine_rows(r, n) for r, n in zip(ref, new)])))
