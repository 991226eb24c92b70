"""`edgekit setup` against the real loopback sshd: venv creation, reuse by the runner, repair, and its errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.core.profiles import load_profile
from edgekit.runners.ssh import SSHRunner
from edgekit.workflows import setup as setup_mod
from edgekit.workflows.setup import SetupError, setup

NUMPY_PIN = f"numpy=={np.__version__}"  # the version this machine has: a wheel pip can always find here


@pytest.fixture()
def pinned_profile(tmp_path):
    p = tmp_path / "x86-pinned.yaml"
    p.write_text(f"extends: x86-cpu\nname: x86-pinned\nsetup:\n  pins: ['{NUMPY_PIN}']\n")
    return load_profile(str(p))


def _ssh(ssh_env, workdir):
    kw = ssh_env.runner_kwargs(workdir=str(workdir))
    kw.pop("on_progress", None)
    return kw


def test_setup_builds_venv_and_runner_uses_it(ssh_env, pinned_profile, tmp_path):
    wd = tmp_path / "dev"
    res = setup(pinned_profile, ssh_env.spec, ssh=_ssh(ssh_env, wd))
    assert res["installed"] == {"numpy": np.__version__}
    assert res["repaired"] is False and res["unchanged"] is False
    marker = json.loads((wd / "venv" / "edgekit-setup.json").read_text())
    assert marker["pins"] == [NUMPY_PIN]
    # a runner that was not told which Python to use picks the venv's
    kw = _ssh(ssh_env, wd)
    kw.pop("python")
    with SSHRunner(ssh_env.spec, pinned_profile, **kw) as r:
        r.connect()
        assert r.python == str(wd / "venv" / "bin" / "python")
        rc, out, _ = r.exec([r.python, "-c", "import sys, numpy; print(sys.prefix)"])
        assert rc == 0 and out.strip() == str(wd / "venv")
        assert r.probe()["ssh"]["setup"]["installed"] == {"numpy": np.__version__}
    # an explicit --remote-python still wins
    with SSHRunner(ssh_env.spec, pinned_profile, **_ssh(ssh_env, wd)) as r:
        r.connect()
        assert r.python == ssh_env.python
    # a second run with the same pins changes nothing
    again = setup(pinned_profile, ssh_env.spec, ssh=_ssh(ssh_env, wd))
    assert again["unchanged"] is True


def test_interrupted_setup_is_repaired(ssh_env, pinned_profile, tmp_path):
    wd = tmp_path / "dev"
    (wd / "venv" / "bin").mkdir(parents=True)
    (wd / "venv" / "bin" / "python").write_text("half-written")  # what an interrupted setup leaves: no marker
    kw = _ssh(ssh_env, wd)
    kw.pop("python")
    with SSHRunner(ssh_env.spec, pinned_profile, **kw) as r:
        r.connect()
        assert r.python != str(wd / "venv" / "bin" / "python")  # unmarked venv is never used
    res = setup(pinned_profile, ssh_env.spec, ssh=_ssh(ssh_env, wd))
    assert res["repaired"] is True
    assert (wd / "venv" / "edgekit-setup.json").is_file()
    assert (wd / "venv" / "bin" / "python").resolve().is_file() and (wd / "venv" / "bin" / "python").stat().st_size > 100


def test_wheelhouse_installs_offline(ssh_env, pinned_profile, tmp_path):
    wd, wh = tmp_path / "dev", tmp_path / "wheels"
    res = setup(pinned_profile, ssh_env.spec, ssh=_ssh(ssh_env, wd), wheelhouse=wh)
    assert res["wheelhouse"] is True and res["installed"] == {"numpy": np.__version__}
    uploaded = list((wd / "wheelhouse").glob("*/numpy-*.whl"))
    assert len(uploaded) == 1 and uploaded[0].name in {p.name for p in wh.glob("*.whl")}


def test_no_wheel_for_that_python_is_named(ssh_env, tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text("extends: x86-cpu\nname: old-numpy\nsetup:\n  pins: ['numpy==1.19.5']\n")  # no cp311 wheel exists
    with pytest.raises(SetupError) as ei:
        setup(load_profile(str(p)), ssh_env.spec, ssh=_ssh(ssh_env, tmp_path / "dev"), wheelhouse=tmp_path / "wh")
    msg = str(ei.value)
    assert "no wheel of numpy==1.19.5 exists for Python 3.11 on x86_64" in msg
    assert not (tmp_path / "dev" / "venv").exists()


def test_no_space_is_refused_before_anything_is_written(ssh_env, pinned_profile, tmp_path, monkeypatch):
    monkeypatch.setattr(setup_mod, "MIN_FREE_BYTES", 1 << 60)
    with pytest.raises(SetupError, match=r"MiB free in .*setup needs about"):
        setup(pinned_profile, ssh_env.spec, ssh=_ssh(ssh_env, tmp_path / "dev"))
    assert not (tmp_path / "dev" / "venv").exists()


def test_profile_without_pins_is_refused(ssh_env, tmp_path):
    with pytest.raises(SetupError, match="x86-cpu.*setup.pins is empty"):
        setup("x86-cpu", ssh_env.spec, ssh=_ssh(ssh_env, tmp_path / "dev"))


def test_deploy_without_any_profile_runtime_on_the_device_says_run_setup(ssh_env, tmp_path, cli):
    import subprocess
    import sys

    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)  # a device Python with no runtime
    p = cli("deploy", "zoo:ppocr-det", "--profile", "x86-cpu", "--host", ssh_env.spec, "--known-hosts", str(ssh_env.known_hosts),
            "--identity-file", str(ssh_env.client_key), "--ssh-config", str(ssh_env.root / "ssh_config"),
            "--remote-workdir", str(tmp_path / "dev"), "--remote-python", str(bare / "bin" / "python"), "--no-cache")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "none of the runtimes of profile 'x86-cpu'" in p.stderr and "edgekit setup --host" in p.stderr


def test_cli_setup_json_stdout_is_one_document(ssh_env, pinned_profile, tmp_path, cli):
    """`edgekit setup --json` (the --json coverage test counts on this one): stdout is the setup result alone."""
    prof = tmp_path / "x86-pinned.yaml"  # written by the pinned_profile fixture
    r = cli("setup", "--host", ssh_env.spec, "--profile", str(prof), "--known-hosts", str(ssh_env.known_hosts),
            "--identity-file", str(ssh_env.client_key), "--ssh-config", str(ssh_env.root / "ssh_config"),
            "--remote-workdir", str(tmp_path / "dev"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["installed"] == {"numpy": np.__version__}
