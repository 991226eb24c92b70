"""`edgekit compress`: run one compression step (prune / low-rank / weight sharing) and write its before/after report."""

from __future__ import annotations

from typing import Optional

import click

from edgekit.cli.common import print_json, profile_option


@click.command("compress")
@click.argument("model")
@click.option("--method", "-m", required=True, type=click.Choice(["prune", "prune-unstructured", "lowrank", "weight-share"]),
              help="prune: remove heads/neurons/channels (Torch-Pruning); prune-unstructured: zero small weights; "
                   "lowrank: SVD factorisation; weight-share: k-means clustering of weights.")
@click.option("--ratio", type=float, default=None, help="Pruning: fraction of channels/heads/neurons (or weights) removed [0.3].")
@click.option("--rank", type=int, default=None, help="Low-rank: fixed rank per layer.")
@click.option("--energy", type=float, default=None, help="Low-rank: keep this fraction of the squared singular values (e.g. 0.95).")
@click.option("--clusters", type=int, default=None, help="Weight sharing: values per tensor [256]; fewer = smaller but less faithful.")
@click.option("--finetune", is_flag=True, help="prune/lowrank: recover accuracy by distillation from the source model on calibration data (no labels).")
@click.option("--train-budget", default=None, metavar="5m", help="Time limit of --finetune (300, 90s, 5m, 1h) [5m].")
@click.option("--finetune-samples", type=click.IntRange(min=1), default=256, show_default=True, help="Calibration samples --finetune trains on.")
@profile_option()
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory for model.onnx, report.json, report.md.")
@click.option("--eval-samples", type=int, default=16, show_default=True, help="Evaluation samples for fidelity.")
@click.option("--no-export", is_flag=True, help="PyTorch models: skip the ONNX export of the result.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading a pickled PyTorch module (runs its code).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def compress(model: str, method: str, ratio: Optional[float], rank: Optional[int], energy: Optional[float], clusters: Optional[int],
             finetune: bool, train_budget: Optional[str], finetune_samples: int, profile: str, out_dir: str, eval_samples: int, no_export: bool, trust_pickle: bool, as_json: bool) -> None:
    """Compress MODEL (zoo:NAME, .onnx, or a PyTorch file) with one method and report size, params, latency, fidelity.

    \b
    Examples:
      edgekit compress zoo:minilm --method prune --ratio 0.3 --profile x86-cpu --out out/prune
      edgekit compress zoo:minilm --method prune-unstructured --ratio 0.5 --profile x86-cpu --out out/sparse
      edgekit compress zoo:ppocr-rec --method lowrank --energy 0.95 --profile x86-cpu --out out/lr
      edgekit compress zoo:ppocr-rec --method lowrank --energy 0.9 --finetune --train-budget 5m --profile x86-cpu --out out/lr-ft
      edgekit compress zoo:ppocr-det --method weight-share --clusters 16 --profile x86-cpu --out out/ws
    """
    from edgekit.cli.common import parse_duration
    from edgekit.workflows.compress import compress as run
    from edgekit.core.errors import UsageError
    from edgekit.core.profiles import load_profile

    settings = {}
    given = {"--ratio": ratio, "--rank": rank, "--energy": energy, "--clusters": clusters}
    allowed = {"prune": {"--ratio"}, "prune-unstructured": {"--ratio"}, "lowrank": {"--rank", "--energy"}, "weight-share": {"--clusters"}}[method]
    wrong = [k for k, v in given.items() if v is not None and k not in allowed]
    if wrong:
        raise UsageError(f"{', '.join(wrong)} does not apply to --method {method}", hint=f"use {', '.join(sorted(allowed))}")
    if ratio is not None:
        settings["ratio"] = ratio
    if clusters is not None:
        settings["clusters"] = clusters
    if method == "lowrank":
        if (rank is None) == (energy is None):
            raise UsageError("--method lowrank needs exactly one of --rank or --energy", hint="e.g. --energy 0.95")
        settings.update({"rank": rank} if rank is not None else {"energy": energy})
    if train_budget is not None and not finetune:
        raise UsageError("--train-budget is the time limit of --finetune", hint="add --finetune")
    finetune_s = (parse_duration(train_budget) or 300.0) if finetune else None
    prof = load_profile(profile)
    progress = None if as_json else (lambda msg: click.echo(msg, err=True))
    try:
        rec = run(model, method, out_dir, profile=prof, settings=settings, export=not no_export, eval_samples=eval_samples,
                  trust_pickle=trust_pickle, progress=progress, finetune_s=finetune_s,
                  finetune_samples=finetune_samples)
    except ValueError as exc:  # pydantic validation of the settings (e.g. --ratio 1.5)
        raise UsageError(f"invalid setting for --method {method}: {exc}") from exc
    if as_json:
        print_json(rec)
        return
    from pathlib import Path

    click.echo((Path(out_dir) / "report.md").read_text())
