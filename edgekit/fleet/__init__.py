"""The fleet: boards as data (fleet.yaml, sweep.yaml), cell expansion, board locks, the sweep store and the
executors (a process pool on one machine, Ray actors per board on a cluster). The workflow that drives them is
`edgekit.workflows.sweep`; nothing here imports Ray at module level."""
