"""edgekit on-device harness: load a model with its runtime, time it, measure memory/energy/thermal, print JSON.

Usage:
    python3 harness.pyz SPEC.json      (or `-` to read the spec from stdin)  -> one JSON BenchmarkResult on stdout
    python3 harness.pyz --probe [WORKDIR]                                    -> one JSON probe document on stdout
    (from a source tree: python3 -m edgekit.runners.harness ...)

Progress goes to stderr as `EDGEKIT-PROGRESS {json}` lines; a failure as one `EDGEKIT-ERROR {json}` line
(kind, message, hint). Exit codes: 0 ok, 2 bad spec/inputs, 3 runtime missing, 4 model load failed,
130 interrupted, 1 other (schema.py).
"""

import json
import os
import sys

from .errors import HarnessError, Interrupted, SpecError
from .measure import run_benchmark
from .probe import probe
from .schema import ERROR_PREFIX, EXIT_INTERRUPTED, EXIT_OK, EXIT_OTHER
from .spec import validate_spec


def _emit_error(err):
    sys.stderr.write(ERROR_PREFIX + json.dumps(err.to_dict()) + "\n")
    sys.stderr.flush()


def _read_spec(arg):
    try:
        if arg == "-":
            text = sys.stdin.read()
        else:
            with open(arg, "r") as fh:
                text = fh.read()
    except (OSError, IOError) as exc:
        raise SpecError("cannot read spec %s: %s" % (arg, exc))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SpecError("spec %s is not valid JSON: %s" % (arg, exc))
    return validate_spec(doc)


def _on_signal(signum, _frame):
    raise Interrupted("stopped by signal %d" % signum)


def main(argv=None):
    """CLI entry; returns the exit code. stdout carries exactly one JSON document."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import signal
    for name in ("SIGTERM", "SIGHUP"):  # unwind through `finally` so sensor children are stopped
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), _on_signal)
            except (ValueError, OSError):  # not the main thread (in-process use)
                pass
    # Runtimes may print to fd 1 (C++ logging): send fd 1 to stderr while working, restore it for our JSON.
    saved_fd = None
    try:
        sys.stdout.flush()
        saved_fd = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):
        saved_fd = None
    code = EXIT_OK
    doc = None
    try:
        if argv and argv[0] in ("-h", "--help"):
            sys.stderr.write(__doc__)
        elif argv and argv[0] == "--probe":
            doc = probe(argv[1] if len(argv) > 1 else None)
        else:
            if len(argv) != 1:
                raise SpecError("usage: harness.pyz SPEC.json | - | --probe [WORKDIR]")
            doc = run_benchmark(_read_spec(argv[0]))
    except HarnessError as err:
        _emit_error(err)
        code = err.exit_code
    except KeyboardInterrupt:
        _emit_error(Interrupted("interrupted (Ctrl-C)"))
        code = EXIT_INTERRUPTED
    except Exception as exc:  # last resort: still one parseable error line, plus the traceback for debugging
        import traceback
        traceback.print_exc()
        _emit_error(HarnessError("%s: %s" % (type(exc).__name__, exc), hint="this is a harness bug; please report it"))
        code = EXIT_OTHER
    finally:
        if saved_fd is not None:
            try:
                sys.stdout.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved_fd, 1)
            os.close(saved_fd)
    if doc is not None:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
