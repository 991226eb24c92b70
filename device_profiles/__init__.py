"""Bundled device profiles (YAML), package data of edgekit."""
