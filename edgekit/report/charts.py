"""Charts for report.html as inline SVG strings, generated here: no JavaScript, no CDN, a few kB per chart.

Each function returns one `<svg data-chart="NAME">` element (the browser test looks for these) or an empty string
when there is nothing to draw. Text goes through html.escape; numbers are rounded to keep the file small.
"""

from __future__ import annotations

import math
from html import escape
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

W, H = 640, 260
ML, MR, MT, MB = 56, 16, 34, 38  # margins: tick labels, axis title; the legend row sits in the top margin

COLORS = {
    "bar": "#4e79a7",
    "line": "#4e79a7",
    "median": "#e15759",
    "p90": "#f28e2b",
    "p99": "#b07aa1",
    "idle": "#76b7b2",
    "window": "#edc948",
    "thermal": "#e15759",
    "ok": "#59a14f",
    "bad": "#bab0ac",
    "chosen": "#e15759",
    "front": "#f28e2b",
}


def _f(x: float) -> str:
    """Short number for SVG coordinates."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def nice_ticks(lo: float, hi: float, n: int = 5) -> List[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + step * 1e-6:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}".rstrip("0").rstrip(".")
    if a >= 1:
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.3g}"


class _Frame:
    """Maps data coordinates into the plot area and draws axes."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, w: int = W, h: int = H):
        if x1 <= x0:
            x1 = x0 + 1.0
        if y1 <= y0:
            y1 = y0 + 1.0
        self.x0, self.x1, self.y0, self.y1, self.w, self.h = x0, x1, y0, y1, w, h

    def x(self, v: float) -> float:
        return ML + (v - self.x0) / (self.x1 - self.x0) * (self.w - ML - MR)

    def y(self, v: float) -> float:
        return self.h - MB - (v - self.y0) / (self.y1 - self.y0) * (self.h - MT - MB)

    def axes(self, xlabel: str, ylabel: str, xticks: Optional[Sequence[float]] = None, yticks: Optional[Sequence[float]] = None) -> str:
        out = [f'<g class="axes" font-size="11" fill="#333">',
               f'<line x1="{ML}" y1="{self.h - MB}" x2="{self.w - MR}" y2="{self.h - MB}" stroke="#888"/>',
               f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{self.h - MB}" stroke="#888"/>']
        for t in xticks if xticks is not None else nice_ticks(self.x0, self.x1):
            if self.x0 - 1e-9 <= t <= self.x1 + 1e-9:
                out.append(f'<text x="{_f(self.x(t))}" y="{self.h - MB + 14}" text-anchor="middle">{_fmt(t)}</text>')
        for t in yticks if yticks is not None else nice_ticks(self.y0, self.y1, 4):
            if self.y0 - 1e-9 <= t <= self.y1 + 1e-9:
                yy = _f(self.y(t))
                out.append(f'<line x1="{ML}" y1="{yy}" x2="{self.w - MR}" y2="{yy}" stroke="#eee"/>')
                out.append(f'<text x="{ML - 4}" y="{yy}" dy="4" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<text x="{(ML + self.w - MR) / 2:.0f}" y="{self.h - 6}" text-anchor="middle">{escape(xlabel)}</text>')
        out.append(f'<text transform="translate(13 {(MT + self.h - MB) / 2:.0f}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>')
        out.append("</g>")
        return "".join(out)


def _svg(name: str, title: str, body: str, w: int = W, h: int = H) -> str:
    return (f'<svg data-chart="{name}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            f'role="img" font-family="sans-serif"><title>{escape(title)}</title>{body}</svg>')


def _legend(items: Sequence[Tuple[str, str]], x: float = ML, y: float = 14, w: int = W) -> str:
    """Legend entries in a row above the plot area (wrapping), so they never cover data."""
    out = ['<g class="legend" font-size="11">']
    cx, cy = x, y
    for color, label in items:
        width = 18 + 6.2 * len(label)
        if cx + width > w - MR and cx > x:
            cx, cy = x, cy + 13
        out.append(f'<rect x="{_f(cx)}" y="{_f(cy - 8)}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{_f(cx + 14)}" y="{_f(cy + 1)}">{escape(label)}</text>')
        cx += width + 10
    out.append("</g>")
    return "".join(out)


def latency_histogram(samples_ms: Sequence[float], median: float, p90: float, p99: float, bins: int = 40) -> str:
    """Histogram of the timed samples with the median, p90 and p99 marked."""
    a = np.asarray(samples_ms, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return ""
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.01, 1e-3)
    counts, edges = np.histogram(a, bins=min(bins, max(5, a.size // 2)), range=(lo, hi))
    fr = _Frame(lo, hi, 0, float(counts.max()) * 1.08)
    body = [fr.axes("latency (ms)", "runs")]
    body.append(f'<g class="bars" fill="{COLORS["bar"]}">')
    for c, e0, e1 in zip(counts, edges[:-1], edges[1:]):
        if c:
            x0, x1 = fr.x(e0), fr.x(e1)
            body.append(f'<rect x="{_f(x0)}" y="{_f(fr.y(c))}" width="{_f(max(x1 - x0 - 0.5, 0.5))}" height="{_f(fr.y(0) - fr.y(c))}"/>')
    body.append("</g>")
    for key, v in (("median", median), ("p90", p90), ("p99", p99)):
        xx = _f(fr.x(min(max(v, lo), hi)))
        body.append(f'<line class="mark-{key}" x1="{xx}" y1="{MT}" x2="{xx}" y2="{H - MB}" stroke="{COLORS[key]}" stroke-width="2" stroke-dasharray="4 2"/>')
    body.append(_legend([(COLORS["median"], f"median {median:.2f} ms"), (COLORS["p90"], f"p90 {p90:.2f} ms"), (COLORS["p99"], f"p99 {p99:.2f} ms")]))
    return _svg("latency-histogram", f"latency histogram of {a.size} timed runs", "".join(body))


def latency_series(samples_ms: Sequence[float], thermal: Optional[Dict[str, object]] = None, max_points: int = 1500) -> str:
    """Latency of each timed run in order (drift, warm-up, throttling), with the thermal readings overlaid.

    `thermal`: {"before": {zone: °C}, "after": {zone: °C}, "throttled": bool|None}; the harness reads the sensors
    before and after the timed window, so those two readings are drawn at its ends on a second axis."""
    a = np.asarray(samples_ms, dtype=float)
    if a.size == 0:
        return ""
    idx = np.arange(a.size)
    if a.size > max_points:  # keep min and max of each bucket so spikes stay visible
        k = int(math.ceil(a.size / (max_points / 2)))
        keep = []
        for s in range(0, a.size, k):
            blk = a[s : s + k]
            keep += [s + int(blk.argmin()), s + int(blk.argmax())]
        idx = np.array(sorted(set(keep)))
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    pad = (hi - lo) * 0.05 or max(hi * 0.01, 1e-3)
    fr = _Frame(0, max(a.size - 1, 1), lo - pad, hi + pad)
    pts = " ".join(f"{_f(fr.x(i))},{_f(fr.y(a[i]))}" for i in idx)
    body = [fr.axes("timed run #", "latency (ms)"),
            f'<polyline class="series" fill="none" stroke="{COLORS["line"]}" stroke-width="1" points="{pts}"/>']
    med = float(np.median(a))
    body.append(f'<line x1="{ML}" y1="{_f(fr.y(med))}" x2="{W - MR}" y2="{_f(fr.y(med))}" stroke="{COLORS["median"]}" stroke-dasharray="4 2"/>')
    legend = [(COLORS["line"], "latency per run"), (COLORS["median"], f"median {med:.2f} ms")]
    th = thermal or {}
    before, after = th.get("before") or {}, th.get("after") or {}
    zones = [z for z in before if z in after][:3]
    if zones:
        temps = [before[z] for z in zones] + [after[z] for z in zones]
        tlo, thi = min(temps) - 2, max(temps) + 2
        tf = _Frame(0, max(a.size - 1, 1), tlo, thi)
        body.append(f'<g class="thermal" fill="{COLORS["thermal"]}" stroke="{COLORS["thermal"]}" font-size="10">')
        for z in zones:
            x0, y0, x1, y1 = tf.x(0), tf.y(before[z]), tf.x(a.size - 1), tf.y(after[z])
            body.append(f'<line x1="{_f(x0)}" y1="{_f(y0)}" x2="{_f(x1)}" y2="{_f(y1)}" stroke-dasharray="2 3"/>'
                        f'<circle cx="{_f(x0)}" cy="{_f(y0)}" r="3"/><circle cx="{_f(x1)}" cy="{_f(y1)}" r="3"/>'
                        f'<text x="{_f(x1 - 4)}" y="{_f(y1 - 5)}" text-anchor="end" stroke="none">{escape(str(z))} {before[z]:.0f}→{after[z]:.0f} °C</text>')
        body.append("</g>")
        legend.append((COLORS["thermal"], "temperature before/after (right scale)"))
    if th.get("throttled"):
        body.append(f'<rect class="throttled" x="{ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}" fill="{COLORS["thermal"]}" fill-opacity="0.08"/>'
                    f'<text x="{W - MR - 4}" y="{MT + 12}" text-anchor="end" font-size="11" fill="{COLORS["thermal"]}">device reported throttling</text>')
    body.append(_legend(legend))
    return _svg("latency-series", f"latency of {a.size} timed runs in order", "".join(body))


def power_trace(trace: Sequence[Sequence[float]], idle_w: Optional[float], avg_w: Optional[float], window_s: Optional[float],
                idle_window: Optional[Sequence[float]], energy_label: str) -> str:
    """Sampled power over idle baseline + timed window (shaded), idle baseline line and the energy per inference."""
    if not trace:
        return ""
    t = np.array([p[0] for p in trace], dtype=float)
    w = np.array([p[1] for p in trace], dtype=float)
    x0 = min(float(t.min()), idle_window[0] if idle_window else 0.0)
    x1 = max(float(t.max()), window_s or 0.0)
    ylo = 0.0
    yhi = float(np.nanmax(w)) * 1.15 or 1.0
    fr = _Frame(x0, x1, ylo, yhi)
    body = [fr.axes("time from start of timed runs (s)", "power (W)")]
    if idle_window:
        body.append(f'<rect class="idle-window" x="{_f(fr.x(idle_window[0]))}" y="{MT}" width="{_f(fr.x(idle_window[1]) - fr.x(idle_window[0]))}" height="{H - MT - MB}" fill="{COLORS["idle"]}" fill-opacity="0.15"/>')
    if window_s:
        body.append(f'<rect class="timed-window" x="{_f(fr.x(0))}" y="{MT}" width="{_f(fr.x(window_s) - fr.x(0))}" height="{H - MT - MB}" fill="{COLORS["window"]}" fill-opacity="0.25"/>')
    pts = " ".join(f"{_f(fr.x(a))},{_f(fr.y(b))}" for a, b in zip(t, w))
    body.append(f'<polyline class="power" fill="none" stroke="{COLORS["line"]}" stroke-width="1.5" points="{pts}"/>')
    legend = [(COLORS["line"], "power samples"), (COLORS["window"], "timed window"), (COLORS["idle"], "idle baseline window")]
    if idle_w is not None:
        yy = _f(fr.y(idle_w))
        body.append(f'<line class="idle-baseline" x1="{ML}" y1="{yy}" x2="{W - MR}" y2="{yy}" stroke="{COLORS["idle"]}" stroke-width="2" stroke-dasharray="5 3"/>')
        legend.append((COLORS["idle"], f"idle {idle_w:.2f} W"))
    if avg_w is not None:
        legend.append((COLORS["line"], f"timed average {avg_w:.2f} W"))
    body.append(_legend(legend))
    body.append(f'<text class="energy" x="{W - MR - 4}" y="{MT + 12}" text-anchor="end" font-size="12" font-weight="bold">{escape(energy_label)}</text>')
    return _svg("power-trace", "power trace with idle baseline and timed window", "".join(body))


def variants_scatter(variants: Sequence[Dict[str, object]], budget: Optional[float], score_name: str) -> str:
    """Latency vs task score of every measured variant, the budget line, the Pareto front and the chosen one.

    `variants`: dicts with label, latency (ms), score, status ("chosen" marks the pick)."""
    pts = [v for v in variants if v.get("latency") is not None and v.get("score") is not None]
    if not pts:
        return ""
    from edgekit.quality.stats import pareto_front

    xs = [float(v["latency"]) for v in pts]
    ys = [float(v["score"]) for v in pts]
    yvals = ys + ([budget] if budget is not None else [])
    ylo, yhi = min(yvals), max(yvals)
    ypad = (yhi - ylo) * 0.1 or 0.01
    xpad = (max(xs) - min(xs)) * 0.1 or max(xs) * 0.1 or 1.0
    fr = _Frame(max(0.0, min(xs) - xpad), max(xs) + xpad, ylo - ypad, yhi + ypad)
    body = [fr.axes("median latency (ms)", score_name)]
    if budget is not None:
        yy = _f(fr.y(budget))
        body.append(f'<line class="budget" x1="{ML}" y1="{yy}" x2="{W - MR}" y2="{yy}" stroke="{COLORS["bad"]}" stroke-width="2" stroke-dasharray="6 3"/>'
                    f'<text x="{W - MR - 4}" y="{_f(fr.y(budget) + 14)}" text-anchor="end" font-size="11" fill="#666">budget {budget:.4g}</text>')
    front = pareto_front([{"latency": x, "score": y} for x, y in zip(xs, ys)])
    fpts = sorted((xs[i], ys[i]) for i in front)
    if len(fpts) > 1:
        body.append(f'<polyline class="pareto" fill="none" stroke="{COLORS["front"]}" stroke-width="1.5" points="{" ".join(f"{_f(fr.x(a))},{_f(fr.y(b))}" for a, b in fpts)}"/>')
    body.append('<g class="points" font-size="10">')
    for i, v in enumerate(pts):
        cx, cy = _f(fr.x(xs[i])), _f(fr.y(ys[i]))
        chosen = v.get("status") == "chosen"
        ok = budget is None or ys[i] >= budget
        color = COLORS["chosen"] if chosen else (COLORS["ok"] if ok else COLORS["bad"])
        r = 7 if chosen else 4.5
        ring = f' stroke="{COLORS["front"]}" stroke-width="2"' if i in front else ""
        body.append(f'<circle class="variant{" chosen" if chosen else ""}" cx="{cx}" cy="{cy}" r="{r}" fill="{color}"{ring}><title>{escape(str(v.get("label")))}: {xs[i]:.2f} ms, {ys[i]:.4f}</title></circle>'
                    f'<text x="{cx}" y="{_f(fr.y(ys[i]) - 9)}" text-anchor="middle">{escape(str(v.get("label")))}</text>')
    body.append("</g>")
    body.append(_legend([(COLORS["chosen"], "chosen"), (COLORS["ok"], "meets budget"), (COLORS["bad"], "violates budget"), (COLORS["front"], "Pareto front")]))
    return _svg("variants", "variants: latency against task score", "".join(body))


def step_timeline(steps: Sequence[Dict[str, object]]) -> str:
    """One bar per plan step: its duration (cached/skipped steps are thin), labelled with status and fidelity."""
    if not steps:
        return ""
    row = 26
    h = MT + row * len(steps) + MB
    total = sum(float(s.get("duration_s") or 0.0) for s in steps) or 1.0
    label_w = 150
    x_of = lambda v: label_w + v / total * (W - label_w - 230)  # noqa: E731
    body = ['<g class="steps" font-size="11">']
    t = 0.0
    for i, s in enumerate(steps):
        y = MT + i * row
        d = float(s.get("duration_s") or 0.0)
        status = str(s.get("status"))
        color = {"ran": COLORS["bar"], "cached": COLORS["idle"], "skipped": COLORS["bad"]}.get(status, COLORS["bar"])
        x0, x1 = x_of(t), x_of(t + d)
        body.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(str(s.get("step")))}</text>'
                    f'<rect class="step {escape(status)}" x="{_f(x0)}" y="{y + 4}" width="{_f(max(x1 - x0, 2))}" height="{row - 8}" fill="{color}"><title>{escape(str(s.get("step")))}: {status}, {d:.1f} s</title></rect>'
                    f'<text x="{_f(max(x1, x0 + 2) + 6)}" y="{y + 15}">{escape(status)} {d:.1f} s · {escape(str(s.get("fidelity") or "—"))}</text>')
        t += d
    body.append("</g>")
    body.append(f'<text x="{label_w}" y="{h - 12}" font-size="11" fill="#333">cumulative wall time, {total:.1f} s in all (bar = step duration)</text>')
    return _svg("step-timeline", "plan steps in order with duration and fidelity", "".join(body), h=h)


PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7")


def rounds_chart(artifacts: Sequence[Dict[str, object]]) -> str:
    """Median latency of each artifact in each interleaved round (one line per artifact)."""
    series = [(str(a["name"]), [float(x) for x in a["round_medians_ms"]]) for a in artifacts if a.get("round_medians_ms")]
    if not series:
        return ""
    n = max(len(s) for _, s in series)
    vals = [v for _, s in series for v in s]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.1 or hi * 0.05 or 1.0
    fr = _Frame(1, max(n, 2), max(0.0, lo - pad), hi + pad)
    body = [fr.axes("round", "median latency (ms)", xticks=list(range(1, n + 1)))]
    legend = []
    for k, (name, s) in enumerate(series):
        c = PALETTE[k % len(PALETTE)]
        pts = " ".join(f"{_f(fr.x(i + 1))},{_f(fr.y(v))}" for i, v in enumerate(s))
        body.append(f'<polyline class="round-line" fill="none" stroke="{c}" stroke-width="2" points="{pts}"/>')
        body += [f'<circle cx="{_f(fr.x(i + 1))}" cy="{_f(fr.y(v))}" r="3" fill="{c}"/>' for i, v in enumerate(s)]
        legend.append((c, name))
    body.append(_legend(legend))
    return _svg("rounds", "median latency per interleaved round", "".join(body))
