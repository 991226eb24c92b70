"""`edgekit compare`: two runs (history ids or report.json / bench JSON paths), ratio of medians with a bootstrap
interval and a rank test, a verdict, and the differences in environment beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgekit.core.errors import EdgekitError
from edgekit.quality import stats
from edgekit.report.identity import differences, identity


class CompareError(EdgekitError):
    """A run given to compare cannot be found or has no latency samples."""


class RegressionError(EdgekitError):
    """`compare --fail-if-slower`: B is significantly slower than A beyond the gate (exit code 3 for CI)."""

    exit_code = 3


def load_run(ref: str, history_path: Any = None) -> Dict[str, Any]:
    """A run as {label, samples, identity, median_ms, source} from a history id (`12`, `#12`) or a JSON file path."""
    text = str(ref).strip()
    digits = text.lstrip("#")
    if digits.isdigit() and not Path(text).exists():
        from edgekit.report.history import History

        with History.open(history_path, create=False) as h:
            r = h.get(int(digits))
        if not r["samples"]:
            raise CompareError(f"run #{digits} in {h.path} has no latency samples", hint="compare runs that were benchmarked")
        return {"ref": f"#{digits}", "label": f"#{digits} {r['model']} ({r['runtime']}/{r['precision']}, {r['created']})",
                "samples": r["samples"], "identity": r.get("device") or {}, "median_ms": r["median_ms"]}
    p = Path(text)
    if p.is_dir():
        p = p / "report.json"
    if not p.exists():
        raise CompareError(f"{text}: neither a history id nor an existing file", hint="pass a run id from `edgekit history` or a report.json path")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{p}: not a readable JSON report ({exc})", hint="pass a report.json written by edgekit deploy, or a bench --out file") from exc
    from pydantic import ValidationError

    from edgekit.core.results import BenchmarkResult, DeployReport

    try:
        if isinstance(doc, dict) and "benchmark" in doc:
            if doc.get("status") == "failed" or doc.get("benchmark") is None:
                raise CompareError(f"{p}: this deploy has no benchmark (failed, or run with --no-bench)", hint="compare runs that were benchmarked")
            rep = DeployReport.model_validate(doc)
            b, profile, label = rep.benchmark, rep.profile, f"{rep.model} ({rep.runtime}/{rep.precision}, {rep.created})"
        else:
            b = BenchmarkResult.model_validate(doc)
            profile, label = None, f"{Path(b.model.path).name} ({b.runtime.name}, {b.created})"
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise CompareError(f"{p}: not an edgekit report ({where}: {first.get('msg')})", hint="pass a report.json written by edgekit deploy, or a bench --out file") from None
    if not b.timing.samples_ms:
        raise CompareError(f"{p}: no latency samples in this report")
    return {"ref": str(p), "label": label, "samples": b.timing.samples_ms, "identity": identity(b, profile=profile), "median_ms": b.timing.stats.median_ms}


def compare_runs(a: Dict[str, Any], b: Dict[str, Any], confidence: float = stats.DEFAULT_CONFIDENCE,
                 min_effect: float = stats.DEFAULT_MIN_EFFECT, fail_if_slower: Optional[float] = None) -> Dict[str, Any]:
    """B relative to A. `regression` is True when B is *slower* (significant) and its median is more than
    `fail_if_slower` above A's."""
    r = stats.compare_samples(a["samples"], b["samples"], confidence=confidence, min_effect=min_effect)
    diffs = differences(a["identity"], b["identity"])
    notes: List[str] = []
    for side, run in (("A", a), ("B", b)):
        if run["identity"].get("emulated"):
            notes.append(f"run {side} was emulated: {run['identity']['emulated']}")
    regression = None
    if fail_if_slower is not None:
        regression = r["verdict"] == stats.SLOWER and r["ratio"] > 1.0 + fail_if_slower
    return {"a": {k: a[k] for k in ("ref", "label", "median_ms")} | {"n": len(a["samples"])},
            "b": {k: b[k] for k in ("ref", "label", "median_ms")} | {"n": len(b["samples"])},
            **r, "environment_differences": {k: list(v) for k, v in diffs.items()}, "notes": notes,
            "fail_if_slower": fail_if_slower, "regression": regression}


def describe(res: Dict[str, Any]) -> List[str]:
    """Human lines for the terminal."""
    pct = (res["ratio"] - 1.0) * 100.0
    lines = [
        f"A: {res['a']['label']}: median {res['a']['median_ms']:.3f} ms over {res['a']['n']} runs",
        f"B: {res['b']['label']}: median {res['b']['median_ms']:.3f} ms over {res['b']['n']} runs",
        f"B/A ratio of medians {res['ratio']:.4f} ({pct:+.1f} %), {res['confidence']:.0%} bootstrap interval "
        f"[{res['lo']:.4f}, {res['hi']:.4f}]; rank test p = {res['p_value']:.2g}",
        f"verdict: B is {res['verdict']}" if res["verdict"] != stats.SAME else
        f"verdict: {stats.SAME} (interval includes 1, rank test not significant, or change below {res['min_effect']:.0%})",
    ]
    if res["environment_differences"]:
        lines.append("environment differences (A → B):")
        for k, (va, vb) in res["environment_differences"].items():
            lines.append(f"  {k}: {va} → {vb}")
    else:
        lines.append("environment: same device and software identity")
    lines += res["notes"]
    if res["fail_if_slower"] is not None:
        lines.append(f"regression gate (> {res['fail_if_slower']:.1%} slower): " + ("FAIL" if res["regression"] else "pass"))
    return lines
