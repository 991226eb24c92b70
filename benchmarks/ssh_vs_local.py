"""Remote (SSH) vs local benchmark of the same artifact: latency medians, SSH overhead, upload rate, cache.

Usage:
    python benchmarks/ssh_vs_local.py                      # starts its own sshd on loopback (needs openssh-server)
    python benchmarks/ssh_vs_local.py --host root@dev:22 --identity-file KEY --known-hosts FILE
    python benchmarks/ssh_vs_local.py --json out.json --shape 1x3x640x640 --min-seconds 5

Figures (one run; the goals from the SSH issue):
  * latency median remote vs local within 5% (inference is timed inside the remote process, so SSH round
    trips must not show up in the numbers);
  * wall time of the whole remote call (connect + push + run) minus the upload (SFTP + device-side sha256
    check) and minus the same local run: <= 2 s;
  * upload throughput of the artifact (fresh remote work dir);
  * bytes sent on a cached re-run: must be 0.
Local and remote runs alternate (L R L R ...) so drift on a shared machine hits both sides alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _det_path() -> Path:
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def _start_loopback_sshd(root: Path):
    sys.path.insert(0, str(REPO / "tests" / "runners"))
    from sshd_util import SshdServer, have_sshd, keygen

    if not have_sshd():
        sys.exit("openssh-server is not installed: apt-get install -y --no-install-recommends openssh-server, or pass --host")
    key = keygen(root / "client_key")
    server = SshdServer(root / "sshd", client_pubkeys=[Path(str(key) + ".pub")]).start()
    kh = root / "known_hosts"
    kh.write_text(server.known_hosts_line())
    cfg = root / "ssh_config"
    cfg.write_text("")
    return server, key, kh, cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", help="user@host[:port]; default: a loopback sshd started here")
    ap.add_argument("--identity-file")
    ap.add_argument("--known-hosts")
    ap.add_argument("--ssh-config")
    ap.add_argument("--remote-python", default=sys.executable, help="device Python (default: this interpreter)")
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: PP-OCRv4 det)")
    ap.add_argument("--shape", default="1x3x640x640")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--min-runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3, help="L/R pairs (the first remote one uploads)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    from edgekit.core.artifact import Artifact
    from edgekit.core.profiles import load_profile
    from edgekit.core.registry import get_runner
    from edgekit.core.runner_interface import HarnessSpec, InputSpec

    profile = load_profile("x86-cpu")
    art = Artifact.from_file(args.model or _det_path())
    shape = [int(x) for x in args.shape.split("x")]
    tmp = Path(tempfile.mkdtemp(prefix="ek-ssh-bench-"))
    server = None
    if args.host:
        host, key, kh, cfg = args.host, args.identity_file, args.known_hosts, args.ssh_config
    else:
        server, key, kh, cfg = _start_loopback_sshd(tmp)
        host = server.spec
    ssh_kw = dict(identity_file=key, known_hosts=kh, ssh_config=cfg, python=args.remote_python)

    def spec_for(path: str) -> HarnessSpec:
        return HarnessSpec(
            model_path=path, model_format="onnx", runtime="onnxruntime", threads=args.threads,
            inputs=[InputSpec(name=art.inputs[0].name, shape=shape, dtype="float32")],
            warmup_runs=5, warmup_seconds=1.0, min_runs=args.min_runs, min_seconds=args.min_seconds, idle_seconds=0.0,
        )

    SSH = get_runner("ssh")
    Local = get_runner("local")
    rows = []
    upload = {}
    try:
        # fresh remote work dir: the first remote call pays the upload, measured separately
        remote_wd = f"/tmp/ek-ssh-bench-remote-{int(time.time())}"
        for i in range(args.rounds):
            t0 = time.perf_counter()
            with Local(profile) as lr:
                lres = lr.run_harness(spec_for(lr.push(art)))
            local_wall = time.perf_counter() - t0

            t0 = time.perf_counter()
            with SSH(host, profile, workdir=remote_wd, **ssh_kw) as rr:
                harness_upload_s = rr.last_upload_s + rr.last_verify_s
                path = rr.push(art)
                model_upload_s = rr.last_upload_s
                model_verify_s = rr.last_verify_s
                sent = rr.bytes_uploaded
                rres = rr.run_harness(spec_for(path))
                commands = rr.commands_run
            remote_wall = time.perf_counter() - t0
            if i == 0:
                upload = {"bytes": sent, "artifact_bytes": art.size_bytes, "artifact_upload_s": model_upload_s,
                          "artifact_verify_s": model_verify_s,
                          "MiB_per_s": art.size_bytes / model_upload_s / 2**20 if model_upload_s else None}
            rows.append({
                "round": i, "local_median_ms": lres.timing.stats.median_ms, "remote_median_ms": rres.timing.stats.median_ms,
                "local_wall_s": local_wall, "remote_wall_s": remote_wall,
                "upload_s": harness_upload_s + model_upload_s + model_verify_s, "bytes_sent": sent,
                "remote_shell_commands": commands,
                "ssh_overhead_s": remote_wall - (harness_upload_s + model_upload_s + model_verify_s) - local_wall,
            })
            print(json.dumps(rows[-1]), flush=True)

        with SSH(host, profile, workdir=remote_wd, **ssh_kw) as rr:
            before = rr.bytes_uploaded  # the harness, only if it changed since the last round
            rr.push(art)
            cached_bytes = rr.bytes_uploaded - before
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(remote_wd, ignore_errors=True)  # loopback: the "device" dir is local
        else:
            print(f"remote work dir left on the device: {remote_wd}")
        shutil.rmtree(tmp, ignore_errors=True)  # throwaway sshd config and keys

    lm = statistics.median(r["local_median_ms"] for r in rows)
    rm = statistics.median(r["remote_median_ms"] for r in rows)
    overhead = statistics.median(r["ssh_overhead_s"] for r in rows)
    figures = {
        "model": str(art.path.name), "shape": shape, "threads": args.threads, "host": host,
        "local_median_ms": lm, "remote_median_ms": rm, "median_diff_pct": 100.0 * (rm - lm) / lm,
        "ssh_overhead_s_beyond_upload": overhead, "upload": upload, "cached_rerun_bytes_sent": cached_bytes,
        "goals": {
            "medians_within_5pct": abs(rm - lm) / lm <= 0.05,
            "overhead_le_2s": overhead <= 2.0,
            "cached_rerun_zero_bytes": cached_bytes == 0,
        },
        "rounds": rows,
    }
    print("\nremote vs local (loopback SSH)" if server else f"\nremote ({host}) vs local")
    print(f"  latency median   local {lm:8.2f} ms   remote {rm:8.2f} ms   diff {figures['median_diff_pct']:+.1f}%")
    print(f"  remote call adds {overhead:.2f} s beyond the upload and its sha256 check (median over rounds;"
          f" connect + checks + spec + result)")
    if upload.get("MiB_per_s"):
        print(f"  upload           {upload['artifact_bytes'] / 2**20:.1f} MiB in {upload['artifact_upload_s']:.2f} s = {upload['MiB_per_s']:.1f} MiB/s")
    print(f"  cached re-run    {cached_bytes} bytes of the artifact sent")
    print(f"  goals            {figures['goals']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if all(figures["goals"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
