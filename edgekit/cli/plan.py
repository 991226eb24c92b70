"""`edgekit plan`: show what deploy would do, without doing it."""

from __future__ import annotations

import click

from edgekit.cli.common import json_option, parse_max_drop, print_json, profile_option


@click.command()
@click.argument("model")
@profile_option()
@click.option("--host", default=None, help="Where it would run (user@host[:port]).")
@click.option("--runtime", type=click.Choice(["onnxruntime", "openvino", "tflite", "tensorrt"]), default=None)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None)
@click.option("--max-drop", default=None, metavar="0.5%")
@click.option("--calib", type=click.Path(exists=True), default=None, help="Calibration data (changes int8 choices).")
@click.option("--no-simplify", is_flag=True)
@click.option("--trust-pickle", is_flag=True)
@json_option
def plan(model, profile, host, runtime, precision, max_drop, calib, no_simplify, trust_pickle, as_json):
    """Print the ordered steps for MODEL on a profile, why each was chosen, the runtime and where it runs."""
    from edgekit.workflows.deploy import resolve_model
    from edgekit.core.plan import PlanOptions, make_plan
    from edgekit.core.profiles import load_profile

    prof = load_profile(profile)
    resolved = resolve_model(model, trust_pickle=trust_pickle)
    p = make_plan(
        resolved.artifact,
        resolved.label,
        prof,
        PlanOptions(runtime=runtime, precision=precision, max_drop=parse_max_drop(max_drop), simplify=not no_simplify, has_calib=calib is not None or resolved.zoo is not None, host=host),
    )
    if as_json:
        print_json(p.model_dump(mode="json"))
        return
    for line in p.describe():
        click.echo(line)
