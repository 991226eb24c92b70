"""Bad input through the real CLI: one clear message naming what/where and what to do, non-zero exit,
no traceback, and nothing half-written."""

from __future__ import annotations

import pytest


def _assert_clean_error(proc, *needles):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: "), proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


def test_missing_model_file(cli, tmp_path):
    p = cli("deploy", str(tmp_path / "absent.onnx"), "--profile", "x86-cpu", "--out", str(tmp_path / "out"))
    _assert_clean_error(p, "absent.onnx", "no such file")
    assert not (tmp_path / "out" / "report.json").exists()


def test_file_that_is_not_a_model(cli, tmp_path):
    f = tmp_path / "photo.jpg"
    f.write_bytes(b"\xff\xd8\xff\xe0 not a model")
    _assert_clean_error(cli("deploy", str(f), "--profile", "x86-cpu"), "photo.jpg", "not a model file")


def test_text_renamed_to_onnx(cli, tmp_path):
    f = tmp_path / "model.onnx"
    f.write_text("this is not protobuf")
    _assert_clean_error(cli("plan", str(f), "--profile", "x86-cpu"), "model.onnx", "re-export")


def test_truncated_onnx(cli, tmp_path, ppocr_det_path):
    f = tmp_path / "det.onnx"
    f.write_bytes(ppocr_det_path.read_bytes()[:100_000])
    _assert_clean_error(cli("deploy", str(f), "--profile", "x86-cpu", "--out", str(tmp_path / "o")), "det.onnx")
    assert not (tmp_path / "o" / "report.json").exists()


def test_unknown_profile_suggests(cli, ppocr_det_path):
    _assert_clean_error(cli("plan", str(ppocr_det_path), "--profile", "jetsn-nano"), "jetsn-nano", "jetson-nano")


def test_malformed_profile_yaml(cli, tmp_path, ppocr_det_path):
    y = tmp_path / "board.yaml"
    y.write_text("name: board\ncpu: {model: x, cores: 4\n")
    _assert_clean_error(cli("plan", str(ppocr_det_path), "--profile", str(y)), "board.yaml", "line")


def test_profile_with_wrong_field(cli, tmp_path, ppocr_det_path):
    y = tmp_path / "board.yaml"
    y.write_text("extends: x86-cpu\nname: board\nthreads: many\n")
    _assert_clean_error(cli("plan", str(ppocr_det_path), "--profile", str(y)), "board.yaml", "threads")


def test_format_the_profile_cannot_run(cli, tmp_path):
    eng = tmp_path / "yolo.engine"
    eng.write_bytes(b"\x00" * 128)
    _assert_clean_error(cli("deploy", str(eng), "--profile", "x86-cpu"), "tensorrt")


def test_device_profile_without_host(cli, ppocr_det_path):
    _assert_clean_error(cli("deploy", str(ppocr_det_path), "--profile", "raspberry-pi-5", "--no-simplify"), "--host")


def test_unwritable_out(cli, tmp_path, ppocr_det_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _assert_clean_error(cli("deploy", str(ppocr_det_path), "--profile", "x86-cpu", "--out", str(blocker / "out")), "not writable", str(blocker))


def test_missing_optional_dependency(cli, tmp_path, ppocr_rec_path):
    """Block the openvino package as if it were not installed: the message names the extra to install."""
    ov = pytest.importorskip("openvino")
    xml = tmp_path / "rec.xml"
    ov.save_model(ov.convert_model(str(ppocr_rec_path)), str(xml))
    block = tmp_path / "block"
    block.mkdir()
    (block / "openvino.py").write_text("raise ImportError('blocked for test', name='openvino')\n")
    (block / "sitecustomize.py").write_text(
        "import sys\nclass _B:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'openvino' or name.startswith('openvino.'):\n            raise ModuleNotFoundError(name=name)\n        return None\n"
        "sys.meta_path.insert(0, _B())\n"
    )
    import os

    p = cli("bench", str(xml), "--profile", "x86-cpu", "--min-runs", "1", "--min-seconds", "0", env={"PYTHONPATH": str(block) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    _assert_clean_error(p, "pip install 'edgekit[openvino]'")


def test_bad_shape_option(cli, ppocr_det_path):
    _assert_clean_error(cli("deploy", str(ppocr_det_path), "--profile", "x86-cpu", "--shape", "x=1x3xabc"), "--shape")


def test_symbolic_dims_need_a_shape(cli, ppocr_det_path):
    _assert_clean_error(cli("bench", str(ppocr_det_path), "--profile", "x86-cpu"), "symbolic", "--shape x=")


@pytest.mark.parametrize("argv", [
    ("plan", "zoo:ppocr-det"),
    ("deploy", "zoo:ppocr-det", "--no-bench"),
    ("bench", "model.onnx"),
    ("compress", "zoo:ppocr-rec", "--method", "lowrank", "--energy", "0.9", "--out", "lr"),
    ("setup", "--host", "pi@board"),
])
def test_forgotten_profile_is_named_by_click(cli, tmp_path, argv):
    """--profile is required: forgetting it says so before any work (it used to run with profile None and fail with
    "unknown device profile 'None'" under Click >= 8.3, where an explicit default=None counts as a value)."""
    p = cli(*argv, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert "Missing option '--profile'" in p.stderr, p.stderr
    assert "None" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert list(tmp_path.iterdir()) == []


def test_percent_option_without_percent_sign_is_refused_with_the_fix(cli, tmp_path, ppocr_det_path):
    """'--fail-if-slower 5' was read as 500 %: a CI gate that can never fail, exit 0. '--max-drop 1' was refused as
    'must be between 0 and 100%'. Both now say what the number meant and what to write."""
    gate = cli("compare", "1", "2", "--history", str(tmp_path / "h.sqlite"), "--fail-if-slower", "5")
    _assert_clean_error(gate, "--fail-if-slower '5'", "500%", "write 5%")
    drop = cli("deploy", str(ppocr_det_path), "--profile", "x86-cpu", "--max-drop", "1", "--no-bench", "--out", str(tmp_path / "o"))
    _assert_clean_error(drop, "--max-drop '1'", "write 1%")
    assert not (tmp_path / "o").exists()
    ok = cli("plan", str(ppocr_det_path), "--profile", "x86-cpu", "--precision", "int8", "--max-drop", "0.01", "--json")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("command", ["deploy", "plan", "bench", "compare", "compress", "distill", "history", "sweep"])
def test_help_shows_no_escaped_percent(cli, command):
    """Click does not %-format help text: a '%%' written for it is shown literally ("(default 1%%)")."""
    p = cli(command, "--help")
    assert p.returncode == 0, p.stderr
    assert "%%" not in p.stdout, [line for line in p.stdout.splitlines() if "%%" in line]
