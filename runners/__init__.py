"""Runners (local, ssh) and the on-device harness."""
