"""Reports: build the DeployReport, render it as a terminal table or Markdown, write outputs atomically."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgekit import __version__
from edgekit.core.fsutil import atomic_copy, atomic_write_text
from edgekit.core.results import BenchmarkResult, DeployReport, now_iso
from edgekit.quality.fidelity import describe


def _mb(n: Optional[float]) -> str:
    return "—" if n is None else f"{n / 1e6:.2f} MB"


def build_report(command, resolved, profile, plan, result, bench, target, timings) -> DeployReport:
    final = result.artifact
    return DeployReport(
        edgekit_version=__version__,
        created=now_iso(),
        command=command,
        model=resolved.label,
        profile=profile.name,
        runtime=plan.runtime,
        precision=plan.precision,
        target=target,
        plan=[s.model_dump(mode="json") for s in plan.steps],
        plan_notes=plan.notes,
        steps=result.records,
        artifact={
            "path": str(final.path),
            "format": final.format,
            "precision": final.precision,
            "sha256": final.sha256,
            "size_bytes": final.total_size_bytes,
            "inputs": [t.model_dump(mode="json") for t in final.inputs],
            "outputs": [t.model_dump(mode="json") for t in final.outputs],
            # layout/name maps (e.g. a .tflite's NHWC input and renamed tensors): what it takes to feed the
            # artifact with the source model's data, as edgekit's fidelity check does
            "metadata": json.loads(json.dumps(final.metadata, default=str)),
        },
        fidelity_end_to_end=result.end_to_end,
        benchmark=bench,
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _copy_artifact(art, dest_dir: Path, shown=str) -> Dict[str, Any]:
    """Copy an artifact's files and record the sha256 of each copy; the main file must hash to the artifact's."""
    from edgekit.core.errors import OutputError
    from edgekit.core.fsutil import sha256_file

    files, hashes = [], {}
    for f in art.files:
        dst = dest_dir / f.name
        atomic_copy(f, dst)
        files.append(shown(dst))
        hashes[shown(dst)] = sha256_file(dst)
    if hashes[files[0]] != art.sha256:
        raise OutputError(f"{files[0]}: the copy does not match the artifact's sha256 (changed while copying?)", hint="run the command again")
    return {"path": files[0], "files": files, "file_sha256": hashes}


def _copy_steps(out_dir: Path, produced, shown=str) -> List[Dict[str, Any]]:
    """Copy each step's on-disk artifact to out/steps/NN-step/."""
    out = []
    for i, (record, art) in enumerate(produced, 1):
        if art.format == "pytorch":
            continue
        copied = _copy_artifact(art, out_dir / "steps" / f"{i:02d}-{_safe(record.step)}", shown)
        out.append({"step": record.step, "status": record.status, **copied, "sha256": art.sha256})
    return out


def write_outputs(out_dir: Path, report: DeployReport, result, shown=str, inputs=None) -> DeployReport:
    """Copy every produced artifact, then manifest.json, report.md and last report.json (its presence = complete).

    `out_dir` may be a staging directory; `shown` maps a written path to the path the reports should name."""
    steps_out = _copy_steps(out_dir, result.produced, shown)
    final = result.artifact
    final_files = _copy_artifact(final, out_dir, shown) if final.format != "pytorch" else {"path": str(final.path), "files": []}
    report = report.model_copy(update={"artifact": {**report.artifact, "path": final_files["path"], "files": final_files["files"], "file_sha256": final_files.get("file_sha256", {})}})
    manifest = {
        "edgekit_version": __version__,
        "artifact": {**final.to_manifest(), "path": final_files["path"], "extra_files": final_files["files"][1:], "file_sha256": final_files.get("file_sha256", {})},
        "steps": steps_out,
        # the concrete input shapes/ranges deploy fed (source names and layout): `edgekit bench` reuses them
        "inputs_used": [i.model_dump(mode="json") for i in (inputs or [])],
    }
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))
    atomic_write_text(out_dir / "report.md", to_markdown(report))
    atomic_write_text(out_dir / "report.json", report.model_dump_json(indent=2))
    return report


def manifest_beside(path: Path):
    """(manifest path, its data) of the deploy output holding `path` (final artifact or a step's), matched by sha256."""
    from edgekit.core.fsutil import sha256_file

    path = Path(path).resolve()
    for d in (path.parent, path.parent.parent.parent):  # out/model.xml, out/steps/NN-step/model.onnx
        m = d / "manifest.json"
        if not m.is_file():
            continue
        try:
            data = json.loads(m.read_text())
            hashes = dict(data["artifact"].get("file_sha256", {}))
            for step in data.get("steps", []):
                hashes.update(step.get("file_sha256", {}))
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        if sha256_file(path) in {h for p, h in hashes.items() if Path(p).name == path.name}:
            return m, data
    return None, None


def write_partial(out_dir: Path, pipeline, plan, resolved, profile, command: str, error: str = "", shown=str) -> None:
    """After a failure: keep what the finished steps produced and say in report.json that the run failed."""
    done = _copy_steps(out_dir, pipeline.produced, shown)
    atomic_write_text(
        out_dir / "report.json",
        json.dumps(
            {
                "status": "failed",
                "error": error,
                "edgekit_version": __version__,
                "created": now_iso(),
                "command": command,
                "model": resolved.label,
                "profile": profile.name,
                "plan": [s.model_dump(mode="json") for s in plan.steps] if plan is not None else [],
                "completed_steps": [r.model_dump(mode="json") for r in pipeline.records],
                "kept_artifacts": done,
            },
            indent=2,
            default=str,
        ),
    )


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
        ("peak RSS", "—" if b.memory.peak_rss_mb is None else f"{b.memory.peak_rss_mb:.1f} MB"),
        ("model size", _mb(b.model.size_bytes)),
        ("runtime", f"{b.runtime.name} {b.runtime.version}, {b.runtime.threads} threads"),
        ("device", f"{b.device.hostname} ({b.device.arch}, {b.device.cpu_model or '?'})" + (" — EMULATED" if b.device.emulated else "")),
    ]
    if b.timing.note:  # e.g. qemu-user: mark every timing, not just the headline
        timed = {"latency median", "latency mean ± std", "latency p90 / p99", "latency min / max", "throughput", "load / first inference"}
        rows = [(k, f"{v} ({b.timing.note})" if k in timed else v) for k, v in rows]
    if e.available:
        rows.append(("energy / inference", f"{e.energy_per_inference_mj:.2f} mJ ({e.energy_above_idle_per_inference_mj:.2f} above idle), {e.avg_power_w:.2f} W avg [{e.source}]"))
    else:
        rows.append(("energy", f"unavailable: {e.reason}"))
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
    rows = []
    for v in report.variants:
        fid = v.get("fidelity")
        fid_txt = ""
        if fid:
            fid_txt = f"{fid['task_metric']} {fid['task_score']:.4f}" if fid.get("task_score") is not None else f"cos {fid['cosine_min']:.5f}"
        rows.append((
            f"{v['runtime']}/{v['precision']}",
            v["status"],
            "—" if v.get("median_ms") is None else f"{v['median_ms']:.2f} ms",
            fid_txt or "—",
            _mb(v.get("size_bytes")),
            _clip(v.get("reason") or "", reason_width),
        ))
    return rows


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
    if report.benchmark:
        note = f" — {report.benchmark.timing.note}" if report.benchmark.timing.note else ""
        b = Table(title=escape(f"benchmark on {report.target}{note}"), title_justify="left", show_header=False)
        b.add_column("metric", style="bold")
        b.add_column("value")
        for row in bench_rows(report.benchmark):
            b.add_row(*[escape(str(c)) for c in row])
        console.print(b)
    console.print(escape(f"artifact: {report.artifact['path']} ({_mb(report.artifact['size_bytes'])}, sha256 {report.artifact['sha256'][:12]}…)"))


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
            lines.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    lines += ["", "## Steps", "", "| step | status | time | size | fidelity vs source |", "|---|---|---|---|---|"]
    for row in step_rows(report):
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    for r in report.steps:
        for n in r.notes:
            lines.append(f"- {r.step}: {_unprefixed(r.step, n)}")
    if report.fidelity_end_to_end:
        lines += ["", f"End-to-end fidelity vs the original model: {describe(report.fidelity_end_to_end)}"]
    if report.benchmark:
        note = f" — {report.benchmark.timing.note}" if report.benchmark.timing.note else ""
        lines += ["", f"## Benchmark ({report.target}){note}", "", "| metric | value |", "|---|---|"]
        for k, v in bench_rows(report.benchmark):
            lines.append(f"| {k} | {v} |")
    a = report.artifact
    lines += ["", "## Artifact", "", f"`{a['path']}` — {a['format']}, {a['precision']}, {_mb(a['size_bytes'])}, sha256 `{a['sha256']}`", ""]
    return "\n".join(lines)
