"""Conversion steps, one module per step, registered by name in edgekit.core.registry."""
