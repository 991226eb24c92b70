"""Fleet tests: isolated lock dir and history, a shelf of three sshd boards in network namespaces, a Ray cluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runners"))
from boards import RayCluster, Shelf, ray_bin  # noqa: E402
from sshd_util import have_sshd, netns_available  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_fleet_state(tmp_path_factory):
    """Board locks and the history live in the test's own directories, never the user's."""
    data = tmp_path_factory.mktemp("edgekit-data")
    old = {k: os.environ.get(k) for k in ("EDGEKIT_DATA_DIR", "EDGEKIT_HISTORY", "RAY_USAGE_STATS_ENABLED")}
    os.environ["EDGEKIT_DATA_DIR"] = str(data)
    os.environ["EDGEKIT_HISTORY"] = str(data / "history.sqlite")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    yield data
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def shelf(tmp_path_factory):
    if not have_sshd():
        if os.environ.get("EDGEKIT_REQUIRE_SSHD"):
            pytest.fail("EDGEKIT_REQUIRE_SSHD is set but /usr/sbin/sshd is missing: .ci/run must install openssh-server")
        pytest.skip("OpenSSH server not installed (apt-get install -y --no-install-recommends openssh-server)")
    if not netns_available():
        if os.environ.get("EDGEKIT_REQUIRE_NETNS"):
            pytest.fail("EDGEKIT_REQUIRE_NETNS is set but network namespaces cannot be created (root and iproute2 needed)")
        pytest.skip("needs root and iproute2 to put each board in its own network namespace")
    s = Shelf(tmp_path_factory.mktemp("shelf"), 3).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("EDGEKIT_REQUIRE_RAY"):
            pytest.fail("EDGEKIT_REQUIRE_RAY is set but ray is missing: .ci/run must pip install -e '.[fleet]'")
        pytest.skip("Ray is the optional extra edgekit[fleet]")
    if not ray_bin():
        pytest.skip("the `ray` command is not installed")
    c = RayCluster()
    try:
        yield c.start()
    finally:
        c.stop()
