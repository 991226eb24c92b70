"""Device profiles: bundled files validate and agree with captured device output; the loader's errors name file and field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgekit.core.errors import ProfileError
from edgekit.core.profiles import (
    DeviceProfile,
    bundled_dir,
    bundled_names,
    load_profile,
    profile_as_json,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ISSUE_PROFILES = ["jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "raspberry-pi-5", "android-arm64", "x86-cpu"]
# every problem line must look like `<file>: <field.path>: <problem>`
LINE_RE = re.compile(r"^(?P<file>[^:]+\.ya?ml): (?P<field>[A-Za-z_][\w.\[\]]*): (?P<problem>.+)$")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def error_of(name_or_path) -> str:
    with pytest.raises(ProfileError) as info:
        load_profile(name_or_path)
    return str(info.value)


def problem_lines(message: str):
    """The `file: field: problem` lines of a validation error (the hint line excluded)."""
    lines = [ln for ln in message.splitlines() if not ln.lstrip().startswith("hint:")]
    for ln in lines:
        assert LINE_RE.match(ln), f"not a `file: field: problem` line: {ln!r}"
    return [LINE_RE.match(ln).groupdict() for ln in lines]


MINIMAL = """\
name: my-board
os: Linux
cpu: {model: test cpu, cores: 4, isa: aarch64, features: [neon]}
memory_mb: 2048
runtimes: [onnxruntime]
precisions: [fp32]
threads: 2
"""


# ---------------------------------------------------------------- bundled profiles


def test_issue_profiles_are_bundled_and_all_validate():
    names = bundled_names()
    assert set(ISSUE_PROFILES) <= set(names)
    for name in names:
        p = load_profile(name)
        assert p.name == name, f"{name}.yaml says name: {p.name}"
        assert Path(p.source_file) == bundled_dir() / f"{name}.yaml"
        assert p.description, f"{name} has no description"
        assert p.threads <= p.cpu.cores


def test_bundled_files_cite_their_sources():
    for name in ISSUE_PROFILES:
        text = (bundled_dir() / f"{name}.yaml").read_text()
        assert "Sources:" in text, f"{name}.yaml has no source comments"


def test_every_accelerator_runtime_is_a_profile_runtime():
    for name in bundled_names():
        p = load_profile(name)
        for acc in p.accelerators:
            assert set(acc.runtimes) <= set(p.runtimes), name
            assert set(acc.precisions) <= set(p.precisions), name


def test_jetson_nano_gpu_has_no_int8_but_its_cpu_runtimes_do():
    p = load_profile("jetson-nano")
    (gpu,) = p.accelerators_for("tensorrt")
    assert gpu.compute_capability == "5.3"
    assert "int8" not in gpu.precisions and "fp16" in gpu.precisions
    assert not p.supports_precision("int8", "tensorrt")
    assert p.supports_precision("fp16", "tensorrt")
    assert p.supports_precision("int8", "onnxruntime")
    assert not p.supports_precision("fp32", "openvino"), "openvino is not a runtime on the Nano"
    assert p.runtimes[0] == "tensorrt"
    # FP16 is the default for the GPU path only; the A57 CPU has no FP16 arithmetic
    assert p.default_precision_for("tensorrt") == "fp16"
    assert p.default_precision_for("onnxruntime") == "fp32" and p.default_precision_for("tflite") == "fp32"
    assert p.software.python == "3.6"  # JetPack 4: the harness must keep Python 3.6 syntax
    assert not p.has_feature("dotprod") and not p.has_feature("fp16")  # Cortex-A57


def test_orin_nano_tensorrt_runs_int8_and_has_no_dla():
    p = load_profile("jetson-orin-nano")
    assert p.supports_precision("int8", "tensorrt")
    assert [a.type for a in p.accelerators] == ["gpu"]
    assert p.accelerators[0].compute_capability == "8.7"
    assert p.has_feature("dotprod") and not p.has_feature("i8mm")  # Cortex-A78AE is Armv8.2


def test_x86_cpu_has_avx2_but_no_vnni_or_avx512():
    p = load_profile("x86-cpu")
    assert p.arch == "x86_64"
    assert p.has_feature("avx2") and p.has_feature("fma") and p.has_feature("f16c")
    for feat in ("vnni", "avx512_vnni", "avx_vnni", "avx512", "avx512f"):
        assert not p.has_feature(feat), feat
    assert p.runtimes == ["openvino", "onnxruntime", "tflite"]
    assert p.default_precision == "fp32"
    assert p.connection.type == "local" and p.energy.source == "rapl"


def test_energy_sources_follow_the_hardware():
    expected = {
        "jetson-nano": "tegrastats",
        "jetson-orin-nano": "tegrastats",
        "raspberry-pi-4": "none",  # no current sensor on the Pi 4
        "raspberry-pi-5": "vcgencmd_pmic",
        "android-arm64": "android_battery",
        "x86-cpu": "rapl",
    }
    for name, source in expected.items():
        assert load_profile(name).energy.source == source, name
    assert load_profile("android-arm64").connection.type == "adb"
    assert load_profile("raspberry-pi-4").throttle_command == "vcgencmd get_throttled"


def _tegrastats(fixture: str):
    lines = [ln for ln in (FIXTURES / fixture).read_text().splitlines() if ln.strip()]
    assert lines
    return lines


@pytest.mark.parametrize(
    "profile, fixture, zone_of",
    [
        ("jetson-nano", "tegrastats_nano_jp4_lines.txt", lambda label: f"{label}-therm"),
        ("jetson-orin-nano", "tegrastats_orin_nano_jp6_lines.txt", lambda label: f"{label}-thermal"),
    ],
)
def test_jetson_profiles_match_captured_tegrastats(profile, fixture, zone_of):
    """Rail, RAM and thermal names in the profile agree with real tegrastats output of that board."""
    p = load_profile(profile)
    (rail,) = p.energy.rails
    for line in _tegrastats(fixture):
        assert re.search(rf"\b{rail} \d+(mW)?/\d+(mW)?", line), f"{rail} not in: {line}"
        ram_total = int(re.search(r"RAM \d+/(\d+)MB", line).group(1))
        assert 0.9 * p.memory_mb < ram_total <= p.memory_mb
        labels = set(re.findall(r"\b([A-Za-z][A-Za-z0-9]*)@[\d.]+C\b", line))
        # tegrastats prints each thermal zone by a short label; PMIC (a fixed 100 C) and the board
        # estimate 'thermal' are the Nano's non-sensor zones
        real = {lab for lab in labels if lab not in ("PMIC", "thermal")}
        assert real, line
        for label in real:
            assert zone_of(label) in p.thermal_zones, f"{label}@ in tegrastats but {zone_of(label)} not in {p.thermal_zones}"


def test_orin_nano_power_modes_and_the_7w_variant():
    base = load_profile("jetson-orin-nano")
    ids = {m.name: m.nvpmodel_id for m in base.power_modes}
    assert ids == {"15W": 0, "25W": 1, "MAXN_SUPER": 2, "7W": 3}
    assert base.power_mode == "15W"
    v = load_profile("jetson-orin-nano-7w")
    assert v.extends == "jetson-orin-nano"
    assert v.power_mode == "7W" and v.threads == 4
    assert v.threads == v.power_mode_named("7W").cpu_online
    # everything else inherited
    assert v.accelerators == base.accelerators and v.energy == base.energy and v.cpu == base.cpu
    assert v.source_files == [str(bundled_dir() / "jetson-orin-nano-7w.yaml"), str(bundled_dir() / "jetson-orin-nano.yaml")]


# ---------------------------------------------------------------- schema errors


def test_unknown_top_level_key_names_file_field_line_and_suggests(tmp_path):
    p = write(tmp_path, "typo.yaml", MINIMAL + "treads: 4\n")
    (line,) = problem_lines(error_of(p))
    assert line["file"] == str(p)
    assert line["field"] == "treads"
    assert "unknown field" in line["problem"] and "did you mean threads" in line["problem"]
    assert "(line 8)" in line["problem"]


def test_unknown_nested_key(tmp_path):
    p = write(tmp_path, "nested.yaml", MINIMAL.replace("features: [neon]", "features: [neon], turbo: true"))
    (line,) = problem_lines(error_of(p))
    assert line["field"] == "cpu.turbo" and "unknown field" in line["problem"]
    assert "(line 3)" in line["problem"]


def test_wrong_types_are_rejected_not_coerced(tmp_path):
    text = MINIMAL.replace("threads: 2", 'threads: "2"').replace("memory_mb: 2048", "memory_mb: lots")
    p = write(tmp_path, "types.yaml", text)
    lines = {ln["field"]: ln["problem"] for ln in problem_lines(error_of(p))}
    assert set(lines) == {"threads", "memory_mb"}
    assert "integer" in lines["threads"] and "'2'" in lines["threads"]
    assert "'lots'" in lines["memory_mb"]


def test_unquoted_version_number_gets_a_quoting_hint(tmp_path):
    p = write(tmp_path, "ver.yaml", MINIMAL + "software:\n  python: 3.10\n")
    (line,) = problem_lines(error_of(p))
    assert line["field"] == "software.python"
    assert "write it in quotes: '3.10'" in line["problem"]  # as written, not the float 3.1


def test_missing_field(tmp_path):
    p = write(tmp_path, "missing.yaml", MINIMAL.replace("os: Linux\n", ""))
    (line,) = problem_lines(error_of(p))
    assert line["field"] == "os" and "missing" in line["problem"]


def test_several_problems_one_line_each(tmp_path):
    text = MINIMAL.replace("runtimes: [onnxruntime]", "runtimes: [onnxruntime, tensorflow]").replace(
        "precisions: [fp32]", "precisions: [fp32, bf16]"
    )
    p = write(tmp_path, "many.yaml", text)
    lines = problem_lines(error_of(p))
    assert [ln["field"] for ln in lines] == ["runtimes[1]", "precisions[1]"]
    assert "'tensorflow'" in lines[0]["problem"] and "'bf16'" in lines[1]["problem"]


def test_cross_field_problems_point_at_the_field(tmp_path):
    text = MINIMAL.replace("threads: 2", "threads: 8") + (
        "default_precision: int8\n"
        "accelerators:\n"
        "  - {type: gpu, name: g, precisions: [fp32], runtimes: [tensorrt]}\n"
        "power_modes: [{name: 10W}]\n"
        "power_mode: 10w\n"
    )
    p = write(tmp_path, "cross.yaml", text)
    lines = {ln["field"]: ln["problem"] for ln in problem_lines(error_of(p))}
    assert set(lines) == {"default_precision", "threads", "accelerators[0].runtimes[0]", "power_mode"}
    assert "more than cpu.cores (4)" in lines["threads"]
    assert "'tensorrt' is not in runtimes" in lines["accelerators[0].runtimes[0]"]
    assert "did you mean 10W" in lines["power_mode"]
    assert "(line 10)" in lines["accelerators[0].runtimes[0]"]


def test_cpu_features_are_checked_and_aliases_normalised(tmp_path):
    bad = write(tmp_path, "feat.yaml", MINIMAL.replace("features: [neon]", "features: [neon, dot-prod]"))
    (line,) = problem_lines(error_of(bad))
    assert line["field"] == "cpu.features[1]" and "did you mean dotprod" in line["problem"]
    wrong_isa = write(tmp_path, "isa.yaml", MINIMAL.replace("features: [neon]", "features: [avx2]"))
    assert "'avx2' is an x86_64 feature, but cpu.isa is aarch64" in error_of(wrong_isa)
    ok = write(tmp_path, "alias.yaml", MINIMAL.replace("features: [neon]", "features: [asimd, asimddp, asimdhp]"))
    assert load_profile(ok).cpu.features == ["neon", "dotprod", "fp16"]


def test_fp32_is_required(tmp_path):
    p = write(tmp_path, "nofp32.yaml", MINIMAL.replace("precisions: [fp32]", "precisions: [int8]"))
    lines = {ln["field"]: ln["problem"] for ln in problem_lines(error_of(p))}
    assert "must include fp32" in lines["precisions"]


def test_malformed_yaml_gives_line_and_column(tmp_path):
    p = write(tmp_path, "bad.yaml", "name: x\ncpu: {model: a, cores: 4\nos: Linux\n")
    msg = error_of(p)
    assert msg.startswith(f"{p}: malformed YAML at line 3, column")


def test_duplicate_key_is_an_error_with_both_lines(tmp_path):
    p = write(tmp_path, "dup.yaml", MINIMAL + "threads: 4\n")
    msg = error_of(p)
    assert f"{p}: malformed YAML at line 8" in msg and "duplicate key 'threads' (first at line 7)" in msg


@pytest.mark.parametrize("text, what", [("", "an empty file"), ("- a\n- b\n", "a list")])
def test_non_mapping_file(tmp_path, text, what):
    p = write(tmp_path, "notmap.yaml", text)
    assert error_of(p).startswith(f"{p}: a profile must be a YAML mapping of fields, got {what}")


# ---------------------------------------------------------------- lookup


def test_unknown_name_suggests_the_closest():
    msg = error_of("jetsn-nano")
    assert msg.startswith("unknown device profile 'jetsn-nano'")
    assert "did you mean jetson-nano" in msg
    far = error_of("qqq")
    assert "did you mean" not in far and "bundled profiles: " in far


def test_missing_path_and_directory(tmp_path):
    assert "profile file not found" in error_of(tmp_path / "nope.yaml")
    assert "is a directory" in error_of(str(tmp_path) + "/")


def test_path_object_and_relative_path_work(tmp_path, monkeypatch):
    p = write(tmp_path, "mine.yaml", MINIMAL)
    assert load_profile(p).name == "my-board"
    monkeypatch.chdir(tmp_path)
    assert load_profile("mine.yaml").source_file == "mine.yaml"


# ---------------------------------------------------------------- extends


def test_user_file_extends_a_bundled_name_with_deep_merge(tmp_path):
    p = write(
        tmp_path,
        "nano-5w.yaml",
        "name: nano-5w\nextends: jetson-nano\nthreads: 2\npower_mode: 5W\ncpu: {max_freq_mhz: 918}\n"
        "runtimes: [tensorrt]\nconnection: {user: ubuntu}\n",
    )
    v = load_profile(p)
    base = load_profile("jetson-nano")
    assert v.name == "nano-5w" and v.description == ""  # name/description are never inherited
    assert v.threads == 2 and v.power_mode == "5W"
    assert v.cpu.max_freq_mhz == 918 and v.cpu.model == base.cpu.model and v.cpu.cores == 4  # dicts merge
    assert v.runtimes == ["tensorrt"]  # lists replace
    assert v.connection.user == "ubuntu" and v.connection.port == 22
    assert v.source_files == [str(p), str(bundled_dir() / "jetson-nano.yaml")]


def test_extends_relative_path_is_relative_to_the_child(tmp_path, monkeypatch):
    (tmp_path / "boards").mkdir()
    write(tmp_path / "boards", "base.yaml", MINIMAL)
    child = write(tmp_path / "boards", "child.yaml", "name: child\nextends: ./base.yaml\nthreads: 4\n")
    monkeypatch.chdir(tmp_path)  # the child's directory, not the cwd, resolves ./base.yaml
    grandchild = write(tmp_path, "gc.yaml", "name: gc\nextends: boards/child.yaml\nmemory_mb: 1024\n")
    g = load_profile(grandchild)
    assert (g.threads, g.memory_mb, g.cpu.cores) == (4, 1024, 4)
    assert len(g.source_files) == 3
    assert load_profile(child).memory_mb == 2048


def test_extends_cycle_is_detected(tmp_path):
    write(tmp_path, "a.yaml", "name: a\nextends: b.yaml\n")
    write(tmp_path, "b.yaml", "name: b\nextends: ./a.yaml\n")
    msg = error_of(tmp_path / "a.yaml")
    assert "extends: cycle" in msg and "a.yaml -> " in msg and "b.yaml -> " in msg
    selfref = write(tmp_path, "self.yaml", "name: s\nextends: self.yaml\n")
    assert "extends: cycle" in error_of(selfref)


def test_extends_errors(tmp_path):
    typo = write(tmp_path, "t.yaml", "name: t\nextends: jetson-nan\n")
    assert "did you mean jetson-nano" in error_of(typo)
    notstr = write(tmp_path, "n.yaml", "name: n\nextends: [jetson-nano]\n")
    assert error_of(notstr).startswith(f"{notstr}: extends: must be a profile name")
    noname = write(tmp_path, "nn.yaml", "extends: jetson-nano\nthreads: 2\n")
    (line,) = problem_lines(error_of(noname))
    assert line["field"] == "name" and "missing" in line["problem"]


def test_problem_in_an_inherited_value_says_where_it_came_from(tmp_path):
    base = write(tmp_path, "base.yaml", MINIMAL.replace("threads: 2", "threads: 4"))
    child = write(tmp_path, "small.yaml", "name: small\nextends: base.yaml\ncpu: {cores: 2}\n")
    (line,) = problem_lines(error_of(child))
    assert line["file"] == str(child) and line["field"] == "threads"
    assert f"inherited from {base}, line 7" in line["problem"]


def test_json_dump_loads_back_to_the_same_profile(tmp_path):
    for name in ("jetson-orin-nano-7w", "x86-cpu"):
        original = load_profile(name)
        dumped = write(tmp_path, f"{name}-dump.yaml", profile_as_json(original))  # JSON is YAML
        again = load_profile(dumped)
        assert again.model_dump(exclude={"source_file", "source_files"}) == original.model_dump(
            exclude={"source_file", "source_files"}
        )
        assert again.source_file == str(dumped)
        assert json.loads(profile_as_json(original))["name"] == name


def test_python_api_builds_profiles_without_yaml():
    p = DeviceProfile(
        name="api", os="Linux", cpu={"model": "m", "cores": 2, "isa": "x86_64", "features": ["AVX2", "avx512_vnni"]},
        memory_mb=1024, runtimes=("onnxruntime",), precisions=["fp32", "int8"], threads=2,
    )
    assert p.cpu.features == ["avx2", "vnni"] and p.has_feature("avx_vnni")
    with pytest.raises(ValueError, match="threads: 3 is more than cpu.cores"):
        DeviceProfile(**{**p.model_dump(), "threads": 3})
