"""A real OpenSSH server on loopback for the SSH runner tests (session-scoped), with its own keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from sshd_util import SshdServer, have_sshd, keygen  # noqa: E402


class SshEnv:
    """Everything a test needs to reach the test host: spec, client key, a known_hosts file, a device work dir."""

    def __init__(self, server: SshdServer, root: Path, client_key: Path, known_hosts: Path, workdir: Path):
        self.server, self.root, self.client_key, self.known_hosts, self.workdir = server, root, client_key, known_hosts, workdir
        self.python = sys.executable  # the device's Python here: the one that has onnxruntime

    @property
    def spec(self) -> str:
        return self.server.spec

    def runner_kwargs(self, **over):
        kw = dict(known_hosts=self.known_hosts, identity_file=self.client_key, workdir=str(self.workdir),
                  python=self.python, ssh_config=self.root / "ssh_config", connect_timeout=10.0)
        kw.update(over)
        return kw


@pytest.fixture(scope="session")
def ssh_env(tmp_path_factory):
    if not have_sshd():
        if os.environ.get("EDGEKIT_REQUIRE_SSHD"):
            pytest.fail("EDGEKIT_REQUIRE_SSHD is set but /usr/sbin/sshd is missing: .ci/run must install openssh-server")
        pytest.skip("OpenSSH server not installed (apt-get install -y --no-install-recommends openssh-server)")
    root = tmp_path_factory.mktemp("sshd")
    client_key = keygen(root / "client_ed25519")
    server = SshdServer(root / "server", client_pubkeys=[Path(str(client_key) + ".pub")]).start()
    known = root / "known_hosts"
    known.write_text(server.known_hosts_line())
    (root / "ssh_config").write_text("")  # empty: never read the real ~/.ssh/config
    workdir = root / "device-workdir"
    try:
        yield SshEnv(server, root, client_key, known, workdir)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch):
    """Tests authenticate with their own key only: a developer's ssh-agent must not make 'wrong key' pass."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture(scope="session")
def x86_profile():
    from edgekit.core.profiles import load_profile

    return load_profile("x86-cpu")


@pytest.fixture(scope="module")
def rec_ir(tmp_path_factory):
    """PP-OCRv4 rec (from rapidocr-onnxruntime) converted to an OpenVINO IR."""
    import importlib.util

    import openvino as ov

    rec = Path(importlib.util.find_spec("rapidocr_onnxruntime").origin).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    d = tmp_path_factory.mktemp("ov")
    ov.save_model(ov.convert_model(str(rec)), str(d / "rec.xml"))
    return d / "rec.xml"
