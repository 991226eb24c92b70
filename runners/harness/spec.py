"""The run spec: validation against the wire schema (no pydantic on the device) and the input arrays it asks for."""

import json

from . import adapters, energy
from .common import numpy
from .errors import SpecError
from .reduce import parse as parse_reduction
from .schema import INPUT_FIELDS, REQUIRED_FIELDS, SPEC_FIELDS


def validate_spec(doc):
    """Check types and fill defaults; raise SpecError naming the field."""
    if not isinstance(doc, dict):
        raise SpecError("the spec must be a JSON object, got %s" % type(doc).__name__)
    unknown = sorted(set(doc) - set(SPEC_FIELDS))
    if unknown:
        raise SpecError("unknown spec field(s): %s" % ", ".join(unknown),
                        hint="the host's edgekit and this harness disagree; push the harness again")
    spec = {}
    for key, (types, default) in SPEC_FIELDS.items():
        if key not in doc:
            if key in REQUIRED_FIELDS:
                raise SpecError("spec field '%s' is required" % key)
            spec[key] = json.loads(json.dumps(default))
            continue
        val = doc[key]
        if isinstance(val, bool) and types in (int, (int, float)):
            raise SpecError("spec field '%s' must be a number, got %r" % (key, val))
        if not isinstance(val, types):
            raise SpecError("spec field '%s' has the wrong type (%s)" % (key, type(val).__name__))
        spec[key] = val
    runtimes, sources = adapters.names(), energy.names()
    if spec["runtime"] not in runtimes:
        raise SpecError("spec field 'runtime' is '%s'; expected one of %s" % (spec["runtime"], ", ".join(runtimes)))
    if spec["energy_source"] not in sources:
        raise SpecError("spec field 'energy_source' is '%s'; expected one of %s"
                        % (spec["energy_source"], ", ".join(sources)))
    for key in ("threads", "energy_interval_ms"):
        if spec[key] < 1:
            raise SpecError("spec field '%s' must be >= 1, got %s" % (key, spec[key]))
    for key in ("warmup_runs", "min_runs"):
        if spec[key] < 0:
            raise SpecError("spec field '%s' must be >= 0, got %s" % (key, spec[key]))
    for key in ("warmup_seconds", "min_seconds", "idle_seconds"):
        if spec[key] < 0:
            raise SpecError("spec field '%s' must be >= 0, got %s" % (key, spec[key]))
    if spec["max_seconds"] <= 0:
        raise SpecError("spec field 'max_seconds' must be > 0")
    if spec["min_runs"] < 1 and spec["min_seconds"] <= 0:
        raise SpecError("min_runs and min_seconds are both 0: nothing would be timed")
    if bool(spec["eval_inputs_file"]) != bool(spec["eval_outputs_file"]):
        raise SpecError("spec fields 'eval_inputs_file' and 'eval_outputs_file' go together (one is missing)")
    if spec["eval_reduce"] is not None:
        if not spec["eval_inputs_file"]:
            raise SpecError("spec field 'eval_reduce' needs 'eval_inputs_file' (it reduces evaluation outputs)")
        for how in spec["eval_reduce"]:
            parse_reduction(how)
    inputs = []
    for i, item in enumerate(spec["inputs"]):
        if not isinstance(item, dict):
            raise SpecError("spec.inputs[%d] must be an object" % i)
        bad = sorted(set(item) - set(INPUT_FIELDS))
        if bad:
            raise SpecError("spec.inputs[%d] has unknown field(s): %s" % (i, ", ".join(bad)))
        for k in ("name", "shape", "dtype"):
            if k not in item:
                raise SpecError("spec.inputs[%d] needs '%s'" % (i, k))
        shape = item["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise SpecError("spec.inputs[%d] ('%s') shape must be a list of non-negative ints, got %r"
                            % (i, item["name"], shape))
        inputs.append({"name": str(item["name"]), "shape": list(shape), "dtype": str(item["dtype"]),
                       "low": item.get("low"), "high": item.get("high")})
    spec["inputs"] = inputs
    return spec


def _random_array(rng, shape, dtype, low, high):
    np = numpy()
    dt = np.dtype(dtype)
    if dt.kind == "f":
        lo = 0.0 if low is None else float(low)
        hi = 1.0 if high is None else float(high)
        return np.asarray(rng.uniform(lo, hi, size=shape)).astype(dt)  # rank 0: a 0-d array, not a scalar
    if dt.kind in "iu":
        lo = 0 if low is None else int(low)
        hi = 100 if high is None else int(high)
        if hi <= lo:
            raise SpecError("input range [%s, %s) is empty" % (lo, hi))
        return np.asarray(rng.randint(lo, hi, size=shape)).astype(dt)
    if dt.kind == "b":
        return np.asarray(rng.randint(0, 2, size=shape)).astype(dt)
    raise SpecError("cannot make random data of dtype %s" % dt.name)


def _shape_matches(shape, model_shape):
    if model_shape is None:
        return True
    if len(shape) != len(model_shape):
        return False
    for got, want in zip(shape, model_shape):
        if isinstance(want, int) and want >= 0 and got != want:
            return False
    return True


def make_inputs(spec, details):
    """Feeds keyed by model input name, plus the `inputs` records (name, shape, dtype, source) for the result."""
    np = numpy()
    by_name = dict((d["name"], d) for d in details)
    spec_inputs = dict((i["name"], i) for i in spec["inputs"])
    extra = sorted(set(spec_inputs) - set(by_name))
    if extra:
        raise SpecError("spec.inputs names %s, which the model does not have (model inputs: %s)"
                        % (", ".join(extra), ", ".join(by_name)))
    feeds, records = {}, []
    if spec.get("inputs_file"):
        path = spec["inputs_file"]
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, IOError, ValueError) as exc:
            raise SpecError("cannot read inputs_file %s: %s" % (path, exc))
        keys = list(getattr(data, "files", []))
        if not keys:
            raise SpecError("inputs_file %s is not an .npz archive keyed by input name" % path)
        missing = [n for n in by_name if n not in keys]
        unknown = [k for k in keys if k not in by_name]
        if missing or unknown:
            raise SpecError("inputs_file %s does not match the model inputs: missing %s; unexpected %s"
                            % (path, ", ".join(missing) or "none", ", ".join(unknown) or "none"),
                            hint="save the .npz with np.savez(path, **{input_name: array})")
        for name, d in by_name.items():
            arr = data[name]
            want_shape = spec_inputs[name]["shape"] if name in spec_inputs else d["shape"]
            if not _shape_matches(list(arr.shape), want_shape):
                raise SpecError("inputs_file %s: input '%s' has shape %s but the %s expects %s"
                                % (path, name, list(arr.shape), "spec" if name in spec_inputs else "model",
                                   want_shape))
            want_dtype = spec_inputs[name]["dtype"] if name in spec_inputs else d["dtype"]
            if arr.dtype.name != np.dtype(want_dtype).name and not (
                    d.get("quantization") and arr.dtype.kind == "f"):
                raise SpecError("inputs_file %s: input '%s' has dtype %s but %s is expected"
                                % (path, name, arr.dtype.name, want_dtype))
            feeds[name] = np.require(arr, requirements="C")  # not ascontiguousarray: it makes rank 0 into 1-d
            records.append({"name": name, "shape": list(arr.shape), "dtype": arr.dtype.name, "source": "file",
                            "file": path})
        return feeds, records
    rng = np.random.RandomState(spec["seed"])
    for name, d in by_name.items():
        s = spec_inputs.get(name)
        if s is not None:
            shape, dtype, low, high = s["shape"], s["dtype"], s["low"], s["high"]
            if not _shape_matches(shape, d["shape"]):
                raise SpecError("spec.inputs '%s' shape %s does not fit the model's %s" % (name, shape, d["shape"]))
        else:
            shape = d["shape"]
            if any(not isinstance(x, int) or x < 0 for x in shape):
                raise SpecError("model input '%s' has dynamic shape %s; give a concrete shape in spec.inputs"
                                % (name, shape))
            dtype, low, high = d["dtype"], None, None
            if d.get("quantization"):
                dtype = "float32"  # quantized by the adapter with the model's own scale/zero point
        try:
            numpy().dtype(dtype)
        except TypeError:
            raise SpecError("spec.inputs '%s' dtype '%s' is not a numpy dtype" % (name, dtype))
        feeds[name] = _random_array(rng, shape, dtype, low, high)
        rec = {"name": name, "shape": list(shape), "dtype": numpy().dtype(dtype).name, "source": "random",
               "seed": spec["seed"]}
        if low is not None or high is not None:
            rec["low"], rec["high"] = low, high
        records.append(rec)
    return feeds, records
