"""The core: the types and machinery every other part of edgekit shares.

Belongs here: Artifact, DeviceProfile, the planner and the pipeline that runs a plan, the Step base class and the
registry that looks steps and runners up by name, errors, result schemas, the runner interface, the one runtime
table, and small utilities (atomic files, input shapes, compression-step measurements).
Does not belong here: a concrete step (edgekit.converters), a transport or the on-device harness (edgekit.runners),
accuracy judgement (edgekit.quality), a user-facing command (edgekit.workflows, edgekit.cli) or rendering (edgekit.report).
Modules here import nothing from edgekit.workflows, edgekit.cli or edgekit.report.
"""
