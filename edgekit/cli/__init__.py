"""Command-line interface: one small module per command group; parsing and printing only."""
