"""Two executors for one sweep: a process pool (conversions) + one thread per board on this machine, or Ray
(conversion tasks with resource requests, one actor per board). Both expose submit/wait/result so the sweep
driver is the same; on Ray, scheduling, task retries and actor restarts are Ray's own."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edgekit.core.errors import EdgekitError, MissingDependencyError
from edgekit.fleet.cells import BoardWorker, convert_job

# Ray: a conversion task killed by a crash is re-run this many times; an actor that dies is restarted and its
# in-flight benchmark retried. EdgekitErrors are results, never retried (retry_exceptions=False).
RAY_TASK_RETRIES = 3
RAY_ACTOR_RESTARTS = 3
RAY_ACTOR_TASK_RETRIES = 2
CONVERSION_MEMORY = 1 << 30  # bytes a conversion asks Ray for (ONNX/OpenVINO conversion of a zoo model peaks below this)


_IN_JOB = False


def _on_sigint(signum, frame):
    """Ctrl-C reaches the whole process group: a busy worker unwinds its job (the pipeline removes its temp
    files), an idle one leaves at once; either way without a traceback of the pool's internals."""
    if _IN_JOB:
        raise KeyboardInterrupt
    os._exit(130)


def _pool_init(sigint_ignored: bool = False) -> None:
    import signal

    from edgekit.cli.main import _quiet_import_noise

    # a sweep started with SIGINT ignored (nohup, `cmd &` in a script) ignores it: so do its workers, else a stray
    # group SIGINT would kill the conversions while the driver goes on and records them as crashed
    signal.signal(signal.SIGINT, signal.SIG_IGN if sigint_ignored else _on_sigint)
    _quiet_import_noise()


def _pool_convert(job: Dict[str, Any]) -> Dict[str, Any]:
    global _IN_JOB
    _IN_JOB = True
    try:
        return convert_job(job)
    except KeyboardInterrupt:
        os._exit(130)
    finally:
        _IN_JOB = False


class PoolExecutor:
    """Conversions in a process pool (spawned workers: the driver has threads); each board is a 1-thread executor."""

    name = "process pool"

    def __init__(self, boards: Sequence[Dict[str, Any]], ssh: Dict[str, Any], retries: Dict[str, Any], bench: Dict[str, Any],
                 workers: Optional[int] = None, on_progress: Optional[Callable[[str, Dict[str, Any]], None]] = None):
        self.workers_n = workers or max(1, min(2, os.cpu_count() or 1))
        import signal

        self.conv = cf.ProcessPoolExecutor(self.workers_n, mp_context=multiprocessing.get_context("spawn"), initializer=_pool_init,
                                           initargs=(signal.getsignal(signal.SIGINT) == signal.SIG_IGN,))
        self.boards = {b["name"]: BoardWorker(b, ssh, retries, bench, on_progress) for b in boards}
        self.threads = {name: cf.ThreadPoolExecutor(1, thread_name_prefix=f"board-{name}") for name in self.boards}

    def describe(self) -> str:
        return f"process pool ({self.workers_n} conversion workers), one thread per board ({len(self.boards)})"

    def submit_conversion(self, job: Dict[str, Any]):
        return self.conv.submit(_pool_convert, job)

    def submit_cell(self, board: str, cell: Dict[str, Any], info: Dict[str, Any]):
        return self.threads[board].submit(self.boards[board].run_cell, cell, info)

    def wait(self, pending: List[Any], timeout: float) -> Tuple[List[Any], List[Any]]:
        done, rest = cf.wait(pending, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done), list(rest)

    def result(self, fut) -> Any:
        return fut.result()

    def interrupt(self) -> None:
        """Ctrl-C: stop each board after (or by cutting) its current cell; drop queued work."""
        for w in self.boards.values():
            w.stopping = True
        for w in self.boards.values():
            w.close()  # a benchmark in flight fails fast on the closed connection and is recorded as interrupted
        for t in self.threads.values():
            t.shutdown(wait=False, cancel_futures=True)
        self.conv.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        for t in self.threads.values():
            t.shutdown(wait=True)
        for w in self.boards.values():
            w.close()
        self.conv.shutdown(wait=True)


class _BoardActor:
    """The Ray actor behind one board: one call at a time (Ray's default), so benchmarks on it are serialised."""

    def __init__(self, board, ssh, retries, bench):
        self.worker = BoardWorker(board, ssh, retries, bench)

    def run_cell(self, cell, info):
        return self.worker.run_cell(cell, info)

    def close(self):
        self.worker.close()


def import_ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("ray", "fleet", "--ray") from None
    return ray


class RayExecutor:
    """Conversions as Ray tasks (num_cpus=1, memory, and an 'openvino'/'tensorrt-builder' resource when the
    cluster offers it), boards as Ray actors (num_cpus=0: the work happens on the board)."""

    name = "ray"

    def __init__(self, address: str, boards: Sequence[Dict[str, Any]], ssh: Dict[str, Any], retries: Dict[str, Any], bench: Dict[str, Any]):
        ray = import_ray()
        self.ray = ray
        # workers started by `ray start` do not share this process's environment: carry edgekit's own settings
        env = {k: v for k, v in os.environ.items() if k.startswith("EDGEKIT_") or k in ("HF_HUB_OFFLINE",)}
        kw = dict(ignore_reinit_error=True, log_to_driver=False, runtime_env={"env_vars": env})
        try:
            if address == "auto":
                ray.init(**kw)  # the running cluster (RAY_ADDRESS / ray start), else a local one
            else:
                ray.init(address=address, **kw)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EdgekitError(f"cannot reach the Ray cluster at {address}: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}",
                               hint="start one with `ray start --head` (or pass --ray auto for a local one) and check the address") from None
        self.resources = ray.cluster_resources()
        self.convert = ray.remote(convert_job)
        actor_cls = ray.remote(max_restarts=RAY_ACTOR_RESTARTS, max_task_retries=RAY_ACTOR_TASK_RETRIES, num_cpus=0)(_BoardActor)
        self.actors = {b["name"]: actor_cls.options(name=None).remote(b, ssh, retries, bench) for b in boards}

    def describe(self) -> str:
        cpus = self.resources.get("CPU", 0)
        nodes = len([n for n in self.ray.nodes() if n.get("Alive")])
        extra = sorted(k for k in self.resources if k in ("openvino", "tensorrt-builder"))
        return f"ray ({nodes} node(s), {cpus:g} CPUs{', ' + ', '.join(extra) if extra else ''}), one actor per board ({len(self.actors)})"

    def conversion_resources(self, job: Dict[str, Any]) -> Dict[str, float]:
        from edgekit.core.profiles import load_profile

        runtime = job.get("runtime") or load_profile(job["profile"]).runtimes[0]
        want = {"openvino": "openvino", "tensorrt": "tensorrt-builder"}.get(runtime)
        return {want: 1} if want and self.resources.get(want) else {}

    def submit_conversion(self, job: Dict[str, Any]):
        return self.convert.options(num_cpus=1, memory=CONVERSION_MEMORY, max_retries=RAY_TASK_RETRIES, retry_exceptions=False,
                                    resources=self.conversion_resources(job)).remote(job)

    def submit_cell(self, board: str, cell: Dict[str, Any], info: Dict[str, Any]):
        return self.actors[board].run_cell.remote(cell, info)

    def wait(self, pending: List[Any], timeout: float) -> Tuple[List[Any], List[Any]]:
        # everything ready within the slice in one call: one O(n) scan per slice, not one per finished cell
        return self.ray.wait(pending, num_returns=len(pending), timeout=timeout)

    def result(self, ref) -> Any:
        return self.ray.get(ref)

    def interrupt(self) -> None:
        for a in self.actors.values():
            self.ray.kill(a, no_restart=True)
        self.ray.shutdown()  # now, while the cluster is reachable (at exit it may hang on a cluster that is gone)

    def close(self) -> None:
        for a in self.actors.values():
            try:
                self.ray.get(a.close.remote(), timeout=30)
            except (self.ray.exceptions.RayError, TimeoutError):
                continue  # an actor already gone has no connection left to close
            self.ray.kill(a, no_restart=True)
        self.ray.shutdown()
