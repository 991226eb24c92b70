"""SSHRunner against a real OpenSSH server on loopback: host keys, auth, deploy, cache, failures, Ctrl-C."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from edgekit.core.artifact import Artifact
from edgekit.core.errors import ConnectionFailed, HostKeyError, RunnerError, UsageError
from edgekit.core.runner_interface import HarnessSpec, InputSpec
from edgekit.runners.ssh import SSHRunner
from edgekit.runners.sshconf import parse_host_spec, resolve_host

sys.path.insert(0, str(Path(__file__).parent))
from sshd_util import NetnsLink, SshdServer, keygen, netns_available  # noqa: E402


# ---------------------------------------------------------------------------------------------- helpers


def _fresh_workdir(env) -> Path:
    return env.root / f"wd-{uuid.uuid4().hex[:8]}"


def _det_artifact(ppocr_det_path) -> Artifact:
    return Artifact.from_file(ppocr_det_path)


def _spec(model_path: str, art: Artifact, **over) -> HarnessSpec:
    kw = dict(
        model_path=model_path, model_format="onnx", runtime="onnxruntime", threads=1,
        inputs=[InputSpec(name=art.inputs[0].name, shape=[1, 3, 320, 320], dtype="float32")],
        warmup_runs=1, warmup_seconds=0.0, min_runs=3, min_seconds=0.0, idle_seconds=0.0,
    )
    kw.update(over)
    return HarnessSpec(**kw)


def _ssh_keygen_fingerprint(pub: Path) -> str:
    """Fingerprint as OpenSSH itself prints it (independent of our own computation)."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def _procs_matching(text: str) -> list:
    r = subprocess.run(["pgrep", "-f", text], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split()]


def _wait_gone(text: str, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _procs_matching(text)
        if not left:
            return []
        time.sleep(0.2)
    return _procs_matching(text)


# ---------------------------------------------------------------------------------------------- host specs


@pytest.mark.parametrize(
    "text, host, user, port",
    [
        ("root@127.0.0.1:2222", "127.0.0.1", "root", 2222),
        ("pi@raspberrypi.local", "raspberrypi.local", "pi", None),
        ("nano", "nano", None, None),
        ("ssh://me@[::1]:2200", "::1", "me", 2200),
        ("[fe80::1]", "fe80::1", None, None),
    ],
)
def test_parse_host_spec(text, host, user, port):
    hs = parse_host_spec(text)
    assert (hs.host, hs.user, hs.port) == (host, user, port)


@pytest.mark.parametrize("bad", ["", "user@", "host:notaport", "a b", "root@host:70000"])
def test_parse_host_spec_rejects_garbage(bad):
    with pytest.raises(UsageError):
        parse_host_spec(bad)


def test_ssh_config_alias_resolution(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text(
        "Host nano\n  HostName 10.0.0.7\n  User jetson\n  Port 2201\n  IdentityFile ~/.ssh/nano_key\n"
        "  ProxyJump gw,bastion:2022\n  UserKnownHostsFile /tmp/kh_nano\n"
        "Host *\n  User fallback\n"
    )
    r = resolve_host("nano", ssh_config=cfg)
    assert (r.hostname, r.user, r.port) == ("10.0.0.7", "jetson", 2201)
    assert r.identity_files == [str(Path("~/.ssh/nano_key").expanduser())]
    assert r.proxy_jump == ["gw", "bastion:2022"]
    assert r.known_hosts == "/tmp/kh_nano"
    assert r.known_hosts_name == "[10.0.0.7]:2201"
    # the spec's own user/port win over the config; the profile default only fills gaps
    r2 = resolve_host("admin@nano:22", ssh_config=cfg, default_user="profileuser")
    assert (r2.user, r2.port, r2.known_hosts_name) == ("admin", 22, "10.0.0.7")
    r3 = resolve_host("other", ssh_config=cfg)
    assert r3.user == "fallback" and r3.hostname == "other"


def test_proxycommand_is_refused_with_hint(tmp_path):
    cfg = tmp_path / "config"
    cfg.write_text("Host dev\n  ProxyCommand nc %h %p\n")
    with pytest.raises(UsageError, match="ProxyJump"):
        resolve_host("dev", ssh_config=cfg)


# ---------------------------------------------------------------------------------------------- host keys & auth


def test_unknown_host_key_is_refused_and_not_recorded(ssh_env, x86_profile, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    r = SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(known_hosts=kh))
    with pytest.raises(HostKeyError) as ei:
        r.connect()
    port = ssh_env.server.port
    assert f"[127.0.0.1]:{port} is not in" in ei.value.message
    fp = _ssh_keygen_fingerprint(Path(str(ssh_env.server.host_key) + ".pub"))
    assert fp in ei.value.hint and "--accept-new-host-key" in ei.value.hint
    assert kh.read_text() == ""


def test_accept_new_records_key_then_plain_connect_works(ssh_env, x86_profile, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("# my hosts\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1uLbP4dNeD0c6E7SYpUjwYnsAtD8c3d1w9EZuUOfhn\n")
    before = kh.read_text()
    r = SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(known_hosts=kh, accept_new_host_key=True))
    with r:
        assert r.workdir
    text = kh.read_text()
    assert text.startswith(before)  # existing lines kept byte for byte
    new = text[len(before):].split()
    pub = Path(str(ssh_env.server.host_key) + ".pub").read_text().split()
    assert new == [f"[127.0.0.1]:{ssh_env.server.port}", pub[0], pub[1]]
    # now known: a runner WITHOUT accept-new connects
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(known_hosts=kh)) as r2:
        assert r2.remote_python[:2] == list(sys.version_info[:2])


def test_ssh_config_accept_new_and_known_hosts_file(ssh_env, x86_profile, tmp_path):
    """`StrictHostKeyChecking accept-new` + `UserKnownHostsFile` in ssh_config act like the explicit options."""
    kh = tmp_path / "kh_from_config"
    cfg = tmp_path / "config"
    cfg.write_text(f"Host testdev\n  HostName 127.0.0.1\n  Port {ssh_env.server.port}\n  User root\n"
                   f"  IdentityFile {ssh_env.client_key}\n  UserKnownHostsFile {kh}\n  StrictHostKeyChecking accept-new\n")
    kw = ssh_env.runner_kwargs(ssh_config=cfg, identity_file=None)
    kw.pop("known_hosts")
    with SSHRunner("testdev", x86_profile, **kw) as r:
        assert r.known_hosts.path == kh
    assert kh.read_text().startswith(f"[127.0.0.1]:{ssh_env.server.port} ssh-ed25519 ")


def test_hashed_known_hosts_entry_is_honoured(ssh_env, x86_profile, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(ssh_env.server.known_hosts_line())
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(known_hosts=kh)) as r:
        assert r.workdir


def test_changed_host_key_is_refused_even_with_accept_new(ssh_env, x86_profile, tmp_path):
    other = keygen(tmp_path / "impostor")
    pub = Path(str(other) + ".pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.1]:{ssh_env.server.port} {pub[0]} {pub[1]}\n")
    before = kh.read_text()
    for accept in (False, True):
        r = SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(known_hosts=kh, accept_new_host_key=accept))
        with pytest.raises(HostKeyError) as ei:
            r.connect()
        msg = ei.value.message
        assert "HOST KEY CHANGED" in msg
        assert _ssh_keygen_fingerprint(Path(str(other) + ".pub")) in msg  # the recorded one
        assert _ssh_keygen_fingerprint(Path(str(ssh_env.server.host_key) + ".pub")) in msg  # the offered one
        assert "ssh-keygen -R" in ei.value.hint
    assert kh.read_text() == before


def test_wrong_key_is_refused_without_password_fallback(ssh_env, x86_profile, tmp_path):
    stranger = keygen(tmp_path / "stranger")
    r = SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(identity_file=stranger))
    with pytest.raises(ConnectionFailed) as ei:
        r.connect()
    assert "authentication as root" in ei.value.message and str(stranger) in ei.value.message
    assert "never uses passwords" in ei.value.hint
    assert not isinstance(ei.value, HostKeyError)


def test_ssh_agent_key_is_used(ssh_env, x86_profile, tmp_path, monkeypatch):
    if not shutil.which("ssh-agent"):
        pytest.skip("ssh-agent not installed")
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True, check=True).stdout
    pid = int(re.search(r"SSH_AGENT_PID=(\d+)", out).group(1))
    try:
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", str(ssh_env.client_key)], env=env, check=True, capture_output=True)
        # no identity file anywhere: only the agent holds the key
        kw = ssh_env.runner_kwargs(identity_file=None)
        with pytest.raises(ConnectionFailed):
            SSHRunner(ssh_env.spec, x86_profile, **kw).connect()  # autouse fixture removed SSH_AUTH_SOCK
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        with SSHRunner(ssh_env.spec, x86_profile, **kw) as r:
            assert r.workdir
        with pytest.raises(ConnectionFailed):  # and allow_agent=False really ignores it
            SSHRunner(ssh_env.spec, x86_profile, **dict(kw, allow_agent=False)).connect()
    finally:
        os.kill(pid, signal.SIGTERM)


def test_nothing_listening_is_a_connection_error(ssh_env, x86_profile):
    from sshd_util import free_port

    r = SSHRunner(f"root@127.0.0.1:{free_port()}", x86_profile, **ssh_env.runner_kwargs(connect_timeout=3))
    with pytest.raises(ConnectionFailed) as ei:
        r.connect()
    assert "cannot connect to root@127.0.0.1" in ei.value.message


def test_config_alias_with_identityfile_and_proxyjump(ssh_env, x86_profile, tmp_path):
    port = ssh_env.server.port
    cfg = tmp_path / "config"
    cfg.write_text(
        f"Host jump\n  HostName localhost\n  Port {port}\n  User root\n  IdentityFile {ssh_env.client_key}\n"
        f"Host dev\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {ssh_env.client_key}\n"
        "  ProxyJump jump\n"
    )
    kw = ssh_env.runner_kwargs(ssh_config=cfg, identity_file=None)
    # the jump host is verified on its own: [localhost]:port is not known yet
    with pytest.raises(HostKeyError, match=rf"\[localhost\]:{port}"):
        SSHRunner("dev", x86_profile, **kw).connect()
    kh = tmp_path / "known_hosts"
    line = ssh_env.server.known_hosts_line()
    kh.write_text(line + line.replace("[127.0.0.1]", "[localhost]"))
    with SSHRunner("dev", x86_profile, **dict(kw, known_hosts=kh)) as r:
        assert len(r._clients) == 2  # jump client + device client tunnelled through it
        assert r.target == f"ssh:root@127.0.0.1:{port}"
    log = ssh_env.server.log.read_text()
    assert "Accepted publickey for root" in log


def test_missing_python_is_a_clear_error(ssh_env, x86_profile):
    r = SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(python="/opt/nowhere/python3"))
    with pytest.raises(RunnerError) as ei:
        r.connect()
    assert "Python interpreter '/opt/nowhere/python3' not found" in ei.value.message
    assert ei.value.remote_exit_code == 127
    assert "connection.python" in ei.value.hint


# ---------------------------------------------------------------------------------------------- deploy & run


def test_push_run_and_cached_rerun(ssh_env, x86_profile, ppocr_det_path):
    art = _det_artifact(ppocr_det_path)
    wd = _fresh_workdir(ssh_env)
    progress, uploads = [], []
    kw = ssh_env.runner_kwargs(workdir=str(wd), on_progress=progress.append, on_upload=lambda s, t: uploads.append((s, t)))
    with SSHRunner(ssh_env.spec, x86_profile, **kw) as r:
        assert r.target == f"ssh:{ssh_env.spec}"
        harness_bytes = r.bytes_uploaded
        remote = r.push(art)
        assert r.bytes_uploaded - harness_bytes == art.size_bytes
        assert uploads[-1] == (art.size_bytes, art.size_bytes)
        assert remote.startswith(str(wd) + "/") and remote.endswith(ppocr_det_path.name)
        assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == art.sha256
        result = r.run_harness(_spec(remote, art))
    assert result.runner == "ssh" and result.host == ssh_env.spec
    assert result.model.sha256 in (None, art.sha256)
    assert result.timing.runs >= 3 and len(result.timing.samples_ms) == result.timing.runs
    assert result.timing.stats.median_ms > 0
    assert result.inputs and result.inputs[0]["shape"] == [1, 3, 320, 320]
    assert any(p.get("phase") == "timed" for p in progress)
    # spec cleaned up, no partial uploads left, everything stayed inside the work dir
    assert list((wd / "runs").iterdir()) == []
    assert not list(wd.rglob("*.part"))
    assert {p.name for p in wd.iterdir()} == {"harness", "models", "runs"}

    # second run, new connection: nothing uploaded (neither harness nor model)
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd))) as r2:
        assert r2.push(art) == remote
        assert r2.bytes_uploaded == 0
        assert r2.uploads_skipped == 2
        assert r2.last_upload_s == 0.0


def test_push_all_files_of_an_ir_pair(ssh_env, x86_profile, tmp_path):
    xml, binf = tmp_path / "model.xml", tmp_path / "model.bin"
    xml.write_text("<net name='x'/>")
    binf.write_bytes(bytes(range(256)) * 64)
    art = Artifact(path=xml, format="openvino", inputs=[], outputs=[], sha256=hashlib.sha256(xml.read_bytes()).hexdigest(),
                   size_bytes=xml.stat().st_size, extra_files=[binf])
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(_fresh_workdir(ssh_env)))) as r:
        main = Path(r.push(art))
        assert main.name == "model.xml"
        assert (main.parent / "model.bin").read_bytes() == binf.read_bytes()
        # changing only the weights gives a different remote directory: a stale .bin is never paired with the .xml
        binf.write_bytes(b"\x00" * 100)
        main2 = Path(r.push(art))
        assert main2.parent != main.parent and (main2.parent / "model.bin").read_bytes() == b"\x00" * 100


def test_remote_paths_outside_the_workdir_are_refused(ssh_env, x86_profile, tmp_path):
    f = tmp_path / "payload.txt"
    f.write_text("x")
    wd = _fresh_workdir(ssh_env)
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd))) as r:
        with pytest.raises(RunnerError, match="outside the work directory"):
            r.push_files([f], kind="../escape")
    assert not (wd.parent / "escape").exists()


def test_in_memory_artifact_cannot_be_pushed(ssh_env, x86_profile):
    art = Artifact(path=Path("<memory:Net>"), format="pytorch", inputs=[], outputs=[], sha256="0" * 64, size_bytes=1,
                   metadata={"in_memory": True})
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs()) as r:
        with pytest.raises(RunnerError, match="in-memory"):
            r.push(art)


def test_connection_dropped_mid_upload(ssh_env, x86_profile, ppocr_det_path):
    art = _det_artifact(ppocr_det_path)
    wd = _fresh_workdir(ssh_env)
    holder = {}

    def cut(sent, total):
        if sent > total // 2 and "r" in holder:
            holder.pop("r")._client.get_transport().close()  # the link dies halfway through the model

    r = SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd), on_upload=cut))
    r.connect()
    holder["r"] = r
    with pytest.raises(ConnectionFailed) as ei:
        r.push(art)
    r.close()
    assert f"connection to {ssh_env.spec} lost during upload" in ei.value.message
    model_dir = wd / "models" / art.sha256
    assert not (model_dir / ppocr_det_path.name).exists()  # the final name never holds a partial file
    parts = list(model_dir.glob("*.part"))
    assert parts and all(p.stat().st_size < art.size_bytes for p in parts)
    # next run re-uploads fully and works
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd))) as r2:
        remote = r2.push(art)
        assert r2.bytes_uploaded == art.size_bytes
        assert hashlib.sha256(Path(remote).read_bytes()).hexdigest() == art.sha256
        assert r2.run_harness(_spec(remote, art)).timing.runs >= 3
        # once abandoned (older than 10 min), the partial file is cleaned by the next check
        for p in parts:
            os.utime(p, (time.time() - 3600, time.time() - 3600))
        r2.push(art)
        assert not any(p.exists() for p in parts)
        assert r2.bytes_uploaded == art.size_bytes  # that check uploaded nothing new


def test_remote_timeout_stops_the_remote_process(ssh_env, x86_profile, ppocr_det_path):
    art = _det_artifact(ppocr_det_path)
    wd = _fresh_workdir(ssh_env)
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd), command_timeout=4.0)) as r:
        remote = r.push(art)
        with pytest.raises(RunnerError) as ei:
            r.run_harness(_spec(remote, art, min_seconds=120.0, max_seconds=300.0))
    assert "did not finish within 4 s" in ei.value.message
    assert "harness.py" in ei.value.command
    assert _wait_gone(str(wd / "runs")) == []
    assert list((wd / "runs").iterdir()) == []


def test_remote_process_killed_reports_exit_137_and_stderr_tail(ssh_env, x86_profile, ppocr_det_path):
    art = _det_artifact(ppocr_det_path)
    wd = _fresh_workdir(ssh_env)

    def kill_when_timing(p):
        if p.get("phase") == "timed":
            # what the kernel's OOM killer does: SIGKILL to the harness process
            # (only the Python process, as the OOM killer would pick it; not the shell that waits for it)
            pattern = "^" + re.escape(sys.executable) + " .*" + re.escape(str(wd / "runs" / "spec-"))
            subprocess.run(["pkill", "-KILL", "-f", pattern], check=False)

    kw = ssh_env.runner_kwargs(workdir=str(wd), on_progress=kill_when_timing)
    with SSHRunner(ssh_env.spec, x86_profile, **kw) as r:
        remote = r.push(art)
        with pytest.raises(RunnerError) as ei:
            r.run_harness(_spec(remote, art, min_seconds=60.0, max_seconds=120.0))
    err = ei.value
    assert err.remote_exit_code == 137
    assert "killed (probably out of memory)" in err.message
    assert "EDGEKIT-PROGRESS" in err.stderr_tail  # how far it got
    assert "oom" in err.hint
    assert list((wd / "runs").iterdir()) == []


def test_connection_lost_during_benchmark(ssh_env, x86_profile, ppocr_det_path):
    art = _det_artifact(ppocr_det_path)
    wd = _fresh_workdir(ssh_env)
    listener = ssh_env.server.proc.pid

    def drop_link(p):
        if p.get("phase") == "timed":
            # kill the sshd process serving this connection, as a dying link or rebooting device would
            for pid in ssh_env.server.session_pids():
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd") and pid != listener:
                    os.kill(pid, 9)

    try:
        with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd), on_progress=drop_link)) as r:
            remote = r.push(art)
            with pytest.raises(ConnectionFailed) as ei:
                r.run_harness(_spec(remote, art, min_seconds=60.0, max_seconds=120.0))
        assert f"connection to {ssh_env.spec} lost during benchmark" in ei.value.message
        assert "re-run" in ei.value.hint
    finally:
        # the orphaned harness notices the broken pipe at its next progress line; make sure it is gone
        pattern = "^" + re.escape(sys.executable) + " .*" + re.escape(str(wd / "runs" / "spec-"))
        subprocess.run(["pkill", "-KILL", "-f", pattern], check=False)


def test_runtime_missing_on_device_is_typed(ssh_env, x86_profile, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(_fresh_workdir(ssh_env)))) as r:
        remote = r.push_files([engine])[0]
        spec = HarnessSpec(model_path=remote, model_format="tensorrt", runtime="tensorrt",
                           inputs=[InputSpec(name="x", shape=[1], dtype="float32")], min_runs=1, min_seconds=0)
        with pytest.raises(RunnerError) as ei:
            r.run_harness(spec)
    assert ei.value.remote_exit_code == 3
    assert "runtime missing on the device" in ei.value.message
    assert ei.value.hint


def test_ctrl_c_stops_the_remote_harness(ssh_env, x86_profile, ppocr_det_path):
    art = _det_artifact(ppocr_det_path)
    wd = _fresh_workdir(ssh_env)

    def interrupt(p):
        if p.get("phase") == "timed":
            raise KeyboardInterrupt

    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(wd), on_progress=interrupt)) as r:
        remote = r.push(art)
        with pytest.raises(KeyboardInterrupt):
            r.run_harness(_spec(remote, art, min_seconds=120.0, max_seconds=300.0))
    assert _wait_gone(str(wd / "runs")) == []
    assert list((wd / "runs").iterdir()) == []


def test_disk_full_on_device_is_typed(ssh_env, x86_profile, ppocr_det_path, small_tmpfs):
    mnt = small_tmpfs("1m")
    art = _det_artifact(ppocr_det_path)
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(workdir=str(mnt / "wd"))) as run:
        with pytest.raises(RunnerError) as ei:
            run.push(art)
    assert "disk is full" in ei.value.message and "df -h" in ei.value.hint
    assert not list((mnt / "wd" / "models").rglob("*.onnx"))


def test_probe_reports_device_and_ssh_facts(ssh_env, x86_profile):
    with SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs()) as r:
        info = r.probe()
    assert info["ssh"]["target"] == f"ssh:{ssh_env.spec}"
    assert info["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}")


# ---------------------------------------------------------------------------------------------- separate host


@pytest.fixture(scope="module")
def netns_host(ssh_env, tmp_path_factory):
    if not netns_available():
        pytest.skip("network namespaces not permitted here (needs root / CAP_SYS_ADMIN and iproute2)")
    link = NetnsLink(tag=uuid.uuid4().hex[:6]).up()
    root = tmp_path_factory.mktemp("netns-sshd")
    server = SshdServer(root, host=link.peer_ip, port=22, netns=link.ns,
                        client_pubkeys=[Path(str(ssh_env.client_key) + ".pub")])
    try:
        server.start()
        yield server
    finally:
        server.stop()
        link.down()


def test_separate_host_in_network_namespace(ssh_env, x86_profile, netns_host, tmp_path, ppocr_det_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(netns_host.known_hosts_line())
    assert kh.read_text().startswith(f"{netns_host.host} ")  # port 22: plain host name, no brackets
    art = _det_artifact(ppocr_det_path)
    wd = _fresh_workdir(ssh_env)
    with SSHRunner(f"root@{netns_host.host}", x86_profile, **ssh_env.runner_kwargs(known_hosts=kh, workdir=str(wd))) as r:
        assert r.target == f"ssh:root@{netns_host.host}:22"
        remote = r.push(art)
        res = r.run_harness(_spec(remote, art))
    assert res.timing.runs >= 3 and res.host == f"root@{netns_host.host}"


# ---------------------------------------------------------------------------------------------- CLI end to end


@pytest.mark.slow
def test_cli_deploy_ppocr_det_to_ssh_host_then_cached_rerun(ssh_env, tmp_path, cli):
    import json

    wd = _fresh_workdir(ssh_env)
    args = [
        "deploy", "zoo:ppocr-det", "--profile", "x86-cpu", "--host", ssh_env.spec,
        "--known-hosts", str(ssh_env.known_hosts), "--identity-file", str(ssh_env.client_key),
        "--ssh-config", str(ssh_env.root / "ssh_config"), "--remote-workdir", str(wd),
        "--shape", "x=1x3x320x320", "--warmup-runs", "1", "--warmup-seconds", "0", "--min-runs", "3",
        "--min-seconds", "0", "--fidelity-samples", "2", "--json",
        # the "device" Python is this test's interpreter (a venv has openvino; the system python3 may not)
        "--remote-python", ssh_env.python,
    ]
    first = cli(*args, "--out", str(tmp_path / "out1"))
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads(first.stdout)
    assert report["target"] == f"ssh:{ssh_env.spec}"
    bench = report["benchmark"]
    assert bench["runner"] == "ssh" and bench["host"] == ssh_env.spec
    assert bench["timing"]["runs"] >= 3
    # the 2 held-out pages ran on the "device" too, and their outputs were fetched and scored beside the host's
    host, device = report["fidelity_check"]["rows"]
    assert host["measured"] and device["measured"] and device["samples"] == 2 == bench["evaluation"]["samples"]
    assert report["fidelity_device"]["where"] == "device" and bench["evaluation"]["outputs_file"].startswith(str(wd) + "/eval/")
    models = sorted(p for p in (wd / "models").rglob("*") if p.is_file())
    assert models, "nothing was deployed into the remote work dir"
    # every file of the final artifact is on the device, byte-identical
    main = Path(report["artifact"]["path"])
    on_device = [p for p in models if p.name == main.name]
    assert on_device, f"{main.name} not among {models}"
    if main.suffix == ".xml":  # OpenVINO IR: the weights travel with it, into the same directory
        assert (on_device[0].parent / (main.stem + ".bin")).is_file()
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in models}

    second = cli(*args, "--out", str(tmp_path / "out2"))
    assert second.returncode == 0, second.stderr[-3000:]
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (wd / "models").rglob("*") if p.is_file()}
    assert after == before  # second run: nothing re-uploaded, nothing replaced
    assert json.loads(second.stdout)["benchmark"]["timing"]["runs"] >= 3
    assert list((wd / "runs").iterdir()) == []
