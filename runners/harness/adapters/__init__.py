"""Runtime adapters: one module per runtime; the module's name is the runtime's name in the spec.

An adapter module defines SESSION (a Session subclass that opens a model file with that runtime), INSTALL_HINT
(what to install when the runtime is missing), import_runtime() (imports the runtime so load_ms measures session
creation only) and probe() (versions for `edgekit doctor`). Adding a runtime on the device side is one new file
here; nothing else in the harness names a runtime. Modules whose name starts with "_" are helpers, not runtimes.

A session has .input_names, .output_names, .input_details ([{name, shape, dtype}]), .run(feeds) -> list of arrays
in output order, .bind(feeds) -> zero-argument callable doing one bare inference (used by the timed loop),
.version, .providers, .options (what was actually configured), .warnings.
"""

import importlib
import os
import pkgutil
import re

from ..common import numpy
from ..errors import ModelLoadFailed, SpecError


def names():
    """The runtimes this harness has an adapter for (its adapter modules, found in the package or the zipapp)."""
    return sorted(n for _finder, n, _ispkg in pkgutil.iter_modules(__path__) if not n.startswith("_"))


def adapter(runtime):
    """The adapter module of `runtime`; SpecError naming the known runtimes if there is none."""
    known = names()
    if not re.match(r"^[a-z][a-z0-9_]*$", str(runtime)) or runtime not in known:
        raise SpecError("unknown runtime '%s'; expected one of %s" % (runtime, ", ".join(known)))
    return importlib.import_module(__name__ + "." + runtime)


_DTYPE_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "bool_": "bool"}


def norm_dtype(dt):
    """A numpy dtype name from numpy dtypes, ORT's 'tensor(float)', OpenVINO element types and strings."""
    np = numpy()
    s = str(dt)
    m = re.match(r"tensor\((\w+)\)", s)
    if m:
        s = m.group(1)
    s = _DTYPE_ALIASES.get(s, s)
    try:
        return np.dtype(s).name
    except TypeError:
        pass
    ov_map = {"f32": "float32", "f16": "float16", "f64": "float64", "i8": "int8", "u8": "uint8", "i16": "int16",
              "u16": "uint16", "i32": "int32", "u32": "uint32", "i64": "int64", "u64": "uint64", "boolean": "bool"}
    key = s.replace("<Type: '", "").replace("'>", "").strip().lower()
    for k, v in ov_map.items():
        if key == k or key.startswith(k + " ") or key.endswith("'" + k):
            return v
    for v in ov_map.values():
        if v in key:
            return v
    return s


class Session(object):
    """Base of the runtime adapters; subclasses fill the fields and implement run/bind."""

    runtime = "?"

    def __init__(self):
        self.input_names = []
        self.output_names = []
        self.input_details = []
        self.output_details = []
        self.version = "unknown"
        self.providers = []
        self.options = {}
        self.warnings = []

    def run(self, feeds):
        raise NotImplementedError

    def bind(self, feeds):
        """Return a callable doing one inference on these feeds with no per-call conversion."""
        return lambda: self.run(feeds)

    def close(self):
        pass


def module_version(module):
    """{available, version} of an importable module, or {available: false, error} (broken installs included)."""
    try:
        m = __import__(module)
    except Exception as exc:  # broken installs raise more than ImportError (e.g. numpy ABI errors)
        return {"available": False, "error": "%s: %s" % (type(exc).__name__, str(exc)[:300])}
    return {"available": True, "version": str(getattr(m, "__version__", None))}


def open_session(runtime, model_path, threads, options=None):
    """Open `model_path` with `runtime`; raises RuntimeMissing / ModelLoadFailed / SpecError on failure."""
    module = adapter(runtime)
    if not os.path.exists(model_path):
        raise ModelLoadFailed("model file not found: %s" % model_path,
                              hint="push the artifact to the device first (the runner's push step)")
    numpy()
    return module.SESSION(model_path, int(threads), dict(options or {}))
