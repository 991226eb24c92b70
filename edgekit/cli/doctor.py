"""`edgekit doctor`: what can run here (or on --host), with versions, and what to install for the rest."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import click

from edgekit.cli.common import console, json_option, print_json, ssh_options



def _local_python_packages() -> List[Dict[str, Any]]:
    import importlib.util
    from importlib import metadata

    rows = []
    for module, dist, extra in (
        ("torch", "torch", "torch"),
        ("onnxscript", "onnxscript", "torch"),
        ("onnxsim", "onnxsim", "simplify"),
        ("nncf", "nncf", "openvino"),
        ("paramiko", "paramiko", "ssh"),
        ("transformers", "transformers", "zoo"),
        ("rapidocr_onnxruntime", "rapidocr-onnxruntime", "zoo"),
        ("torch_pruning", "torch-pruning", "prune"),
    ):
        ok = importlib.util.find_spec(module) is not None
        try:
            version = metadata.version(dist) if ok else None
        except metadata.PackageNotFoundError:
            version = None
        rows.append({"package": dist, "ok": ok, "version": version, "install": f"pip install 'edgekit[{extra}]'"})
    return rows


def _steps() -> List[Dict[str, Any]]:
    from edgekit.core.errors import EdgekitError
    from edgekit.core.registry import STEPS, get_step

    rows = []
    for name in STEPS:
        try:
            cls = get_step(name)
            ok, detail = cls.availability()
            summary = cls.summary
        except EdgekitError as exc:
            ok, detail, summary = False, exc.message, ""
        rows.append({"step": name, "ok": ok, "detail": detail, "summary": summary})
    return rows


def feature_mismatches(flags: Optional[List[str]], profile) -> List[str]:
    """ISA features (the ones the profile schema knows: VNNI, AVX-512, BF16, dotprod, ...) on which the host and the
    profile disagree; they decide INT8 schemes and OpenVINO's default bf16 math."""
    from edgekit.core.profiles import CPU_FEATURES, FEATURE_ALIASES

    if not flags:
        return []
    known = CPU_FEATURES.get(profile.cpu.isa, ())
    host = {FEATURE_ALIASES.get(f.lower(), f.lower()) for f in flags} & set(known)
    declared = set(profile.cpu.features) & set(known)
    out = []
    if host - declared:
        out.append(f"host CPU has {', '.join(sorted(host - declared))}, which profile '{profile.name}' does not list "
                   "(its INT8 defaults and figures assume a CPU without them)")
    if declared - host:
        out.append(f"profile '{profile.name}' lists {', '.join(sorted(declared - host))}, which the host CPU lacks")
    return out


def profile_fit(flags: Optional[List[str]], arch: Optional[str]) -> Optional[Dict[str, Any]]:
    """Which bundled x86-cpu profile (generic, or a variant that `extends:` it) describes this CPU: the one whose
    features the host all has, with the most features; a variant wins a tie with the generic profile."""
    from edgekit.core.profiles import CPU_FEATURES, FEATURE_ALIASES, load_bundled

    if not flags or arch not in ("x86_64", "amd64"):
        return None
    known = set(CPU_FEATURES["x86_64"])
    host = {FEATURE_ALIASES.get(f.lower(), f.lower()) for f in flags} & known
    family = [p for p in load_bundled() if p.name == "x86-cpu" or p.extends == "x86-cpu"]
    fits = [p for p in family if set(p.cpu.features) <= host]
    if not fits:
        base = next((p for p in family if p.name == "x86-cpu"), None)
        lacks = sorted(set(base.cpu.features) - host) if base else []
        return {"profile": None, "host_features": sorted(host), "reason": f"this CPU lacks {', '.join(lacks)}, which every x86-cpu profile assumes; write a profile of your own"}
    best = max(fits, key=lambda p: (len(p.cpu.features), p.extends is not None))
    extra = sorted(host - set(best.cpu.features))
    reason = f"this CPU has {', '.join(best.cpu.features)}"
    if extra:
        reason += f"; also {', '.join(extra)}, which no bundled x86 profile claims"
    return {"profile": best.name, "host_features": sorted(host), "reason": reason}


def _mismatches(probe: Dict[str, Any], profile) -> List[str]:
    out = []
    arch = probe.get("arch")
    if arch and arch != profile.cpu.isa and not (arch == "arm64" and profile.cpu.isa == "aarch64"):
        out.append(f"host arch is {arch} but profile '{profile.name}' describes {profile.cpu.isa}")
    cores = probe.get("cores")
    if probe.get("emulated"):
        # under qemu-user /proc/cpuinfo and the core count are the emulator host's: comparing them says nothing
        out.append(f"emulated ({probe.get('emulation') or 'qemu'}): CPU model, cores and ISA features seen here are the "
                   f"emulator host's ({probe.get('cpu_model') or 'unknown CPU'}), not the board's; not checked against the profile")
    else:
        if cores and cores != profile.cpu.cores:
            out.append(f"host has {cores} cores, profile says {profile.cpu.cores}")
        out += feature_mismatches(probe.get("cpu_flags"), profile)
    from edgekit.core import runtimes

    rts = probe.get("runtimes", {})
    for rt in profile.runtimes:
        rt_entry = runtimes.get(rt)
        if not rt_entry.usable_in_probe(rts):
            reasons = "; ".join(str((rts.get(k) or {}).get("reason")) for k in rt_entry.probe_keys if (rts.get(k) or {}).get("reason"))
            out.append(f"profile runtime '{rt}' is not usable on the host" + (f" ({reasons})" if reasons else ""))
    cuda = rts.get("cuda") or {}
    for acc in profile.accelerators:
        if acc.type == "gpu" and "tensorrt" in acc.runtimes and not cuda.get("available"):
            out.append(f"profile accelerator '{acc.name}' needs CUDA: {cuda.get('reason') or 'not found on the host'}")
    src = profile.energy.source
    if src != "none":
        e = (probe.get("energy") or {}).get(src) or {}
        if not e.get("readable", e.get("available")):
            out.append(f"profile energy source '{src}' is not readable: {e.get('reason') or 'not probed'}")
    if profile.throttle_command:
        tool = profile.throttle_command.split()[0]
        if probe.get("throttled_raw") is None and tool == "vcgencmd":
            out.append(f"profile throttle command '{profile.throttle_command}' gave no reading (is {tool} installed?)")
    return out


@click.command()
@ssh_options
@click.option("--profile", "-p", default=None, help="Check the host against this profile.")
@json_option
def doctor(host, ssh, profile, as_json):
    """Show which runtimes and converters are usable here, or on --host, with versions and install hints."""
    from edgekit.workflows.deploy import make_runner
    from edgekit.core.profiles import load_profile

    remote = host or ssh.get("serial")
    prof = load_profile(profile or ("android-arm64" if ssh.get("serial") else "x86-cpu")) if (profile or not host) else None
    if host and prof is None:
        prof = load_profile("x86-cpu").model_copy(update={"name": "(none)"})
    with make_runner(prof, host, ssh) as runner:
        probe = runner.probe()
    report: Dict[str, Any] = {"target": runner.target, "device": probe}
    if not remote:
        report["converters"] = _steps()
        report["python_packages"] = _local_python_packages()
    fit = profile_fit(probe.get("cpu_flags"), probe.get("arch"))
    if fit is not None:
        report["profile_fit"] = fit
    if profile:
        report["profile"] = prof.name
        report["profile_mismatches"] = _mismatches(probe, prof)
    if as_json:
        print_json(report)
        return
    _render(report)


def _render(report: Dict[str, Any]) -> None:
    from rich.markup import escape as esc  # paths like [/home/x] and hints like edgekit[litert] are not markup
    from rich.table import Table

    c = console()
    p = report["device"]
    c.print(f"[bold]{esc(str(report['target']))}[/bold]: " + esc(f"{p.get('hostname')} — {p.get('arch')}, {p.get('os')}, Python {p.get('python')}, {p.get('cores')} cores, {p.get('cpu_model') or ''}"
                                                                   + (" (emulated: the emulator host's CPU)" if p.get("emulated") else "")))
    if p.get("emulated"):
        c.print(f"[yellow]emulated:[/yellow] {esc(p.get('emulation') or '')} — timings from here are not representative")
    setup = (p.get("ssh") or {}).get("setup")
    if setup:
        pkgs = ", ".join(f"{k} {v}" for k, v in sorted((setup.get("installed") or {}).items()))
        c.print(f"edgekit setup venv: {esc(setup.get('venv_python') or '')} ({esc(pkgs)}; set up {esc(str(setup.get('at')))})")
    from edgekit.core.runtimes import install_hints

    hints = install_hints()
    t = Table(title="runtimes", title_justify="left")
    for col in ("runtime", "usable", "version / reason"):
        t.add_column(col)
    for name, info in sorted(p.get("runtimes", {}).items()):
        ok = bool(info.get("available"))
        detail = info.get("version") if ok else " — ".join(x for x in (info.get("reason"), hints.get(name)) if x)
        t.add_row(esc(name), "yes" if ok else "no", esc(str(detail or "")))
    c.print(t)
    energy = p.get("energy", {})
    if energy:
        e = Table(title="energy sources", title_justify="left")
        e.add_column("source")
        e.add_column("readable")
        e.add_column("detail")
        for name, info in energy.items():
            e.add_row(esc(name), "yes" if info.get("available") else "no", esc(str(info.get("detail") or info.get("reason") or "")))
        c.print(e)
    thermal = p.get("thermal_zones") or []
    c.print(esc(f"thermal zones: {', '.join(z if isinstance(z, str) else z.get('name', '?') for z in thermal) or 'none readable'}; governor: {p.get('governor') or 'unknown'}"))
    adb = p.get("adb")
    if adb:
        cmds = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in adb.get("commands", {}).items())
        bat = adb.get("battery", {})
        c.print(esc(f"adb {adb.get('serial')}: work dir {adb.get('workdir')}, Python {adb.get('python_version') or 'none'}; device commands: {cmds}"))
        c.print(f"battery power: {str(round(bat['power_w'], 3)) + ' W' if bat.get('available') else 'no (' + str(bat.get('reason')) + ')'}; "
                f"thermal: {', '.join(f'{k} {v:.1f} °C' for k, v in adb.get('thermal_c', {}).items()) or 'no zones'}")
    if "converters" in report:
        s = Table(title="conversion steps", title_justify="left")
        for col in ("step", "usable", "detail"):
            s.add_column(col)
        for row in report["converters"]:
            s.add_row(esc(row["step"]), "yes" if row["ok"] else "no", esc(str(row["detail"])))
        c.print(s)
        pk = Table(title="optional packages", title_justify="left")
        for col in ("package", "installed", "how to install"):
            pk.add_column(col)
        for row in report["python_packages"]:
            pk.add_row(esc(row["package"]), esc(row["version"] or "no"), "" if row["ok"] else esc(row["install"]))
        c.print(pk)
    fit = report.get("profile_fit")
    if fit:
        if fit["profile"]:
            c.print(f"profile for this CPU: [bold]{fit['profile']}[/bold] ({fit['reason']}); use --profile {fit['profile']}")
        else:
            c.print(f"[yellow]profile for this CPU:[/yellow] none of the bundled x86 profiles ({fit['reason']})")
    for m in report.get("profile_mismatches", []):
        c.print(f"[yellow]warning:[/yellow] {esc(str(m))}")
