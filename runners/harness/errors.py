"""Harness failures: each has a kind, a message, a hint and an exit code (schema.py) that the host maps to a typed error."""

from .schema import EXIT_INTERRUPTED, EXIT_MODEL_LOAD, EXIT_OTHER, EXIT_RUNTIME_MISSING, EXIT_SPEC


class HarnessError(Exception):
    """A failure the host turns into a typed error: kind, message, hint and exit code."""

    exit_code = EXIT_OTHER
    kind = "error"

    def __init__(self, message, hint=None):
        Exception.__init__(self, message)
        self.message = message
        self.hint = hint

    def to_dict(self):
        return {"kind": self.kind, "message": self.message, "hint": self.hint, "exit_code": self.exit_code}


class SpecError(HarnessError):
    """The spec (or the inputs it names) is malformed or does not match the model."""

    exit_code = EXIT_SPEC
    kind = "spec"


class RuntimeMissing(HarnessError):
    """The requested runtime (or numpy) cannot be imported on this device."""

    exit_code = EXIT_RUNTIME_MISSING
    kind = "runtime_missing"


class ModelLoadFailed(HarnessError):
    """The model file is missing or the runtime refused to load it."""

    exit_code = EXIT_MODEL_LOAD
    kind = "model_load"


class Interrupted(HarnessError):
    """Ctrl-C, SIGTERM or SIGHUP (e.g. the SSH session dropped) stopped the run."""

    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"


class InferenceFailed(HarnessError):
    """The runtime loaded the model but an inference call failed."""

    exit_code = EXIT_OTHER
    kind = "inference"
