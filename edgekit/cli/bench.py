"""`edgekit bench`: benchmark an existing artifact."""

from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import bench_options, console, json_option, print_json, profile_option, progress_printer, shape_option, ssh_options
from edgekit.core.runtimes import names as runtime_names


@click.command()
@click.argument("artifact", type=click.Path())
@profile_option()
@ssh_options
@shape_option
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz", help="Real input values (one array per input name, np.savez, in the artifact's own names and layout) instead of random data.")
@click.option("--runtime", type=click.Choice(runtime_names()), default=None, help="Runtime (default: from the file's format).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write the BenchmarkResult JSON here.")
@bench_options
@json_option
@click.option("--quiet", "-q", is_flag=True)
def bench(artifact, profile, host, ssh, shapes, inputs_file, runtime, out, bench, as_json, quiet):
    """Benchmark ARTIFACT (.onnx, .tflite, OpenVINO .xml, TensorRT engine) on a device profile."""
    from edgekit.core.artifact import load_artifact
    from edgekit.workflows.deploy import bench_inputs, benchmark, make_runner
    from edgekit.core.fsutil import atomic_write_text
    from edgekit.core.profiles import load_profile
    from edgekit.report import bench_rows
    from edgekit.core.shapes import parse_shape_options

    from edgekit.core.runner_interface import InputSpec
    from edgekit.report import manifest_beside

    prof = load_profile(profile)
    art = load_artifact(artifact)
    progress = progress_printer(not quiet and not as_json)
    overrides = parse_shape_options(shapes)
    feed = None
    manifest, data = manifest_beside(art.path)
    if inputs_file:
        inputs, feed = bench_inputs(art, overrides, inputs_file)
    elif manifest is not None and not overrides and data.get("inputs_used"):
        # deploy's own output: feed it what deploy fed (shapes, value ranges, and the layout map of e.g. a .tflite)
        inputs = [InputSpec.model_validate(i) for i in data["inputs_used"]]
        if Path(data["artifact"]["path"]).name == art.path.name:
            art = art.model_copy(update={"metadata": {**data["artifact"].get("metadata", {}), **art.metadata}})
        progress(f"inputs from {manifest}: " + ", ".join(f"{i.name}={'x'.join(map(str, i.shape))}" for i in inputs))
    else:
        inputs, _ = bench_inputs(art, overrides)
    with make_runner(prof, host, ssh) as runner:
        result = benchmark(art, prof, runner, inputs, runtime=runtime, bench=bench, progress=progress, feed=feed)
    if out:
        atomic_write_text(out, result.model_dump_json(indent=2))
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=escape(f"{art.path.name} on {result.host or 'this machine'} ({prof.name})"), show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    for row in bench_rows(result):
        t.add_row(*(escape(str(c)) for c in row))
    console().print(t)
