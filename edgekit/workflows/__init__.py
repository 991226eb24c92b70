"""Workflows: the user-facing jobs built from the core (deploy, compress, distill, sweep)."""
