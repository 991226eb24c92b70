"""converters/equalize.py: range search, cross-layer equalisation and bias correction on small conv weights and heavy-tailed activations."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgekit.converters.equalize import (  # noqa: E402
    _quant_mse, corrected_bias, equalize_pair, quantize_weight_per_channel, sample_values, search_range)


@pytest.mark.parametrize("symmetric", [False, True])
def test_range_search_never_scores_worse_than_minmax_and_wins_on_a_heavy_tail(symmetric):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_t(2, size=20000), rng.normal(size=20000)]).astype(np.float32)
    if not symmetric:
        x = np.maximum(x, -0.5)
    qmin, qmax = (-128, 127) if symmetric else (0, 255)
    lo, hi = float(x.min()), float(x.max())
    a, b, mse, base = search_range(x, lo, hi, qmin, qmax, symmetric)
    assert base == pytest.approx(_quant_mse(x, lo, hi, qmin, qmax, symmetric))
    assert mse == pytest.approx(_quant_mse(x, a, b, qmin, qmax, symmetric))
    assert mse < 0.95 * base  # a heavy tail: clipping it lowers the MSE
    # a uniform tensor: min/max is already best, the search keeps it (never worse)
    u = rng.uniform(-1, 3, size=10000).astype(np.float32)
    a2, b2, mse2, base2 = search_range(u, float(u.min()), float(u.max()), qmin, qmax, symmetric)
    assert mse2 <= base2


def test_sample_values_keeps_the_extremes():
    x = np.random.default_rng(1).normal(size=(4, 8, 32, 32)).astype(np.float32)
    s = sample_values(x, 100, np.random.default_rng(0))
    assert s.size == 102 and s.min() == x.min() and s.max() == x.max()


def test_act_quant_mse_range_is_recorded_and_not_worse_on_its_samples():
    from edgekit.converters.qat import _ActQuant

    q = _ActQuant(torch, False, "mse")
    rng = np.random.default_rng(2)
    for _ in range(3):
        q(torch.from_numpy(rng.standard_cauchy(size=(2, 8, 16, 16)).astype(np.float32)))
    q.init_ranges()
    assert q.range_search["mse"] <= q.range_search["mse_minmax"]
    assert q.range_search["mse"] < q.range_search["mse_minmax"]  # heavy-tailed: the searched range is strictly better


def test_cross_layer_equalisation_keeps_the_function_and_equalises_ranges():
    rng = np.random.default_rng(8)
    w1 = (rng.normal(size=(32, 8, 3, 3)) * rng.uniform(0.01, 4, size=(32, 1, 1, 1))).astype(np.float32)  # uneven channels
    w2 = rng.normal(size=(16, 32, 1, 1)).astype(np.float32)
    b1 = np.random.default_rng(3).normal(size=w1.shape[0]).astype(np.float32)
    w1n, b1n, w2n, s = equalize_pair(w1, b1, w2)
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(2, w1.shape[1], 12, 12)).astype(np.float32))

    def f(a, b, c):
        h = torch.relu(torch.nn.functional.conv2d(x, torch.from_numpy(a), torch.from_numpy(b), padding=a.shape[-1] // 2))
        return torch.nn.functional.conv2d(h, torch.from_numpy(c), padding=c.shape[-1] // 2)

    ref, got = f(w1, b1, w2), f(w1n, b1n, w2n)
    assert float((got - ref).abs().max()) < 1e-3 * float(ref.abs().max())
    r1 = np.abs(w1n.reshape(w1n.shape[0], -1)).max(1)
    r2 = np.abs(np.moveaxis(w2n, 1, 0).reshape(w2n.shape[1], -1)).max(1)
    np.testing.assert_allclose(r1, r2, rtol=1e-4)  # both layers' per-channel ranges are equal after CLE
    spread = lambda r: r.max() / max(r.min(), 1e-12)  # noqa: E731
    r1_before = np.abs(w1.reshape(w1.shape[0], -1)).max(1)
    assert spread(r1) <= spread(r1_before)
    assert not np.allclose(s, 1.0)


def test_cross_layer_equalisation_of_a_depthwise_follower_keeps_the_function():
    rng = np.random.default_rng(5)
    w1 = (rng.normal(size=(16, 8, 1, 1)) * rng.uniform(0.01, 3, size=(16, 1, 1, 1))).astype(np.float32)
    w2 = rng.normal(size=(16, 1, 3, 3)).astype(np.float32)
    w1n, _, w2n, _ = equalize_pair(w1, None, w2, depthwise2=True)
    x = torch.from_numpy(rng.normal(size=(1, 8, 10, 10)).astype(np.float32))
    f = lambda a, c: torch.nn.functional.conv2d(torch.relu(torch.nn.functional.conv2d(x, torch.from_numpy(a))), torch.from_numpy(c), groups=16)  # noqa: E731
    assert float((f(w1n, w2n) - f(w1, w2)).abs().max()) < 1e-4


def test_bias_correction_reduces_the_mean_output_error_of_a_quantized_conv():
    w = np.random.default_rng(9).normal(scale=0.1, size=(24, 16, 3, 3)).astype(np.float32)
    w = w * np.random.default_rng(6).uniform(0.2, 5.0, size=(1, w.shape[1], 1, 1)).astype(np.float32)  # uneven input channels
    wq = quantize_weight_per_channel(w, 0)
    rng = np.random.default_rng(7)
    mean = rng.uniform(0.5, 3.0, size=w.shape[1]).astype(np.float32)  # post-ReLU-like inputs with non-zero means
    x = torch.from_numpy((rng.exponential(size=(4, w.shape[1], 16, 16)) * mean[None, :, None, None]).astype(np.float32))
    b = np.zeros(w.shape[0], np.float32)
    bc = corrected_bias(w, wq, b, x.mean(dim=(0, 2, 3)).numpy())
    conv = lambda ww, bb: torch.nn.functional.conv2d(x, torch.from_numpy(ww), torch.from_numpy(bb))  # noqa: E731
    ref = conv(w, b)
    err_before = (conv(wq, b) - ref).mean(dim=(0, 2, 3)).abs().mean()
    err_after = (conv(wq, bc) - ref).mean(dim=(0, 2, 3)).abs().mean()
    assert float(err_after) < 0.2 * float(err_before)
