"""Task metrics on hand-built inputs whose answers are worked out by hand."""

import math

import numpy as np
import pytest

from edgekit.quality import metrics


def _one_hot(indices, classes):
    out = np.zeros((1, len(indices), classes), np.float32)
    out[0, np.arange(len(indices)), indices] = 1.0
    return out


def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    charset = ["blank", "a", "b", " "]
    # a a _ a b b ' ' _  ->  "a" (repeat merged), blank separates the next "a", "b" merged, then space
    probs = _one_hot([1, 1, 0, 1, 2, 2, 3, 0], 4)
    assert metrics.ctc_greedy_decode(probs, charset) == ["aab "]
    assert metrics.ctc_greedy_decode(probs[0], charset) == ["aab "]  # [T, C] accepted
    assert metrics.ctc_greedy_decode(_one_hot([0, 0, 0], 4), charset) == [""]


def test_ctc_decode_rejects_wrong_class_count():
    with pytest.raises(ValueError, match="5 classes but the charset has 4"):
        metrics.ctc_greedy_decode(np.zeros((1, 3, 5)), ["blank", "a", "b", " "])


def test_text_agreement_counts_identical_lines():
    assert metrics.text_agreement(["ab", "c", "d"], ["ab", "c", "x"]) == pytest.approx(2 / 3)
    assert metrics.text_agreement([], []) == 1.0
    assert metrics.text_agreement([" ab", "a b"], ["ab ", "ab"]) == pytest.approx(0.5)  # ends ignored, inner space counts
    with pytest.raises(ValueError):
        metrics.text_agreement(["a"], [])


def test_edit_distance_and_char_accuracy():
    assert metrics.edit_distance("kitten", "sitting") == 3
    assert metrics.edit_distance("", "abc") == 3
    assert metrics.char_accuracy("sitting", "kitten") == pytest.approx(0.5)  # 1 - 3/6
    assert metrics.char_accuracy("", "") == 1.0
    assert metrics.char_accuracy("completely different", "ab") == 0.0  # clipped at 0


def test_mask_iou_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, 0:4] = True  # 4 pixels
    b[0, 2:4] = True  # 2 pixels, both inside a
    b[1, 0:2] = True  # 2 pixels outside a
    assert metrics.mask_iou(a, b) == pytest.approx(2 / 6)
    assert metrics.mask_iou(np.zeros((3, 3), bool), np.zeros((3, 3), bool)) == 1.0
    assert metrics.mask_iou(a, np.zeros((4, 4), bool)) == 0.0
    with pytest.raises(ValueError):
        metrics.mask_iou(a, np.zeros((2, 2), bool))


def test_binary_mask_is_strictly_greater_than_threshold():
    m = metrics.binary_mask(np.array([0.29, 0.3, 0.31]), 0.3)
    assert m.tolist() == [False, False, True]


def test_mean_mask_iou_over_samples():
    ref = [np.array([[0.9, 0.9], [0.0, 0.0]]), np.zeros((2, 2))]
    new = [np.array([[0.9, 0.0], [0.0, 0.0]]), np.zeros((2, 2))]
    assert metrics.mean_mask_iou(ref, new, 0.3) == pytest.approx((0.5 + 1.0) / 2)


def test_cosine_rows_and_mean_cosine():
    a = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 5.0], [1.0, 0.0]])
    np.testing.assert_allclose(metrics.cosine_rows(a, b), [0.0, 1 / math.sqrt(2), 1.0, 0.0])
    assert metrics.mean_cosine([a[:2], a[2:]], [b[:2], b[2:]]) == pytest.approx((1 / math.sqrt(2) + 1.0) / 4)
    with pytest.raises(ValueError):
        metrics.cosine_rows(a, b[:2])
