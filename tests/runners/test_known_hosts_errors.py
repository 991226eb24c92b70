"""A malformed known_hosts line is a one-line error naming the file and line, never paramiko's InvalidHostKey."""

from __future__ import annotations

import pytest

from edgekit.core.errors import HostKeyError
from edgekit.runners.ssh import SSHRunner


def test_malformed_known_hosts_line_is_named(ssh_env, x86_profile, tmp_path):
    kh = tmp_path / "known_hosts"
    # a good entry for the test host, then a line whose key is not base64 (as a bad copy-paste leaves it)
    kh.write_text(ssh_env.server.known_hosts_line().rstrip("\n") + "\nbadhost ssh-ed25519 AAAA!!!not-base64!!!\n")
    r = SSHRunner(ssh_env.spec, x86_profile, **ssh_env.runner_kwargs(known_hosts=kh))
    with pytest.raises(HostKeyError) as ei:
        r.connect()
    msg = str(ei.value)
    assert str(kh) in msg and "line 2" in msg and "ssh-keygen -R" in msg


def test_malformed_known_hosts_through_the_cli(ssh_env, tmp_path, cli):
    kh = tmp_path / "known_hosts"
    kh.write_text("[127.0.0.1]:1 ssh-ed25519 AAAA!!!not-base64!!!\n")
    r = cli("doctor", "--host", ssh_env.spec, "--known-hosts", str(kh), "-i", str(ssh_env.client_key), "--ssh-config", str(ssh_env.root / "ssh_config"))
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: ") and str(kh) in r.stderr and "line 1" in r.stderr, r.stderr
