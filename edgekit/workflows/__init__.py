"""Workflows: multi-step jobs built from the core (deploy, compress, distill, interleaved benchmark rounds...)."""
