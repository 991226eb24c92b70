"""Cells of a sweep: expansion (conversions shared per model x profile x runtime x precision, one benchmark per
board), the conversion job (host-side, any worker process or Ray task) and the board worker (one per board,
serialising its benchmarks under the board lock, retrying a lost connection with backoff)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edgekit.core.errors import ConnectionFailed, EdgekitError, FidelityError, PlanError
from edgekit.fleet.inventory import SweepSpec, profile_key
from edgekit.fleet.lock import BoardBusy, BoardLock


EVAL_SAMPLES = 16  # held-out samples that score a variant end to end


def _h(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def expand(spec: SweepSpec, cache_dir: Optional[str] = None) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(conversion jobs, benchmark cells). A conversion is keyed by what it builds, never by the board."""
    from edgekit.core.profiles import load_profile

    jobs: Dict[str, Dict[str, Any]] = {}
    cells: List[Dict[str, Any]] = []
    runtimes = spec.runtimes or [None]
    for board in spec.fleet.boards:
        prof = load_profile(board.profile)
        precisions = list(prof.precisions) if spec.precisions == "auto" else spec.precisions
        for model in spec.models:
            for runtime in runtimes:
                for precision in precisions:
                    pkey = profile_key(board.profile)
                    key = _h("conv", model, pkey, runtime, precision, spec.max_drop_fraction, spec.shapes)
                    jobs.setdefault(key, {
                        "key": key, "model": model, "profile": board.profile, "profile_name": prof.name, "runtime": runtime,
                        "precision": precision, "max_drop": spec.max_drop_fraction, "shapes": spec.shapes or None,
                        "cache_dir": cache_dir, "steps_hint": [],
                    })
                    cells.append({
                        "id": _h("cell", key, board.name, board.identity, spec.bench.model_dump()),
                        "model": model, "profile": prof.name, "runtime": runtime, "precision": precision,
                        "board": board.name, "conversion": key,
                    })
    return list(jobs.values()), cells


def convert_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """Build one variant through the cached pipeline and score it end to end on held-out data.

    Runs in a worker process or a Ray task: takes and returns plain data. An EdgekitError is a result
    (infeasible / rejected / failed, with the reason); anything else is a crash that the executor may retry."""
    from edgekit.workflows.deploy import build_data, resolve_model
    from edgekit.core.pipeline import Pipeline
    from edgekit.core.plan import PlanOptions, make_plan
    from edgekit.core.profiles import load_profile
    from edgekit.quality.variant_search import _budget

    t0 = time.perf_counter()
    precision, runtime = job["precision"], job["runtime"]
    try:
        prof = load_profile(job["profile"])
        resolved = resolve_model(job["model"])
        data = build_data(resolved, shapes=job.get("shapes"), eval_count=EVAL_SAMPLES)  # one held-out set: steps and score
        md = job["max_drop"]
        try:
            plan = make_plan(resolved.artifact, resolved.label, prof, PlanOptions(
                runtime=runtime, precision=precision, max_drop=md if precision != "fp32" else None,
                has_calib=data.calib is not None, host="fleet" if prof.connection.type != "local" else None, shapes=job.get("shapes"),
            ))
        except PlanError as exc:
            return {"status": "infeasible", "reason": exc.message.splitlines()[0], "build_s": time.perf_counter() - t0}
        if any(s.step == "tensorrt" for s in plan.steps):
            return {"status": "infeasible", "reason": "TensorRT engines are built on the board itself; the sweep builds host-side variants only (use `edgekit deploy --host` for TensorRT)", "build_s": time.perf_counter() - t0}
        cache = Path(job["cache_dir"]) if job.get("cache_dir") else None
        result = Pipeline(plan, prof, data, cache_dir=cache, runner=None).run(resolved.artifact)
        art = result.artifact
        budget = _budget(md, data.task_metric is not None)
        fid = _scored(resolved.artifact, art, data, budget, prof.threads, cache)
        info = {
            "artifact": art.to_manifest(), "inputs": [i.model_dump(mode="json") for i in data.inputs], "runtime": plan.runtime,
            "steps": [s.step for s in plan.steps], "fidelity": fid.model_dump(mode="json"), "size_bytes": art.total_size_bytes,
            "task_metric": data.task_metric_name or "output cosine",
            "score": fid.task_score if fid.task_score is not None else fid.cosine_mean,
        }
        status = "ok" if fid.passed else "rejected"
        reason = "" if fid.passed else "violates the accuracy budget: " + "; ".join(fid.failures)
        return {"status": status, "reason": reason, "info": info, "build_s": time.perf_counter() - t0}
    except FidelityError as exc:
        return {"status": "rejected", "reason": exc.message.splitlines()[0], "build_s": time.perf_counter() - t0}
    except EdgekitError as exc:
        return {"status": "failed", "reason": exc.message.splitlines()[0], "build_s": time.perf_counter() - t0}


def _scored(source, art, data, budget, threads, cache_dir):
    """End-to-end score of `art` against the original on held-out data; cached by content so a sweep on a
    warm cache does not re-run both models."""
    from edgekit.core.fsutil import atomic_write_text
    from edgekit.core.pipeline import default_cache_dir
    from edgekit.core.results import FidelityResult
    from edgekit.core.shapes import random_feeds
    from edgekit.quality.fidelity import compare, predict

    key = _h("sweep-score", source.sha256, art.sha256, art.format, data.fingerprint, budget.model_dump(mode="json"), EVAL_SAMPLES)
    path = Path(cache_dir or default_cache_dir()) / "fidelity" / f"sweep-{key}.json"
    if path.exists():
        try:
            return FidelityResult.model_validate_json(path.read_text())
        except ValueError:
            pass  # unreadable entry: score again
    feeds = data.heldout(EVAL_SAMPLES) if data.eval is not None else random_feeds(data.inputs, 8, seed=1234)
    fid = compare(predict(source, feeds, threads=threads), predict(art, feeds, threads=threads),
                  budget, data.task_metric, data.task_metric_name, data="eval" if data.eval is not None else "random")
    atomic_write_text(path, fid.model_dump_json())
    return fid


def bench_core_s(result: Dict[str, Any]) -> float:
    """The benchmark itself: model load, warm-up and the timed window, as the harness measured them."""
    t = result["timing"]
    return t["load_ms"] / 1000.0 + t["first_inference_ms"] / 1000.0 + t["warmup_s"] + t["duration_s"]


class BoardWorker:
    """One per board. Keeps its connection between cells; never runs two cells at once (callers serialise,
    the board lock makes it true across processes and sweeps)."""

    def __init__(self, board: Dict[str, Any], ssh: Dict[str, Any], retries: Dict[str, Any], bench: Dict[str, Any],
                 on_progress: Optional[Callable[[str, Dict[str, Any]], None]] = None):
        self.board = board
        self.ssh = dict(ssh)
        self.retries = retries
        self.bench = bench
        self.on_progress = on_progress
        self.runner = None
        self.lost: Optional[str] = None
        self.stopping = False
        self._profile = None

    @property
    def identity(self) -> str:
        return f"adb:{self.board['serial']}" if self.board.get("serial") else f"ssh:{self.board['host']}"

    def profile(self):
        from edgekit.core.profiles import load_profile

        if self._profile is None:
            self._profile = load_profile(self.board["profile"])
        return self._profile

    def _connect(self):
        if self.runner is not None:
            return self.runner
        from edgekit.core.registry import get_runner

        limits = self.board.get("limits") or {}
        if self.board.get("serial"):
            try:
                cls = get_runner("adb")
            except EdgekitError:
                raise EdgekitError(f"board {self.board['name']}: adb boards (serial: {self.board['serial']}) need the ADB runner, which this edgekit does not have", hint="reach the board over ssh (host:) instead") from None
            runner = cls(self.board["serial"], self.profile())
        else:
            kw = dict(self.ssh)
            kw.setdefault("connect_timeout", limits.get("connect_timeout_s", 10.0))
            kw["command_timeout"] = float(limits.get("cell_timeout_s", 900.0))
            if self.board.get("python"):
                kw["python"] = self.board["python"]
            if self.board.get("workdir"):
                kw["workdir"] = self.board["workdir"]
            cb = None
            if self.on_progress:
                name = self.board["name"]
                cb = lambda p: self.on_progress(name, p)  # noqa: E731
            runner = get_runner("ssh")(self.board["host"], self.profile(), on_progress=cb, **kw)
        runner.connect()
        self.runner = runner
        return runner

    def close(self) -> None:
        r, self.runner = self.runner, None
        if r is not None:
            r.close()

    def run_cell(self, cell: Dict[str, Any], info: Dict[str, Any]) -> Dict[str, Any]:
        """Benchmark one converted variant on this board; returns {status, reason, result, bench_s, cell_s}."""
        from edgekit.core.artifact import Artifact
        from edgekit.workflows.deploy import benchmark
        from edgekit.core.runner_interface import InputSpec

        t0 = time.perf_counter()
        name = self.board["name"]

        def out(status: str, reason: str = "", result=None) -> Dict[str, Any]:
            return {"status": status, "reason": reason, "result": result, "cell_s": time.perf_counter() - t0,
                    "bench_s": bench_core_s(result) if result else None, "board": name, "id": cell["id"]}

        if self.lost:
            return out("failed", f"board {name} was lost earlier in this sweep: {self.lost}")
        art = Artifact.model_validate(info["artifact"])
        inputs = [InputSpec.model_validate(i) for i in info["inputs"]]
        try:
            lock = BoardLock(self.identity, timeout_s=self.retries.get("lock_timeout_s", 3600.0), holder=f"edgekit sweep, board {name}")
            lock.acquire()
        except BoardBusy as exc:
            return out("failed", exc.message)
        try:
            attempts = int(self.retries.get("attempts", 3))
            last = ""
            for i in range(attempts):
                if self.stopping:
                    return out("interrupted", "the sweep was interrupted")
                try:
                    runner = self._connect()
                    res = benchmark(art, self.profile(), runner, inputs, runtime=info["runtime"], bench=self.bench)
                    return out("done", "", json.loads(res.model_dump_json()))
                except ConnectionFailed as exc:
                    self.close()
                    if self.stopping:
                        return out("interrupted", "the sweep was interrupted")
                    last = exc.message.splitlines()[0]
                    if i + 1 < attempts:
                        time.sleep(float(self.retries.get("backoff_s", 1.0)) * (2 ** i))
                except EdgekitError as exc:
                    if self.stopping:
                        return out("interrupted", "the sweep was interrupted")
                    return out("failed", exc.message.splitlines()[0])
            self.lost = f"{last} (after {attempts} attempts)"
            return out("failed", self.lost)
        finally:
            lock.release()
