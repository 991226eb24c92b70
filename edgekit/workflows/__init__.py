"""Workflows: multi-step jobs built on the core (deploy, compress, distill, app build...)."""
