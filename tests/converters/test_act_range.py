"""converters/act_range.py: the MSE range search on heavy-tailed and uniform activations, and its use by the qat step's quantizers."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgekit.converters.act_range import _quant_mse, sample_values, search_range  # noqa: E402


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
