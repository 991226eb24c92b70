"""NNCF accuracy control for the OpenVINO step: quantize, then revert the groups that hurt the task metric most."""

from __future__ import annotations

import time
from typing import Any, List, Tuple

from edgekit.converters.openvino_graph import quantized_names
from edgekit.core.errors import StepError, require


def accuracy_control(search: Any, calib: list, evals: list, ref: List[list], ignored: List[str], preset: str, full: Any) -> Tuple[Any, List[str], float]:
    """nncf.quantize_with_accuracy_control held to search.cfg.max_drop of the step's metric vs FP32 on `evals`.

    Returns (model, names of ops kept in float that `full` (the full-INT8 model) quantizes, seconds).
    The validation items are (index, feed) pairs so the metric compares each output with its FP32 reference.
    """
    nncf = require("nncf", "openvino", "INT8 accuracy control with NNCF")
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    cfg = search.cfg

    def validate(compiled, items) -> Tuple[float, List[float]]:
        refs, outs = [], []
        for i, feed in items:
            res = compiled(feed)
            outs.append([res[o] for o in compiled.outputs])
            refs.append(ref[i])
        # per-sample values let NNCF rank quantizer groups by their effect on the task metric itself
        per = [float(search.score([r], [o])) for r, o in zip(refs, outs)]
        return float(search.score(refs, outs)), per

    kwargs, advanced = search.nncf_kwargs(calib, ignored, preset)
    t0 = time.time()
    try:
        model = nncf.quantize_with_accuracy_control(
            search.model,
            nncf.Dataset(calib),
            nncf.Dataset(list(enumerate(evals)), lambda item: item[1]),
            validate,
            max_drop=cfg.max_drop,
            advanced_quantization_parameters=advanced,
            advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(max_num_iterations=cfg.ac_max_iterations),
            **kwargs,
        )
    except Exception as exc:  # NNCF raises nncf.* errors / RuntimeError from OpenVINO with its own message
        raise StepError("openvino", "NNCF accuracy-controlled INT8 quantization failed", hint="set search: sensitivity, or --precision fp16",
                        tool_message=f"{type(exc).__name__}: {exc}") from exc
    kept_set = set(quantized_names(model))
    kept = [n for n in quantized_names(full) if n not in kept_set]
    return model, kept, time.time() - t0
