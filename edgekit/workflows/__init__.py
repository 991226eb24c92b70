"""Workflows: the end-to-end jobs behind the commands (deploy, compress, distill), composed from core and quality.

Belongs here: orchestration a user asks for by name — resolve the model, plan, run the pipeline, benchmark through a
runner, hand the result to edgekit.report. Does not belong here: argument parsing and printing (edgekit.cli), a
step's own logic (edgekit.converters) or rendering (edgekit.report). Nothing in core or quality imports a workflow.
"""
