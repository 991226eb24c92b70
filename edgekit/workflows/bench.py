"""What `edgekit bench` and `edgekit.api.bench` feed an artifact with — one rule for both."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from edgekit.core.artifact import Artifact


def inputs_for(art: Artifact, overrides: Optional[Dict[str, List[int]]], inputs_file: Optional[str],
               progress: Optional[Callable[[str], None]] = None) -> Tuple[Artifact, list, object]:
    """(artifact, inputs, feed): --inputs FILE.npz when given; on deploy's own output (a manifest.json beside it that
    lists the artifact's sha256), what deploy fed (shapes, ranges, a .tflite's layout map); else resolved from the
    artifact and --shape."""
    from edgekit.workflows.deploy import bench_inputs

    if inputs_file:
        inputs, feed = bench_inputs(art, overrides, inputs_file)
        return art, inputs, feed

    from edgekit.core.runner_interface import InputSpec
    from edgekit.core.shapes import resolve_inputs
    from edgekit.report import manifest_beside

    manifest, data = manifest_beside(art.path)
    if manifest is not None and not overrides and data.get("inputs_used"):
        inputs = [InputSpec.model_validate(i) for i in data["inputs_used"]]
        if Path(data["artifact"]["path"]).name == art.path.name:
            art = art.model_copy(update={"metadata": {**data["artifact"].get("metadata", {}), **art.metadata}})
        if progress is not None:
            progress(f"inputs from {manifest}: " + ", ".join(f"{i.name}={'x'.join(map(str, i.shape))}" for i in inputs))
        return art, inputs, None
    return art, resolve_inputs(art.inputs, overrides=overrides, model=str(art.path)), None
