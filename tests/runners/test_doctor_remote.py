"""`edgekit doctor --host` against the real test sshd: probes the device and flags a profile mismatch."""

from __future__ import annotations

import json


def _ssh_args(ssh_env):
    return [
        "--host", ssh_env.spec, "--known-hosts", str(ssh_env.known_hosts), "--identity-file", str(ssh_env.client_key),
        "--ssh-config", str(ssh_env.root / "ssh_config"), "--remote-workdir", str(ssh_env.workdir), "--remote-python", ssh_env.python,
    ]


def test_doctor_host_reports_runtimes_and_profile_mismatch(ssh_env, cli):
    p = cli("doctor", *_ssh_args(ssh_env), "--profile", "jetson-nano", "--json")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["target"] == f"ssh:{ssh_env.spec}"
    dev = rep["device"]
    assert dev["arch"] == "x86_64"
    assert dev["runtimes"]["onnxruntime"]["available"] is True
    assert any("x86_64" in m and "aarch64" in m for m in rep["profile_mismatches"])


def test_doctor_host_table_output(ssh_env, cli):
    p = cli("doctor", *_ssh_args(ssh_env), "--profile", "x86-cpu")
    assert p.returncode == 0, p.stderr
    assert "onnxruntime" in p.stdout and "energy" in p.stdout


def test_doctor_unknown_host_key_is_refused(ssh_env, cli, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = _ssh_args(ssh_env)
    args[args.index("--known-hosts") + 1] = str(empty)
    p = cli("doctor", *args)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "not in" in p.stderr and "--accept-new-host-key" in p.stderr
