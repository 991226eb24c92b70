"""report.html and the text renderers on real results: self-contained, every chart drawn, energy never crashes."""

from __future__ import annotations

import re

import pytest

from edgekit.report import charts
from edgekit.report.html import render
from edgekit.report.text import bench_rows, md_cell


def _energy(result, **fields):
    base = dict(available=True, source="tegrastats", rails=["POM_5V_IN"], samples=20, idle_samples=10, window_s=result.timing.duration_s)
    base.update(fields)
    return result.model_copy(update={"energy": result.energy.model_copy(update=base)})


def test_energy_without_idle_baseline_renders_instead_of_crashing(real_result):
    # an available measurement without an idle baseline: energy_above_idle is None (formatting it crashed before)
    r = _energy(real_result, avg_power_w=1.5, energy_per_inference_mj=12.345, energy_above_idle_per_inference_mj=None, idle_power_w=None)
    row = dict(bench_rows(r))["energy / inference"]
    assert row == "12.35 mJ, 1.50 W avg [tegrastats]"
    html = render(r)
    assert "12.35 mJ / inference" in html and "above idle" not in html


def test_power_trace_chart_from_replayed_capture(real_result):
    # idle at ~1.02 W then the timed window at ~2 W: sampled values of the Jetson Nano capture (tests/fixtures)
    trace = [[-1.0 + 0.1 * i, 1.022] for i in range(8)] + [[0.1 * i, 1.997] for i in range(int(real_result.timing.duration_s * 10) + 1)]
    r = _energy(real_result, avg_power_w=1.997, idle_power_w=1.022, energy_per_inference_mj=30.0, energy_above_idle_per_inference_mj=14.6,
                trace=trace, idle_window=[-1.0, -0.3])
    html = render(r)
    svg = re.search(r'<svg data-chart="power-trace".*?</svg>', html, re.S).group(0)
    assert 'class="timed-window"' in svg and 'class="idle-window"' in svg and 'class="idle-baseline"' in svg
    assert "30.00 mJ / inference (14.60 above idle)" in svg
    assert svg.count(",") >= len(trace)  # every sample is a polyline point


def test_report_is_self_contained_and_small(real_result):
    html = render(real_result)
    assert not re.search(r"<script|\bsrc=|\bhref=|@import|url\(", html)  # nothing to fetch, nothing to run
    assert re.findall(r'data-chart="([a-z-]+)"', html) == ["latency-histogram", "latency-series"]
    assert len(html.encode()) < 60_000


def test_histogram_marks_and_bins_count_every_sample(real_result):
    s = real_result.timing.stats
    svg = charts.latency_histogram(real_result.timing.samples_ms, s.median_ms, s.p90_ms, s.p99_ms)
    for mark in ("mark-median", "mark-p90", "mark-p99"):
        assert mark in svg
    assert f"median {s.median_ms:.2f} ms" in svg
    assert charts.latency_histogram([], 0, 0, 0) == ""


def test_series_overlays_thermal_and_throttle(real_result):
    svg = charts.latency_series(real_result.timing.samples_ms, {"before": {"cpu-thermal": 41.0}, "after": {"cpu-thermal": 63.0}, "throttled": True})
    assert "cpu-thermal 41→63 °C" in svg and 'class="throttled"' in svg
    plain = charts.latency_series(real_result.timing.samples_ms, {"before": {}, "after": {}, "throttled": None})
    assert 'class="thermal"' not in plain and 'class="throttled"' not in plain


def test_long_series_is_thinned_but_keeps_spikes():
    samples = [10.0] * 20000
    samples[12345] = 99.0
    svg = charts.latency_series(samples)
    pts = re.search(r'class="series"[^>]*points="([^"]+)"', svg).group(1).split()
    assert len(pts) <= 1600
    assert min(float(p.split(",")[1]) for p in pts) < charts.MT + 20  # the 99 ms spike is near the top of the plot


def test_variants_scatter_budget_front_and_choice():
    pts = [{"label": "ort/fp32", "latency": 30.0, "score": 1.0, "status": "meets budget"},
           {"label": "ov/int8", "latency": 12.0, "score": 0.995, "status": "chosen"},
           {"label": "ort/int8", "latency": 10.0, "score": 0.90, "status": "violates budget"},
           {"label": "tfl/fp32", "latency": 35.0, "score": 0.999, "status": "meets budget"}]
    svg = charts.variants_scatter(pts, 0.99, "IoU")
    assert 'class="budget"' in svg and 'class="variant chosen"' in svg
    front = re.search(r'class="pareto"[^>]*points="([^"]+)"', svg).group(1).split()
    assert len(front) == 3  # ort/int8, ov/int8, ort/fp32; tfl/fp32 is dominated


def test_markdown_cells_escape_pipes():
    assert md_cell("cos 1.0, max|Δ| 2e-3") == r"cos 1.0, max\|Δ\| 2e-3"
    assert md_cell("a\nb") == "a b"
