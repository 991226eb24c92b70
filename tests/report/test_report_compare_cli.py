"""history + compare + bench --rounds through the CLI, on real runs of the onnx wheel's light_* models."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from reporthelp import QUICK, edgekit_cli, light_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_deploys(tmp_path_factory):
    """Two real deploys (a small and a 10x heavier CNN) recorded in one history."""
    tmp = tmp_path_factory.mktemp("compare")
    h = tmp / "h.sqlite"
    outs = []
    for name in ("shufflenet", "resnet50"):
        out = tmp / name
        r = edgekit_cli("deploy", str(light_model(name)), "--profile", "x86-cpu", "--runtime", "onnxruntime", "--no-simplify",
                "--out", str(out), "--history", str(h), "-q", *QUICK)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    return h, outs


def test_history_lists_both_deploys(two_deploys, cli):
    h, _ = two_deploys
    r = cli("history", "--history", str(h), "--json")
    assert r.returncode == 0, r.stderr
    runs = json.loads(r.stdout)
    assert [x["kind"] for x in runs] == ["deploy", "deploy"]
    assert runs[0]["model"].endswith("light_shufflenet.onnx") and runs[1]["model"].endswith("light_resnet50.onnx")
    assert len(runs[0]["samples_ms"]) == runs[0]["runs"] >= 15
    assert runs[0]["report_path"].endswith("report.html")


def test_compare_by_history_id_gives_slower_and_gate_exit_code(two_deploys, cli):
    h, _ = two_deploys
    r = cli("compare", "1", "2", "--history", str(h))
    assert r.returncode == 0, r.stderr
    assert "verdict: B is slower" in r.stdout
    ratio = float(re.search(r"ratio of medians ([0-9.]+)", r.stdout).group(1))
    assert ratio > 1.5
    gate = cli("compare", "1", "2", "--history", str(h), "--fail-if-slower", "5%")
    assert gate.returncode == 3 and "over the --fail-if-slower 5.0% gate" in gate.stderr and "Traceback" not in gate.stderr
    back = cli("compare", "2", "1", "--history", str(h), "--fail-if-slower", "5%", "--json")
    assert back.returncode == 0, back.stderr
    res = json.loads(back.stdout)
    assert res["verdict"] == "faster" and res["regression"] is False and res["hi"] < 1.0


def test_compare_report_paths_same_run_is_no_difference(two_deploys, cli):
    _, outs = two_deploys
    r = cli("compare", str(outs[0] / "report.json"), str(outs[0]), "--fail-if-slower", "5%", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["verdict"] == "no detectable difference" and res["ratio"] == 1.0 and res["environment_differences"] == {}


def test_compare_lists_environment_differences(two_deploys, cli, tmp_path):
    _, outs = two_deploys
    doc = json.loads((outs[0] / "report.json").read_text())
    doc["benchmark"]["runtime"]["version"] = "0.0.1-other"
    (tmp_path / "other.json").write_text(json.dumps(doc))
    r = cli("compare", str(outs[0] / "report.json"), str(tmp_path / "other.json"))
    assert r.returncode == 0, r.stderr
    assert re.search(r"runtime_version: \S+ → 0.0.1-other", r.stdout)


def test_compare_bad_references_are_clear_errors(two_deploys, cli, tmp_path):
    h, _ = two_deploys
    r = cli("compare", "1", "99", "--history", str(h))
    assert r.returncode != 0 and "no run #99" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "x.json").write_text('{"hello": 1}')
    r = cli("compare", "1", str(tmp_path / "x.json"), "--history", str(h))
    assert r.returncode != 0 and "not an edgekit report" in r.stderr and "Traceback" not in r.stderr
    r = cli("compare", "1", "2", "--history", str(h), "--fail-if-slower", "fast")
    assert r.returncode == 2 and "--fail-if-slower 'fast'" in r.stderr


def test_bench_rounds_interleaves_and_reports_pairs(cli, tmp_path):
    a, b = light_model("shufflenet"), light_model("squeezenet")
    h = tmp_path / "h.sqlite"
    r = cli("bench", str(a), str(b), "--profile", "x86-cpu", "--rounds", "2", "--cooldown", "0.1", "--out", str(tmp_path / "r.json"),
            "--history", str(h), *QUICK)
    assert r.returncode == 0, r.stderr
    order = re.findall(r"round (\d)/2: (\S+)", r.stderr)
    assert order == [("1", a.name), ("1", b.name), ("2", a.name), ("2", b.name)]
    assert r.stderr.count("cooldown 0.1 s") == 1  # between rounds, not after the last
    # 2 rounds give an interval but never a verdict: the output says why instead of a bare "no detectable difference"
    assert "no verdict from 2 round(s): a verdict needs --rounds 3 or more" in " ".join(r.stdout.split()), r.stdout
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [len(x["round_medians_ms"]) for x in doc["artifacts"]] == [2, 2]
    (pair,) = doc["pairs"]
    assert pair["base"] == a.name and pair["other"] == b.name and pair["lo"] <= pair["ratio"] <= pair["hi"]
    per_round = [m2 / m1 for m1, m2 in zip(doc["artifacts"][0]["round_medians_ms"], doc["artifacts"][1]["round_medians_ms"])]
    assert pair["per_round"] == pytest.approx(per_round) and pair["ratio"] == pytest.approx(sum(per_round) / 2)  # median of 2
    html = (tmp_path / "r.html").read_text()
    assert 'data-chart="rounds"' in html and "Interleaved rounds (2)" in html
    hist = json.loads(cli("history", "--history", str(h), "--json").stdout)
    assert len(hist) == 2 and hist[0]["session"] == hist[1]["session"] and hist[0]["round_medians"] == doc["artifacts"][0]["round_medians_ms"]
    assert hist[0]["runs"] == sum(len(x["timing"]["samples_ms"]) for x in doc["results"][0])
    merged = [t for x in doc["results"][0] for t in x["timing"]["samples_ms"]]  # the history row: every round's samples
    assert hist[0]["median_ms"] == pytest.approx(float(np.median(merged))) and hist[0]["p90_ms"] == pytest.approx(float(np.percentile(merged, 90)))
