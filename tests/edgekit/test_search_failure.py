"""A variant search that finds nothing within the budget keeps what it measured: a failed report.json/report.md in
--out with every variant row, and the error names the closest miss and the --max-drop that would accept it."""

from __future__ import annotations

import json
import os

import onnx

from edgekit.quality.variant_search import Variant, closest_miss

SHUFFLENET = os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/light_shufflenet.onnx")


def test_a_search_without_a_variant_keeps_its_rows_in_out_and_the_earlier_run(cli, tmp_path):
    """A user model without held-out data cannot be judged under --max-drop: the INT8 row fails, once (its accuracy
    search starts from the same failed build and is not run again), and the rows land in --out."""
    out = tmp_path / "out"
    args = ("deploy", SHUFFLENET, "--profile", "x86-cpu", "--precision", "int8", "--runtime", "onnxruntime", "--max-drop", "0",
            "--train-budget", "off", "--out", str(out))
    first = cli(*args)
    assert first.returncode == 1 and "Traceback" not in first.stderr
    assert "no variant of" in first.stderr and "meets the budget on x86-cpu" in first.stderr
    assert first.stderr.count("variant onnxruntime/int8 ptq: building") == 1
    assert "kept the 1 variant row(s) of the search in" in first.stderr and ".previous" not in first.stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["status"] == "failed" and doc["profile"] == "x86-cpu" and doc["search"]["max_drop"] == 0.0
    (row,) = doc["variants"]
    assert row["runtime"] == "onnxruntime" and row["precision"] == "int8" and row["status"] == "failed"
    assert "held-out evaluation data" in row["reason"] and "was not run" in row["reason"]
    md = (out / "report.md").read_text()
    assert "no variant met the budget" in md and "| onnxruntime/int8 ptq | failed |" in md
    second = cli(*args)
    assert second.returncode == 1 and f"(the run it replaced is in {out}/.previous/)" in second.stderr
    assert json.loads((out / ".previous" / "report.json").read_text())["created"] == doc["created"]


def test_closest_miss_names_the_best_scored_variant_and_the_budget_that_accepts_it():
    rows = [
        Variant(runtime="openvino", precision="fp32", method="reference", status="meets budget", score=1.0, median_ms=15.0),
        Variant(runtime="openvino", precision="int8", method="ptq", status="violates budget", score=0.9453, median_ms=8.6),
        Variant(runtime="openvino", precision="int8", method="qat", status="violates budget", score=0.9601, median_ms=8.9),
        Variant(runtime="onnxruntime", precision="int8", method="ptq", status="failed", score=0.99, median_ms=None),  # never timed
    ]
    near = closest_miss(rows, 0.01)
    assert near.startswith("openvino/int8 qat scored 0.9601 (drop 3.99%, budget 1.00%) at 8.90 ms")
    assert near.endswith("--max-drop 4% would accept it")
    assert closest_miss(rows[:1], 0.01) is None  # the FP32 reference is what the search compares against, not a candidate
    rows[2].score = 0.95
    assert "--max-drop 5% would accept it" in closest_miss(rows, 0.01) and "0.9500" in closest_miss(rows, 0.01)


def test_the_variant_table_shows_what_training_cost():
    from edgekit.report.text import rows_of_variants

    qat = Variant(runtime="openvino", precision="int8", method="qat", status="violates budget", score=0.95, median_ms=8.9, train_s=601.4,
                  reason="text agreement 0.9500 < 0.99")
    ptq = Variant(runtime="openvino", precision="int8", method="ptq", status="violates budget", score=0.94, median_ms=8.6, reason="x")
    (q, p) = rows_of_variants([qat.model_dump(mode="json"), ptq.model_dump(mode="json")])
    assert q[-1] == "trained 601 s; text agreement 0.9500 < 0.99" and p[-1] == "x"
