"""The Android demo app's sources, shipped as package data for `edgekit app build` (not Python code)."""
