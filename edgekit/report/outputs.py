"""Writing a deploy's outputs: copied artifacts, manifest.json, report.md, report.html and last report.json."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgekit import __version__
from edgekit.core.fsutil import atomic_copy, atomic_write_text
from edgekit.core.results import DeployReport, now_iso
from edgekit.report.html import write_html
from edgekit.report.text import search_failure_markdown, to_markdown


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


def write_outputs(out_dir: Path, report: DeployReport, result, shown=str, inputs=None, power_mode: Optional[str] = None) -> DeployReport:
    """Copy every produced artifact, then manifest.json, report.md, report.html and last report.json (its presence = complete).

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
    write_html(out_dir / "report.html", report, power_mode=power_mode)
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


def write_search_failure(out_dir: Path, variants: List[Dict[str, Any]], search: Dict[str, Any], resolved, profile, command: str,
                         error: str = "") -> None:
    """After a variant search that found nothing within the budget: a failed report.json holding every measured
    variant (scores, latencies, training time, reasons) and the closest miss, and the same as report.md."""
    doc = {"status": "failed", "error": error, "edgekit_version": __version__, "created": now_iso(), "command": command,
           "model": resolved.label, "profile": profile.name, "search": search, "variants": variants}
    atomic_write_text(out_dir / "report.json", json.dumps(doc, indent=2, default=str))
    atomic_write_text(out_dir / "report.md", search_failure_markdown(doc))


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
