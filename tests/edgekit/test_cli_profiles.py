"""`edgekit profiles list|show`: tables, resolved YAML, exact JSON dumps, and clean errors (no tracebacks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgekit.cli.main import main
from edgekit.core.profiles import DeviceProfile, bundled_names, load_profile, profile_as_dict


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_table_has_a_row_per_bundled_profile(capsys):
    code, out, err = run(capsys, "profiles", "list")
    assert code == 0 and err == ""
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert sorted(rows) == bundled_names()
    x86 = [c.strip() for c in rows["x86-cpu"].split("│")[1:-1]]
    assert x86 == ["x86-cpu", "x86_64", "2", "2", "-", "openvino, onnxruntime, tflite", "fp32, fp16, int8", "rapl"]
    nano = [c.strip() for c in rows["jetson-nano"].split("│")[1:-1]]
    assert nano[4] == "gpu fp32/fp16 via tensorrt"  # the accelerator column shows the GPU without INT8
    assert "\x1b[" not in out  # captured output is not a terminal: no colour codes


def test_list_json_is_every_resolved_profile(capsys):
    code, out, _ = run(capsys, "profiles", "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert [d["name"] for d in data] == bundled_names()
    for d in data:
        assert DeviceProfile.model_validate(d).name == d["name"]
        assert d == profile_as_dict(load_profile(d["name"]))


@pytest.mark.parametrize("name", ["jetson-nano", "jetson-orin-nano-7w", "x86-cpu"])
def test_show_json_is_exactly_the_resolved_dump(capsys, name):
    code, out, _ = run(capsys, "profiles", "show", name, "--json")
    assert code == 0
    assert json.loads(out) == load_profile(name).model_dump(mode="json")


def test_show_user_file_prints_resolved_yaml(capsys, tmp_path):
    mine = tmp_path / "lab-pi.yaml"
    mine.write_text("name: lab-pi\nextends: raspberry-pi-5\nmemory_mb: 4096\nconnection: {user: pi}\n")
    code, out, _ = run(capsys, "profiles", "show", str(mine))
    assert code == 0
    header = [ln for ln in out.splitlines() if ln.startswith("#")]
    assert header[0] == f"# lab-pi: resolved from {mine}"
    assert "extends" in header[1] and header[1].endswith("raspberry-pi-5.yaml")
    shown = yaml.safe_load(out)
    assert shown["memory_mb"] == 4096 and shown["connection"]["user"] == "pi"
    assert shown["cpu"]["features"] == ["neon", "fp16", "dotprod"]  # inherited from raspberry-pi-5
    expected = load_profile(mine).model_dump(mode="json", exclude_none=True, exclude={"source_file", "source_files"})
    assert shown == expected


def test_show_unknown_name_errors_with_suggestion_and_no_traceback(capsys):
    code, out, err = run(capsys, "profiles", "show", "jetsn-nano")
    assert code == 1 and out == ""
    assert "unknown device profile 'jetsn-nano'" in err
    assert "did you mean jetson-nano" in err
    assert "Traceback" not in err


def test_show_invalid_user_file_lists_file_field_problem(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nextends: x86-cpu\nthreads: many\ncpu: {featurs: [avx2]}\n")
    code, out, err = run(capsys, "profiles", "show", str(bad), "--json")
    assert code == 1 and out == ""
    assert f"{bad}: threads: Input should be a valid integer, got str 'many' (line 3)" in err
    assert f"{bad}: cpu.featurs: unknown field; did you mean features? (line 4)" in err
    assert "Traceback" not in err


def test_show_needs_a_name(capsys):
    code, _, err = run(capsys, "profiles", "show")
    assert code == 2 and "Missing argument 'NAME|PATH'" in err


def test_installed_entry_point_runs_without_traceback(tmp_path):
    exe = shutil.which("edgekit") or pytest.skip("edgekit console script not on PATH")
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("EDGEKIT_DEBUG", None)
    ok = subprocess.run([exe, "profiles", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "jetson-orin-nano-7w" in ok.stdout and "\x1b[" not in ok.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    bad = subprocess.run([exe, "profiles", "show", str(broken)], capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    assert f"{broken}: malformed YAML at line 2" in bad.stderr
    assert "Traceback" not in bad.stderr
    # the module form works too (python -m edgekit.cli.main)
    mod = subprocess.run([sys.executable, "-m", "edgekit.cli.main", "profiles", "show", "x86-cpu", "--json"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert mod.returncode == 0 and json.loads(mod.stdout)["cpu"]["features"] == ["sse4_2", "avx", "avx2", "fma", "f16c"]
    assert Path(json.loads(mod.stdout)["source_file"]).name == "x86-cpu.yaml"
