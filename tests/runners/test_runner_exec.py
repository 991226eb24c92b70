"""Runner.exec / Runner.pull (used by on-device build steps such as TensorRT) on the real sshd and locally."""

from __future__ import annotations

import pytest

from edgekit.core.profiles import load_profile
from edgekit.core.registry import get_runner


@pytest.fixture
def ssh_runner(ssh_env):
    r = get_runner("ssh")(ssh_env.spec, load_profile("x86-cpu"), **ssh_env.runner_kwargs())
    r.connect()
    yield r
    r.close()


def test_ssh_exec_quotes_every_argument(ssh_runner, tmp_path):
    tricky = "a b; echo INJECTED $(id) 'q'"
    code, out, err = ssh_runner.exec(["printf", "%s", tricky], timeout=30)
    assert code == 0 and out == tricky  # one argument, nothing interpreted by the shell


def test_ssh_exec_missing_program_and_timeout(ssh_runner):
    code, _, err = ssh_runner.exec(["no-such-program-edgekit"], timeout=30)
    assert code == 127
    with pytest.raises(TimeoutError):
        ssh_runner.exec(["sleep", "5"], timeout=1)


def test_ssh_pull_copies_exact_bytes(ssh_runner, ssh_env, tmp_path):
    src = ssh_env.workdir / "engine.bin"
    src.parent.mkdir(parents=True, exist_ok=True)
    payload = bytes(range(256)) * 1000
    src.write_bytes(payload)
    dst = tmp_path / "got" / "engine.bin"
    ssh_runner.pull(str(src), dst)
    assert dst.read_bytes() == payload
    assert not list(dst.parent.glob(".*part"))


def test_local_exec_and_pull(tmp_path):
    with get_runner("local")(load_profile("x86-cpu")) as r:
        code, out, _ = r.exec(["printf", "%s", "x y"], timeout=10)
        assert (code, out) == (0, "x y")
        (tmp_path / "a").write_bytes(b"123")
        r.pull(str(tmp_path / "a"), tmp_path / "b")
        assert (tmp_path / "b").read_bytes() == b"123"
        with pytest.raises(TimeoutError):
            r.exec(["sleep", "3"], timeout=0.5)
