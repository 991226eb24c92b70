"""Evaluation mode: run the host's held-out evaluation feeds through the runtime on the device and save the outputs.

The host writes the feeds (in the artifact's own input names and layout) to an .npz, pushes it beside the model
and names it in the spec (`eval_inputs_file`); the harness runs every sample through the same adapter session it
timed and writes the raw outputs to `eval_outputs_file` (compressed .npz, atomically), which the host fetches
and scores against the source model with the model's task metric. Whatever the runtime: only Session.run is used.

Archive layout (both ways): `__inputs__` / `__outputs__` hold the tensor names, `__samples__` the count,
`i{k}_s{i}` is input k of sample i, `o{j}_s{i}` output j of sample i. With `eval_reduce` (reduce.py: what the task
metric needs, e.g. the top-2 classes per timestep instead of 6625 floats) output j is stored as its reduced parts
`o{j}_s{i}_{part}` and `__reduce__` names each output's reduction. Standard library + numpy; Python >= 3.6.
"""

import os
import time

from .common import emit_progress, numpy
from .errors import HarnessError, InferenceFailed, SpecError
from .reduce import parse, reduce_output


def load_eval_feeds(path, input_names):
    """The evaluation feeds of `path` as a list of {input name: array}; SpecError naming the file if it does not fit."""
    np = numpy()
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, IOError, ValueError) as exc:
        raise SpecError("cannot read eval_inputs_file %s: %s" % (path, exc),
                        hint="the host pushes it before the run; re-run the deploy")
    keys = set(getattr(data, "files", []))
    if "__inputs__" not in keys or "__samples__" not in keys:
        raise SpecError("eval_inputs_file %s is not an edgekit evaluation archive (no __inputs__/__samples__)" % path)
    names = [str(x) for x in data["__inputs__"].tolist()]
    n = int(data["__samples__"])
    if sorted(names) != sorted(input_names):
        raise SpecError("eval_inputs_file %s feeds inputs %s but the model has %s"
                        % (path, ", ".join(names), ", ".join(input_names)),
                        hint="the evaluation feeds were written for another artifact; re-run the deploy")
    feeds = []
    for i in range(n):
        feed = {}
        for k, name in enumerate(names):
            key = "i%d_s%d" % (k, i)
            if key not in keys:
                raise SpecError("eval_inputs_file %s lacks %s (input '%s' of sample %d)" % (path, key, name, i))
            feed[name] = np.require(data[key], requirements="C")  # keeps rank-0 inputs rank 0
        feeds.append(feed)
    return feeds


def output_reductions(spec, output_names):
    """The reduction of each output (device order): the spec's `eval_reduce`, or 'full' for every output."""
    reduce = spec.get("eval_reduce")
    if not reduce:
        return ["full"] * len(output_names)
    if len(reduce) != len(output_names):
        raise SpecError("spec field 'eval_reduce' names %d reductions but the model has %d outputs (%s)"
                        % (len(reduce), len(output_names), ", ".join(output_names)),
                        hint="the host writes one per output; re-run the deploy")
    for how in reduce:
        parse(how)
    return [str(how or "full") for how in reduce]


def save_eval_outputs(path, output_names, reduced, reductions):
    """Write the outputs (per sample, in output order, each as reduce_output's parts of its reduction in
    `reductions`) atomically as a compressed archive."""
    np = numpy()
    arrays = {"__outputs__": np.array([str(n) for n in output_names]), "__samples__": np.array(len(reduced)),
              "__reduce__": np.array(reductions)}
    for i, outs in enumerate(reduced):
        for j, parts in enumerate(outs):
            for part, a in parts.items():
                arrays["o%d_s%d%s" % (j, i, "_" + part if part else "")] = a
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory)
    tmp = "%s.%d.part" % (path, os.getpid())
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.rename(tmp, path)
    except (OSError, IOError) as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise HarnessError("cannot write the evaluation outputs to %s: %s" % (path, exc),
                           hint="free space in the device's work directory")
    return os.path.getsize(path)


def run_evaluation(session, spec):
    """Run every evaluation sample through `session`; write the outputs file and return its record for the result."""
    path, out_path = spec["eval_inputs_file"], spec["eval_outputs_file"]
    reductions = output_reductions(spec, list(session.output_names))
    feeds = load_eval_feeds(path, list(session.input_names))
    emit_progress("evaluate", state="start", samples=len(feeds))
    outputs = []
    t0 = time.perf_counter()
    next_report = t0 + 1.0
    for i, feed in enumerate(feeds):
        try:
            outs = session.run(feed)
        except HarnessError:
            raise
        except Exception as exc:  # runtime-specific exception types; reported with the runtime's message
            raise InferenceFailed("%s inference failed on evaluation sample %d: %s"
                                  % (spec["runtime"], i, str(exc).strip()[:2000]))
        # reduced per sample: a big output is never held whole for every sample
        outputs.append([reduce_output(numpy().array(o, copy=True), how) for o, how in zip(outs, reductions)])
        now = time.perf_counter()
        if now >= next_report:
            emit_progress("evaluate", samples=i + 1, of=len(feeds), elapsed_s=round(now - t0, 3))
            next_report = now + 1.0
    seconds = time.perf_counter() - t0
    size = save_eval_outputs(out_path, session.output_names, outputs, reductions)
    emit_progress("evaluate", state="done", samples=len(feeds), elapsed_s=round(seconds, 3))
    return {"samples": len(feeds), "inputs_file": path, "outputs_file": out_path, "outputs_bytes": size,
            "output_names": list(session.output_names), "seconds": seconds, "reduce": reductions}

