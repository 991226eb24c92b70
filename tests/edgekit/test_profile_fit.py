"""x86-cpu is generic; variants extend it (AVX2-only, AVX-512 VNNI); doctor says which one fits a CPU's flags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli.doctor import profile_fit
from edgekit.core.profiles import load_profile

FIX = Path(__file__).resolve().parents[1] / "fixtures"
BASE = ["fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "f16c", "fma", "avx2", "bmi2"]


def test_variants_extend_the_generic_profile():
    base = load_profile("x86-cpu")
    assert not base.has_feature("vnni") and not base.has_feature("avx512")  # generic: claims only the baseline
    vnni = load_profile("x86-cpu-avx512-vnni")
    avx2 = load_profile("x86-cpu-avx2")
    for v in (vnni, avx2):
        assert v.extends == "x86-cpu" and v.source_files[-1] == base.source_file
        assert v.runtimes == base.runtimes and v.energy.source == base.energy.source  # inherited
    assert vnni.has_feature("avx512_vnni") and vnni.has_feature("avx512f")
    assert not avx2.has_feature("vnni")


@pytest.mark.parametrize("flags, want", [
    (BASE, "x86-cpu-avx2"),                                                      # Zen 3 class: AVX2 only
    (BASE + ["avx512f", "avx512bw", "avx512_vnni"], "x86-cpu-avx512-vnni"),      # Cascade Lake class
    (BASE + ["avx512f", "avx512dq"], "x86-cpu-avx2"),                             # AVX-512 without VNNI: not the VNNI profile
])
def test_profile_fit_by_flags(flags, want):
    assert profile_fit(flags, "x86_64")["profile"] == want


def test_profile_fit_real_cpuinfo_line():
    line = (FIX / "cpuinfo_flags_amd_epyc_avx512_vnni_bf16_generated_here.txt").read_text()
    flags = line.split(":", 1)[1].split()
    fit = profile_fit(flags, "x86_64")
    assert fit["profile"] == "x86-cpu-avx512-vnni"
    assert "avx512_bf16" in fit["reason"]  # what this CPU has beyond every bundled profile is said


def test_profile_fit_none_for_old_cpu_and_other_arch():
    fit = profile_fit(["sse4_2", "avx"], "x86_64")
    assert fit["profile"] is None and "avx2" in fit["reason"]
    assert profile_fit(["neon", "asimddp"], "aarch64") is None


def test_doctor_names_the_profile_for_this_machine(cli):
    flags = []
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            break
    r = cli("doctor", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    want = profile_fit(flags, rep["device"]["arch"])
    assert rep.get("profile_fit") == want
    r = cli("doctor")
    if want and want["profile"]:
        assert f"--profile {want['profile']}" in r.stdout.replace("\n", " ")
