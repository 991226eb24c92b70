"""Every command-line option that an error hint or message names exists on some edgekit command."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[2]
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]+)")
# options of other tools that edgekit's messages quote on purpose (pip, ssh-keygen, trtexec, benchmark_app ...)
FOREIGN = {"--no-deps", "--upgrade", "--only-binary", "--platform", "--python-version", "--index-url", "--extra-index-url",
           "--no-cache-dir", "--force-reinstall", "--onnx", "--saveEngine", "--loadEngine", "--fp16", "--int8", "--shapes", "--help",
           "--probe",  # --probe: the device harness's own flag (python3 harness.pyz --probe)
           "--head"}  # `ray start --head`, quoted by the sweep's "cannot reach the Ray cluster" hint


def _all_cli_options():
    from edgekit.cli.main import cli

    opts = set()

    def walk(cmd):
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name))
        for p in cmd.params:
            opts.update(o for o in [*p.opts, *p.secondary_opts] if o.startswith("--"))

    walk(cli)
    return opts


def _strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        yield "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    elif isinstance(node, (ast.BinOp, ast.IfExp, ast.BoolOp)):
        for child in ast.iter_child_nodes(node):
            yield from _strings(child)


def _named_in_messages():
    """(file:line, option) for options quoted in hint=... or in the message of an EdgekitError-like raise."""
    found = []
    for py in [*REPO.glob("edgekit/**/*.py"), *REPO.glob("converters/**/*.py"), *REPO.glob("runners/**/*.py")]:
        tree = ast.parse(py.read_text(), str(py))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            texts = [s for kw in node.keywords if kw.arg in ("hint", "message") for s in _strings(kw.value)]
            if isinstance(node.func, ast.Name) and node.func.id.endswith("Error") or isinstance(node.func, ast.Attribute) and node.func.attr == "note":
                texts += [s for a in node.args for s in _strings(a)]
            for t in texts:
                for opt in OPTION.findall(t):
                    found.append((f"{py.relative_to(REPO)}:{node.lineno}", opt))
    return found


def test_every_option_named_in_a_hint_exists():
    named = _named_in_messages()
    assert len(named) > 20, "the scan finds the options hints name"
    known = _all_cli_options() | FOREIGN
    missing = sorted({f"{where}: {opt}" for where, opt in named if opt not in known})
    assert not missing, "hints name options no command has:\n" + "\n".join(missing)
