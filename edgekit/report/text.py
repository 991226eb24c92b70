"""Text renderings of a run: the terminal tables and report.md (pure: no file writing here)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from edgekit.core.results import BenchmarkResult, DeployReport
from edgekit.quality.fidelity import describe


def _mb(n: Optional[float]) -> str:
    return "—" if n is None else f"{n / 1e6:.2f} MB"


# ---- rendering
def bench_rows(b: BenchmarkResult) -> List[tuple]:
    s = b.timing.stats
    e = b.energy
    rows = [
        ("latency median", f"{s.median_ms:.2f} ms"),
        ("latency mean ± std", f"{s.mean_ms:.2f} ± {s.std_ms:.2f} ms"),
        ("latency p90 / p99", f"{s.p90_ms:.2f} / {s.p99_ms:.2f} ms"),
        ("latency min / max", f"{s.min_ms:.2f} / {s.max_ms:.2f} ms"),
        ("throughput", f"{b.timing.throughput_ips:.1f} inferences/s"),
        ("runs (timed)", f"{b.timing.runs} in {b.timing.duration_s:.1f} s (warm-up {b.timing.warmup_runs} in {b.timing.warmup_s:.1f} s)"),
        ("load / first inference", f"{b.timing.load_ms:.1f} / {b.timing.first_inference_ms:.1f} ms"),
        ("timed region", b.timing.timed_region or "not stated by this harness version"),
        ("peak RSS", "—" if b.memory.peak_rss_mb is None else f"{b.memory.peak_rss_mb:.1f} MB"),
        ("model size", _mb(b.model.size_bytes)),
        ("runtime", f"{b.runtime.name} {b.runtime.version}, {b.runtime.threads} threads"),
        ("device", f"{b.device.hostname} ({b.device.arch}, {b.device.cpu_model or '?'}" + (" — the emulator host's CPU)" if b.device.emulated else ")")
         + (" — EMULATED" if b.device.emulated else "")),
    ]
    if b.timing.note:  # e.g. qemu-user: mark every timing, not just the headline
        timed = {"latency median", "latency mean ± std", "latency p90 / p99", "latency min / max", "throughput", "load / first inference"}
        rows = [(k, f"{v} ({b.timing.note})" if k in timed else v) for k, v in rows]
    if e.available and e.energy_per_inference_mj is not None:
        # above-idle needs an idle baseline, average power a sample-based source: either may be missing
        above = "" if e.energy_above_idle_per_inference_mj is None else f" ({e.energy_above_idle_per_inference_mj:.2f} above idle)"
        power = "" if e.avg_power_w is None else f", {e.avg_power_w:.2f} W avg"
        rows.append(("energy / inference", f"{e.energy_per_inference_mj:.2f} mJ{above}{power} [{e.source}]"))
    else:
        rows.append(("energy", f"unavailable: {e.reason or 'no energy per inference was measured'}"))
    th = b.thermal
    temps = ", ".join(f"{k} {v:.0f}→{th.after.temps_c.get(k, float('nan')):.0f} °C" for k, v in list(th.before.temps_c.items())[:3])
    rows.append(("thermal", (temps or "no readable sensors") + ("; THROTTLED" if th.throttled else "")))
    if th.before.governor:
        rows.append(("CPU governor", th.before.governor))
    native = b.native.get("trtexec")
    if native:
        if native.get("gpu_compute_median_ms") is not None:
            lat = f", latency {native['latency_median_ms']:.3f} ms incl. H2D/D2H" if native.get("latency_median_ms") is not None else ""
            rows.append(("trtexec GPU compute", f"{native['gpu_compute_median_ms']:.3f} ms median{lat} (trtexec --loadEngine, TensorRT {native.get('trt_version') or '?'})"))
        else:
            rows.append(("trtexec GPU compute", f"not measured: {native.get('error', 'unknown')}"))
    for w in b.warnings:
        rows.append(("warning", w))
    return rows


def step_rows(report: DeployReport) -> List[tuple]:
    rows = []
    for r in report.steps:
        size = _mb(r.artifact["size_bytes"]) if r.artifact else "—"
        fid = describe(r.fidelity) if r.fidelity else ("—" if r.status != "skipped" else r.reason)
        rows.append((r.step, r.status, f"{r.duration_s:.1f} s", size, fid))
    return rows


def _unprefixed(step: str, note: str) -> str:
    return note[len(step) + 2 :] if note.startswith(step + ": ") else note


def variant_rows(report: DeployReport, reason_width: Optional[int] = None) -> List[tuple]:
    return rows_of_variants(report.variants, reason_width)


def rows_of_variants(variants: List[dict], reason_width: Optional[int] = None) -> List[tuple]:
    """One table row per variant (report.json form): name (* on the Pareto front), status, median, score, size, reason."""
    rows = []
    for v in variants:
        fid_txt = variant_score(v)
        rows.append((
            f"{v['runtime']}/{v['precision']}" + (f" {v['method']}" if v.get("method") else "") + (" *" if v.get("pareto") else ""),
            v["status"],
            "—" if v.get("median_ms") is None else f"{v['median_ms']:.2f} ms" + ("" if v.get("rounds_median_ms") is None else f" (rounds {v['rounds_median_ms']:.2f})"),
            fid_txt or "—",
            _mb(v.get("size_bytes")),
            _clip((f"trained {v['train_s']:.0f} s; " if v.get("train_s") else "") + (v.get("reason") or ""), reason_width),
        ))
    return rows


def _score_text(fid: dict) -> str:
    txt = f"{fid['task_metric']} {fid['task_score']:.4f}" if fid.get("task_score") is not None else f"cos {fid['cosine_min']:.5f}"
    iv = fid.get("interval")
    return txt + (f" [{iv['lo']:.4f}, {iv['hi']:.4f}]" if iv else "") + f" n={fid['samples']}"


def variant_score(v: dict) -> str:
    """A variant's measured score (host, and device where it ran there), or "not measured: why"."""
    parts = []
    if v.get("fidelity"):
        parts.append(_score_text(v["fidelity"]))
    if v.get("device_fidelity"):
        parts.append("device " + _score_text(v["device_fidelity"]))
    if parts:
        return "; ".join(parts)
    if v.get("score") is not None:
        return f"{v['score']:.4f}" + (" (its step's own search)" if v.get("status") == "failed" else "")
    if str(v.get("reason", "")).startswith("not measured"):
        return str(v["reason"]).split(";")[0]
    return f"not measured: {v.get('status')} (see reason)"


def fidelity_check_rows(report: DeployReport) -> List[tuple]:
    """Host and device scores of the final artifact side by side: where, metric, score, drop, budget, n, interval."""
    check = report.fidelity_check or {}
    rows = []
    for r in check.get("rows", []):
        where = r["where"] + (f" {r['device']}" if r.get("device") else "") + (" (decided)" if r["where"] == check.get("decided_by") else "")
        if not r.get("measured"):
            rows.append((where, r["metric"], "—", "—", f"≥ {r['budget']:.4f}", "—", "—", r["status"]))
            continue
        iv = r.get("interval")
        rows.append((where, r["metric"], f"{r['score']:.4f}", f"{r['drop']:.4f}", f"≥ {r['budget']:.4f}", str(r["samples"]),
                     f"[{iv['lo']:.4f}, {iv['hi']:.4f}]" if iv else "—",
                     "meets budget" if r.get("meets_budget") else "below budget"))
    return rows


FIDELITY_HEADER = ("measured on", "metric", "score", "drop", "budget", "n", "95% interval", "verdict")


def fidelity_check_lines(report: DeployReport) -> List[str]:
    """The note and warning lines under the host/device table."""
    check = report.fidelity_check or {}
    out = [f"decided by the {check['decided_by']} score: {check.get('note', '')}"] if check.get("decided_by") else []
    if check.get("warning"):
        out.append("warning: " + check["warning"])
    return out


def _clip(text: str, width: Optional[int]) -> str:
    text = " ".join(text.split())
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def render_terminal(report: DeployReport, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    t = Table(title=escape(f"edgekit deploy {report.model} → {report.profile} ({report.runtime}, {report.precision})"), title_justify="left")
    for col in ("step", "status", "time", "size", "fidelity vs source"):
        t.add_column(col)
    for row in step_rows(report):
        t.add_row(*[escape(str(c)) for c in row])
    if report.variants:
        vt = Table(title="variants measured on the target", title_justify="left")
        vt.add_column("variant", no_wrap=True)
        for col in ("status", "median", "fidelity", "size", "reason"):
            vt.add_column(col)
        for row in variant_rows(report, reason_width=70):
            vt.add_row(*[escape(str(c)) for c in row])
        console.print(vt)
    if report.steps:
        console.print(t)
    for n in report.plan_notes:
        if n.startswith("fallback:"):
            console.print(f"[yellow]{escape(n)}[/yellow]")
    for r in report.steps:
        for n in r.notes:
            console.print(f"[dim]{r.step}:[/dim] {escape(_unprefixed(r.step, n))}")
    if report.fidelity_end_to_end:
        console.print(escape(f"end-to-end fidelity vs original: {describe(report.fidelity_end_to_end)}"))
    if report.fidelity_check:
        ft = Table(title=escape(f"fidelity vs the source model on the held-out set: host and device"), title_justify="left")
        for col in FIDELITY_HEADER:
            ft.add_column(col)
        for row in fidelity_check_rows(report):
            ft.add_row(*[escape(str(c)) for c in row])
        console.print(ft)
        for line in fidelity_check_lines(report):
            console.print(escape(line), style="yellow" if line.startswith("warning") else None)
    if report.benchmark:
        note = f" — {report.benchmark.timing.note}" if report.benchmark.timing.note else ""
        b = Table(title=escape(f"benchmark on {report.target}{note}"), title_justify="left", show_header=False)
        b.add_column("metric", style="bold")
        b.add_column("value")
        for row in bench_rows(report.benchmark):
            b.add_row(*[escape(str(c)) for c in row])
        console.print(b)
    console.print(escape(f"artifact: {report.artifact['path']} ({_mb(report.artifact['size_bytes'])}, sha256 {report.artifact['sha256'][:12]}…)"))


def md_cell(value) -> str:
    """A Markdown table cell: `|` escaped (fidelity text has `max|Δ|`), newlines folded."""
    return " ".join(str(value).split()).replace("\\", "\\\\").replace("|", "\\|")


def _md_row(row) -> str:
    return "| " + " | ".join(md_cell(c) for c in row) + " |"


def search_failure_markdown(doc: Dict[str, Any]) -> str:
    """report.md of a variant search that found nothing within the budget: the error, the closest miss, every row."""
    s = doc.get("search") or {}
    lines = ["# edgekit deploy report — no variant met the budget", "", f"- model: `{doc['model']}`", f"- profile: `{doc['profile']}`",
             f"- command: `{doc['command']}`", f"- created: {doc['created']} (edgekit {doc['edgekit_version']})",
             f"- budget: {s.get('score', 'score')} drop ≤ {float(s.get('max_drop', 0.0)):.2%}"]
    if s.get("closest"):
        lines.append(f"- closest: {s['closest']}")
    lines += ["", "## Variants measured on the target", "", "| variant | status | median | fidelity | size | reason |", "|---|---|---|---|---|---|"]
    lines += [_md_row(row) for row in rows_of_variants(doc.get("variants") or [])]
    lines += ["", "## Error", "", "```", str(doc.get("error", "")), "```", ""]
    return "\n".join(lines)


def to_markdown(report: DeployReport) -> str:
    lines = [
        f"# edgekit deploy report",
        "",
        f"- model: `{report.model}`",
        f"- profile: `{report.profile}` — runtime **{report.runtime}**, precision **{report.precision}**",
        f"- target: {report.target}",
        f"- command: `{report.command}`",
        f"- created: {report.created} (edgekit {report.edgekit_version})",
        "",
        "## Plan",
        "",
    ]
    for i, s in enumerate(report.plan, 1):
        cfg = ", ".join(f"{k}={v}" for k, v in s["config"].items())
        lines.append(f"{i}. **{s['step']}**" + (f" ({cfg})" if cfg else "") + f" — {s['reason']}")
    for n in report.plan_notes:
        lines.append(f"- note: {n}")
    if report.variants:
        lines += ["", "## Variants measured on the target", "", "| variant | status | median | fidelity | size | reason |", "|---|---|---|---|---|---|"]
        for row in variant_rows(report):
            lines.append(_md_row(row))
    lines += ["", "## Steps", "", "| step | status | time | size | fidelity vs source |", "|---|---|---|---|---|"]
    for row in step_rows(report):
        lines.append(_md_row(row))
    for r in report.steps:
        for n in r.notes:
            lines.append(f"- {r.step}: {_unprefixed(r.step, n)}")
    if report.fidelity_end_to_end:
        lines += ["", f"End-to-end fidelity vs the original model: {describe(report.fidelity_end_to_end)}"]
    if report.fidelity_check:
        lines += ["", "## Fidelity on the held-out set: host and device", "", _md_row(FIDELITY_HEADER), "|" + "---|" * len(FIDELITY_HEADER)]
        lines += [_md_row(row) for row in fidelity_check_rows(report)]
        lines += [""] + [f"- {md_cell(line)}" for line in fidelity_check_lines(report)]
    if report.benchmark:
        note = f" — {report.benchmark.timing.note}" if report.benchmark.timing.note else ""
        lines += ["", f"## Benchmark ({report.target}){note}", "", "| metric | value |", "|---|---|"]
        for row in bench_rows(report.benchmark):
            lines.append(_md_row(row))
    a = report.artifact
    lines += ["", "## Artifact", "", f"`{a['path']}` — {a['format']}, {a['precision']}, {_mb(a['size_bytes'])}, sha256 `{a['sha256']}`", ""]
    return "\n".join(lines)
