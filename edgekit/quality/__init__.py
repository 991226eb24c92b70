"""Quality: how edgekit judges whether a produced model is still good enough.

Belongs here: output comparison (fidelity), task metrics, calibration/evaluation data loading, the per-node
sensitivity search used by INT8 steps, and the variant search behind `--precision auto`.
Does not belong here: converting a model (edgekit.converters), timing it on a device (edgekit.runners), or the
zoo's own models and data (edgekit.zoo).
"""
