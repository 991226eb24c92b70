"""sweep-report.html: per device class a table, the Pareto front of latency (and energy) against task score,
and the recommended variant under the budget. Inline SVG, no JavaScript, one self-contained file."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edgekit.core.fsutil import atomic_write_text
from edgekit.quality.stats import median, pareto_front

W, H, PAD = 460, 260, 46


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def variant_rows(cells: Sequence[Dict[str, Any]], conversions: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One row per (device class, model, runtime, precision): medians over the class's boards."""
    groups: Dict[tuple, List[Dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["profile"], c["model"], c["runtime"] or "", c["precision"]), []).append(c)
    rows = []
    for (profile, model, runtime, precision), cs in sorted(groups.items()):
        done = [c for c in cs if c["status"] == "done" and c["result"]]
        med = [c["result"]["timing"]["stats"]["median_ms"] for c in done]
        energy = [c["result"]["energy"].get("energy_per_inference_mj") for c in done]
        energy = [e for e in energy if e is not None]
        conv = conversions.get(cs[0]["conversion"]) or {}
        info = conv.get("info") or {}
        rows.append({
            "profile": profile, "model": model, "runtime": (done[0]["result"]["runtime"]["name"] if done else info.get("runtime") or runtime or "-"),
            "precision": precision, "boards": len(cs), "done": len(done),
            "failed": [f"{c['board']}: {c['status']} {c['reason']}".strip() for c in cs if c["status"] != "done"],
            "median_ms": median(med) if med else None, "spread_ms": (min(med), max(med)) if med else None,
            "energy_mj": median(energy) if energy else None, "score": info.get("score"),
            "metric": info.get("task_metric"), "size_mb": (info.get("size_bytes") or 0) / 1e6 if info.get("size_bytes") else None,
            "status": "measured" if done else (cs[0]["status"]),
        })
    return rows


def pareto(points: List[Dict[str, Any]], x: str, y: str) -> List[int]:
    """Indices (into `points`) of the measured points no other point beats on lower x and higher y."""
    idx = [i for i, p in enumerate(points) if p.get(x) is not None and p.get(y) is not None]
    return [idx[k] for k in pareto_front([points[i] for i in idx], x, y)]


def recommend(rows: List[Dict[str, Any]], max_drop: float, budgets: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Fastest measured variant whose score keeps 1 - max_drop and that meets the latency/energy/size ceilings."""
    ok = []
    for r in rows:
        if r["median_ms"] is None or r["score"] is None or r["score"] < 1.0 - max_drop:
            continue
        if budgets.get("latency_ms") and r["median_ms"] > budgets["latency_ms"]:
            continue
        if budgets.get("energy_mj") and (r["energy_mj"] is None or r["energy_mj"] > budgets["energy_mj"]):
            continue
        if budgets.get("size_mb") and (r["size_mb"] is None or r["size_mb"] > budgets["size_mb"]):
            continue
        ok.append(r)
    return min(ok, key=lambda r: r["median_ms"]) if ok else None


def scatter(rows: List[Dict[str, Any]], x: str, xlabel: str, chosen: Optional[Dict[str, Any]], title: str) -> str:
    pts = [r for r in rows if r.get(x) is not None and r.get("score") is not None]
    if not pts:
        return f'<p class="none">{_e(title)}: no measured points</p>'
    xs, ys = [p[x] for p in pts], [p["score"] for p in pts]
    x0, x1 = 0.0, max(xs) * 1.1 or 1.0
    y0, y1 = min(min(ys), 0.9) - 0.005, 1.005
    sx = lambda v: PAD + (v - x0) / (x1 - x0) * (W - PAD - 12)  # noqa: E731
    sy = lambda v: H - PAD + 8 - (v - y0) / (y1 - y0) * (H - PAD - 8)  # noqa: E731
    front = pareto(pts, x, "score")
    fp = sorted((pts[i] for i in front), key=lambda p: p[x])
    parts = [f'<svg class="chart" role="img" aria-label="{_e(title)}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{W / 2}" y="14" text-anchor="middle" font-size="12">{_e(title)}</text>',
             f'<line x1="{PAD}" y1="{H - PAD + 8}" x2="{W - 12}" y2="{H - PAD + 8}" stroke="#444"/><line x1="{PAD}" y1="20" x2="{PAD}" y2="{H - PAD + 8}" stroke="#444"/>',
             f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle" font-size="11">{_e(xlabel)}</text>',
             f'<text x="12" y="{H / 2}" font-size="11" transform="rotate(-90 12 {H / 2})" text-anchor="middle">task score</text>']
    for t in range(5):
        xv = x0 + (x1 - x0) * t / 4
        yv = y0 + (y1 - y0) * t / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{H - PAD + 22}" font-size="9" text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{PAD - 4}" y="{sy(yv) + 3:.1f}" font-size="9" text-anchor="end">{yv:.3f}</text>')
    if len(fp) > 1:
        parts.append('<polyline class="front" fill="none" stroke="#d62728" stroke-width="1.5" points="' + " ".join(f"{sx(p[x]):.1f},{sy(p['score']):.1f}" for p in fp) + '"/>')
    for i, p in enumerate(pts):
        is_front, is_chosen = i in front, chosen is not None and p is chosen
        colour = "#2ca02c" if is_chosen else ("#d62728" if is_front else "#1f77b4")
        label = f"{p['model']} {p['runtime']}/{p['precision']}: {p[x]:.3g} {xlabel.split(' ')[-1]}, score {p['score']:.4f}"
        parts.append(f'<circle class="pt{" front" if is_front else ""}{" chosen" if is_chosen else ""}" cx="{sx(p[x]):.1f}" cy="{sy(p["score"]):.1f}" r="{6 if is_chosen else 4}" fill="{colour}"><title>{_e(label)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def latency_chart(rows: List[Dict[str, Any]], chosen: Optional[Dict[str, Any]], max_drop: float) -> str:
    """The report's own variants chart (budget line, Pareto front, chosen point), one point per variant."""
    from edgekit.report.charts import variants_scatter

    pts = [{"label": f"{r['runtime']}/{r['precision']}", "latency": r["median_ms"], "score": r["score"],
            "status": "chosen" if r is chosen else r["status"]} for r in rows]
    metric = next((r["metric"] for r in rows if r.get("metric")), "task score")
    return variants_scatter(pts, 1.0 - max_drop, metric) or '<p class="none">latency: no measured points</p>'


def render(cells: Sequence[Dict[str, Any]], conversions: Dict[str, Dict[str, Any]], max_drop: float, budgets: Dict[str, Any], title: str = "edgekit sweep") -> str:
    rows = variant_rows(cells, conversions)
    body = [f"<h1>{_e(title)}</h1>",
            f"<p>{len(cells)} cells: " + ", ".join(f"{sum(1 for c in cells if c['status'] == s)} {s}" for s in sorted({c['status'] for c in cells})) +
            f". Accuracy budget: drop ≤ {max_drop:.2%} of the task score" + "".join(f"; {k} ≤ {v:g}" for k, v in budgets.items() if v) + ".</p>"]
    for profile in sorted({r["profile"] for r in rows}):
        prow = [r for r in rows if r["profile"] == profile]
        boards = sorted({c["board"] for c in cells if c["profile"] == profile})
        body.append(f'<section class="device-class"><h2>device class {_e(profile)}</h2><p>boards: {_e(", ".join(boards))}</p>')
        for model in sorted({r["model"] for r in prow}):
            mrows = [r for r in prow if r["model"] == model]
            best = recommend(mrows, max_drop, budgets)
            rec = (f'<p class="recommended">recommended for {_e(model)}: <b>{_e(best["runtime"])}/{_e(best["precision"])}</b> — '
                   f'{best["median_ms"]:.2f} ms median over {best["done"]} board(s), {_e(best["metric"])} {best["score"]:.4f}</p>') if best else \
                  f'<p class="recommended none">no variant of {_e(model)} meets the budget on {_e(profile)}</p>'
            body.append(f"<h3>{_e(model)}</h3>{rec}")
            body.append('<table><tr><th>runtime</th><th>precision</th><th>median ms (boards)</th><th>board range ms</th><th>energy mJ/inf</th><th>score</th><th>size MB</th><th>status</th></tr>')
            for r in mrows:
                rng = f"{r['spread_ms'][0]:.2f}–{r['spread_ms'][1]:.2f}" if r["spread_ms"] else "—"
                body.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in [
                    r["runtime"], r["precision"], f"{r['median_ms']:.2f} ({r['done']}/{r['boards']})" if r["median_ms"] is not None else f"— (0/{r['boards']})", rng,
                    f"{r['energy_mj']:.2f}" if r["energy_mj"] is not None else "n/a", f"{r['score']:.4f}" if r["score"] is not None else "—",
                    f"{r['size_mb']:.2f}" if r["size_mb"] else "—", r["status"] + ("; " + "; ".join(r["failed"]) if r["failed"] else ""),
                ]) + "</tr>")
            body.append("</table>")
            body.append(latency_chart(mrows, best, max_drop))
            if any(r["energy_mj"] is not None for r in mrows):
                body.append(scatter(mrows, "energy_mj", "energy mJ", best, f"{model} on {profile}: energy vs score"))
            else:
                body.append('<p class="none">energy: no board of this class reported an energy source</p>')
        body.append("</section>")
    style = ("body{font-family:sans-serif;margin:1.5em;max-width:1000px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}.none{color:#777}.recommended b{color:#2ca02c}")
    return f'<!doctype html><html><head><meta charset="utf-8"><title>{_e(title)}</title><style>{style}</style></head><body>{"".join(body)}</body></html>\n'


def write_sweep_report(path: Path, cells: Sequence[Dict[str, Any]], spec) -> Path:
    """Atomic write of the report from the store's rows (conversions read back from the same store)."""
    from edgekit.fleet.store import SweepStore

    store = SweepStore(Path(path).parent / "sweep.sqlite")
    try:
        conversions = {c["conversion"]: store.conversion(c["conversion"]) for c in cells}
    finally:
        store.close()
    return atomic_write_text(path, render(cells, conversions, spec.max_drop_fraction, spec.budgets.model_dump()))
