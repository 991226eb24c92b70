"""report.html: one self-contained file (inline CSS + inline SVG, no script, no network) a person can open anywhere."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edgekit.report import charts
from edgekit.report.identity import identity
from edgekit.core.results import BenchmarkResult, DeployReport

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}.meta{color:#555;font-size:13px}.note{color:#666;font-size:13px}.warn{color:#a33}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts figure{flex:1 1 470px}figure{margin:0}figcaption{font-size:12px;color:#555}
table.identity td:first-child,table.summary td:first-child{white-space:nowrap}
code{background:#f3f3f3;padding:0 3px}svg{width:100%;max-width:720px;height:auto;background:#fff}
"""


def _table(rows: Sequence[Sequence[Any]], header: Optional[Sequence[str]] = None, cls: str = "") -> str:
    out = [f'<table class="{cls}">' if cls else "<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{escape(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _figure(svg: str, caption: str, missing: str) -> str:
    if not svg:
        return f'<p class="note">{escape(missing)}</p>'
    return f"<figure>{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def energy_label(e) -> str:
    """Energy per inference for labels; never formats a missing value (None above-idle when no idle baseline)."""
    if not e.available or e.energy_per_inference_mj is None:
        return "energy unavailable" + (f": {e.reason}" if e.reason else "")
    s = f"{e.energy_per_inference_mj:.2f} mJ / inference"
    if e.energy_above_idle_per_inference_mj is not None:
        s += f" ({e.energy_above_idle_per_inference_mj:.2f} above idle)"
    return s


def benchmark_sections(b: BenchmarkResult, profile: Optional[str] = None, power_mode: Optional[str] = None) -> List[str]:
    from edgekit.report.text import bench_rows

    s = b.timing.stats
    parts = ["<h2>Benchmark</h2>", _table(bench_rows(b), cls="summary")]
    parts.append('<h2>Latency</h2><div class="charts">')
    parts.append(_figure(charts.latency_histogram(b.timing.samples_ms, s.median_ms, s.p90_ms, s.p99_ms),
                         f"{b.timing.runs} timed runs after {b.timing.warmup_runs} warm-up runs", "no timed samples"))
    th = b.thermal
    parts.append(_figure(
        charts.latency_series(b.timing.samples_ms, {"before": th.before.temps_c, "after": th.after.temps_c, "throttled": th.throttled}),
        "each timed run in order: warm-up effects, drift and throttling show here"
        + ("" if th.before.temps_c else "; no readable thermal sensor on this device"),
        "no timed samples"))
    parts.append("</div>")
    e = b.energy
    parts.append("<h2>Energy</h2>")
    if e.available and e.trace:
        parts.append(_figure(charts.power_trace(e.trace, e.idle_power_w, e.avg_power_w, e.window_s, e.idle_window, energy_label(e)),
                             f"source {e.source}, rails {', '.join(e.rails) or '—'}; {e.samples} samples in the timed window, {e.idle_samples} idle", ""))
    elif e.available:
        parts.append(f"<p>{escape(energy_label(e))} — source {escape(str(e.source))} (no sample trace recorded)</p>")
    else:
        parts.append(f'<p class="note">{escape(energy_label(e))}</p>')
    ident = identity(b, profile=profile, power_mode=power_mode)
    parts.append("<h2>Device and software</h2>")
    if ident["emulated"]:
        parts.append(f'<p class="warn">{escape(ident["emulated"])}</p>')
    parts.append(_table([(k.replace("_", " "), "—" if v in (None, "") else v) for k, v in ident.items()], cls="identity"))
    temps = [(z, f"{v:.1f}", f"{th.after.temps_c.get(z, float('nan')):.1f}") for z, v in th.before.temps_c.items()]
    if temps:
        parts.append(_table(temps, header=("thermal zone", "before °C", "after °C")))
    if th.notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{escape(n)}</li>" for n in th.notes) + "</ul>")
    return parts


def _variant_points(report: DeployReport) -> Tuple[List[Dict[str, Any]], str]:
    pts, name = [], "output cosine"
    for v in report.variants:
        fid = v.get("fidelity") or {}
        score = fid.get("task_score")
        if score is not None:
            name = fid.get("task_metric") or "task score"
        else:
            score = fid.get("cosine_min")
        pts.append({"label": f"{v['runtime']}/{v['precision']}", "latency": v.get("median_ms"), "score": score, "status": v.get("status")})
    return pts, name


def rounds_section(summary: Dict[str, Any]) -> List[str]:
    """`bench --rounds`: each artifact's median per round, spread, and the pairwise ratios with intervals."""
    parts = [f"<h2>Interleaved rounds ({summary['rounds']})</h2>"]
    parts.append(_figure(charts.rounds_chart(summary["artifacts"]), "artifacts ran A B C, A B C ... on the same device", ""))
    parts.append(_table([(a["name"], f"{a['over_rounds']['median']:.3f}", f"{a['over_rounds']['min']:.3f} – {a['over_rounds']['max']:.3f}",
                          f"{a['over_rounds']['rel_iqr']:.1%}", a["runs"]) for a in summary["artifacts"]],
                        header=("artifact", "median over rounds (ms)", "min – max", "rel. IQR", "timed runs")))
    parts.append(_table([(p["base"], p["other"], f"{p['ratio']:.3f}", f"[{p['lo']:.3f}, {p['hi']:.3f}] ({p['confidence']:.0%})",
                          p["verdict"] if p["verdict"] == "no detectable difference" else f"{p['other']} is {p['verdict']}") for p in summary["pairs"]],
                        header=("base", "other", "ratio other/base", "interval", "verdict")))
    parts.append('<p class="note">The charts below show the first artifact, its rounds merged.</p>')
    return parts


def render(report: Union[DeployReport, BenchmarkResult], title: Optional[str] = None, power_mode: Optional[str] = None,
           rounds: Optional[Dict[str, Any]] = None) -> str:
    """The whole report.html for a deploy (DeployReport) or a bench (BenchmarkResult)."""
    from edgekit import __version__
    from edgekit.quality.fidelity import describe

    parts: List[str] = []
    if isinstance(report, DeployReport):
        head = title or f"edgekit deploy {report.model} → {report.profile}"
        parts.append(f"<h1>{escape(head)}</h1>")
        parts.append(f'<p class="meta">runtime <b>{escape(report.runtime)}</b>, precision <b>{escape(report.precision)}</b>, target {escape(report.target)} · '
                     f"{escape(report.created)} · edgekit {escape(report.edgekit_version)}<br><code>{escape(report.command)}</code></p>")
        if report.status != "ok":
            parts.append(f'<p class="warn">run failed: {escape(str(report.error))}</p>')
        if report.benchmark:
            parts += benchmark_sections(report.benchmark, profile=report.profile, power_mode=power_mode)
        if report.variants:
            pts, name = _variant_points(report)
            budget = report.search.get("budget") if report.search else None
            parts.append("<h2>Variants measured on the target</h2>")
            parts.append(_figure(charts.variants_scatter(pts, budget, name), f"every variant the search built and measured; budget: {name} ≥ {budget}" if budget is not None else "every variant the search built and measured", "no variant has both a latency and a score"))
            from edgekit.report.text import variant_rows

            parts.append(_table(variant_rows(report), header=("variant", "status", "median", "fidelity", "size", "reason")))
        parts.append("<h2>Plan and steps</h2>")
        steps = [{"step": r.step, "status": r.status, "duration_s": r.duration_s,
                  "fidelity": (describe(r.fidelity) if r.fidelity else (r.reason if r.status == "skipped" else None))} for r in report.steps]
        parts.append(_figure(charts.step_timeline(steps), "steps in plan order; each step's output checked against its source", "the plan had no steps"))
        for n in report.plan_notes:
            parts.append(f'<p class="note">note: {escape(n)}</p>')
        if report.fidelity_end_to_end:
            parts.append(f"<p>end-to-end fidelity vs the original: {escape(describe(report.fidelity_end_to_end))}</p>")
        if report.fidelity_check:
            from edgekit.report.text import FIDELITY_HEADER, fidelity_check_lines, fidelity_check_rows

            parts.append("<h2>Fidelity on the held-out set: host and device</h2>")
            parts.append(_table(fidelity_check_rows(report), header=FIDELITY_HEADER))
            for line in fidelity_check_lines(report):
                parts.append(f'<p class="{"warn" if line.startswith("warning") else "note"}">{escape(line)}</p>')
        a = report.artifact
        parts.append("<h2>Artifact</h2>" + _table([("path", a.get("path")), ("format", a.get("format")), ("precision", a.get("precision")),
                                                   ("size", f"{a.get('size_bytes', 0) / 1e6:.2f} MB"), ("sha256", a.get("sha256"))]))
    else:
        head = title or f"edgekit bench {Path(report.model.path).name}"
        parts.append(f"<h1>{escape(head)}</h1>")
        parts.append(f'<p class="meta">{escape(report.created)} · edgekit {escape(__version__)} · target {escape(report.host or report.runner)}</p>')
        if rounds:
            parts += rounds_section(rounds)
        parts += benchmark_sections(report, power_mode=power_mode)
        parts.append("<h2>Model</h2>" + _table([("path", report.model.path), ("format", report.model.format), ("precision", report.model.precision),
                                                ("size", f"{report.model.size_bytes / 1e6:.2f} MB"), ("sha256", report.model.sha256)]))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{escape(head)}</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def write_html(path: Union[str, Path], report: Union[DeployReport, BenchmarkResult], **kw) -> Path:
    """Render and write atomically (temp file + rename)."""
    from edgekit.core.fsutil import atomic_write_text

    return atomic_write_text(path, render(report, **kw))
