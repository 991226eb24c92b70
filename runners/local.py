"""LocalRunner: runs the on-device harness as a subprocess on this machine, exactly as a remote device would."""

from __future__ import annotations

import collections
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from edgekit.core.artifact import Artifact
from edgekit.core.errors import ModelLoadError, RunnerError
from edgekit.core.fsutil import atomic_write_text
from edgekit.core.results import BenchmarkResult
from edgekit.core.runner_interface import HarnessSpec, Runner
from edgekit.runners.harness_protocol import harness_error, parse_result, stream_line

LOCAL_PREFIX = "edgekit-local-"  # + <pid>@<host>-: the work dir of one run, swept when its owner died


class LocalRunner(Runner):
    """Benchmarks on this machine through the same harness subprocess a remote device runs."""

    name = "local"

    def __init__(self, profile=None, workdir: Optional[str] = None, python: Optional[str] = None,
                 on_progress: Optional[Callable[[Dict[str, Any]], None]] = None, timeout: Optional[float] = None):
        self.profile = profile
        self.python = python or sys.executable
        self.on_progress = on_progress
        self.timeout = timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else None
        self.last_stderr: str = ""
        self.last_proc: Optional[subprocess.Popen] = None  # the most recent harness process (tests, diagnostics)

    @property
    def target(self) -> str:
        return "local"

    def connect(self) -> None:
        """Create the work directory (a temp dir unless one was given)."""
        if self.workdir is None:
            from edgekit.core import tempdirs

            tempdirs.sweep(Path(tempfile.gettempdir()), LOCAL_PREFIX)  # left by runs that were killed
            self.workdir = tempdirs.make(LOCAL_PREFIX)
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        if self._own_workdir and self.workdir is not None and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def _ensure(self) -> Path:
        if self.workdir is None:
            from edgekit.core import tempdirs

            self.workdir = tempdirs.make(LOCAL_PREFIX)
        return self.workdir

    @staticmethod
    def harness() -> Path:
        from edgekit.core.registry import harness_path

        return Path(harness_path())

    def push(self, artifact: Artifact) -> str:
        """Local files need no copy: return the artifact's own path after checking its files exist."""
        for f in artifact.files:
            if not Path(f).exists():
                raise ModelLoadError(f"{f}: artifact file is missing", hint="re-run the step that produced it")
        return str(Path(artifact.path).resolve())

    def _command(self, args: List[str]) -> List[str]:
        return [self.python, str(self.harness()), *args]

    def _run(self, args: List[str]) -> tuple:
        """Run the harness; stream progress; return (exit code, stdout, stderr tail, error info, command)."""
        argv = self._command(args)
        command = " ".join(shlex.quote(a) for a in argv)
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                    cwd=str(self._ensure()))
            self.last_proc = proc
        except OSError as exc:
            raise RunnerError(f"cannot start the harness: {exc}", command=command,
                              hint=f"check that {self.python} is a working Python") from exc
        tail: collections.deque = collections.deque(maxlen=200)
        info: Dict[str, Any] = {}
        out_chunks: List[str] = []

        def read_stdout() -> None:
            out_chunks.append(proc.stdout.read())

        def read_stderr() -> None:
            for line in proc.stderr:
                line = line.rstrip("\n")
                kind, data = stream_line(line)
                if kind == "progress":
                    if self.on_progress is not None:
                        self.on_progress(data)
                    continue
                if kind == "error":
                    info.update(data)
                tail.append(line)

        threads = [threading.Thread(target=read_stdout, daemon=True),
                   threading.Thread(target=read_stderr, daemon=True)]
        for t in threads:
            t.start()
        try:
            rc = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise RunnerError(f"harness did not finish within {self.timeout} s and was stopped", command=command,
                              stderr_tail="\n".join(tail), hint="lower min_seconds/max_seconds or raise the timeout")
        except BaseException:  # Ctrl-C (KeyboardInterrupt) or any error here: never leave the child running
            self._kill(proc)
            raise
        for t in threads:
            t.join(timeout=10)
        self.last_stderr = "\n".join(tail)
        return rc, "".join(out_chunks), self.last_stderr, info, command

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def run_harness(self, spec: HarnessSpec,
                    on_progress: Optional[Callable[[Dict[str, Any]], None]] = None) -> BenchmarkResult:
        """Write the spec to a temp file, run `python harness.py spec.json`, return the validated result."""
        if on_progress is not None:
            self.on_progress = on_progress
        wd = self._ensure()
        fd, spec_path = tempfile.mkstemp(prefix="spec-", suffix=".json", dir=str(wd))
        os.close(fd)
        try:
            atomic_write_text(spec_path, spec.model_dump_json())
            rc, out, err, info, command = self._run([spec_path])
        finally:
            try:
                os.unlink(spec_path)
            except OSError:
                pass
        if rc != 0:
            raise harness_error(rc, command, err, info or None, python=self.python, where="here")
        return parse_result(out, command, rc, err, runner="local", host=socket.gethostname())

    def exec(self, argv, timeout=600.0):
        """Run one program here, as a device would (used by on-device build steps)."""
        try:
            proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
        return proc.returncode, proc.stdout, proc.stderr

    def pull(self, remote_path, local_path):
        """'Download' from this machine: an atomic copy."""
        from edgekit.core.fsutil import atomic_copy

        atomic_copy(remote_path, local_path)

    def probe(self) -> Dict[str, Any]:
        """`harness.py --probe WORKDIR` as a dict."""
        rc, out, err, info, command = self._run(["--probe", str(self._ensure())])
        if rc != 0:
            raise harness_error(rc, command, err, info or None, phase="probe", python=self.python, where="here")
        try:
            return json.loads(out)
        except ValueError as exc:
            raise RunnerError(f"harness --probe printed no JSON ({exc})", command=command, exit_code=rc,
                              stderr_tail=err) from exc
