"""`edgekit bench`: benchmark an existing artifact."""

from __future__ import annotations

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

    prof = load_profile(profile)
    art = load_artifact(artifact)
    inputs, feed = bench_inputs(art, parse_shape_options(shapes), inputs_file)
    progress = progress_printer(not quiet and not as_json)
    with make_runner(prof, host, ssh) as runner:
        result = benchmark(art, prof, runner, inputs, runtime=runtime, bench=bench, progress=progress, feed=feed)
    if out:
        atomic_write_text(out, result.model_dump_json(indent=2))
    if as_json:
        print_json(result.model_dump(mode="json"))
        return
    from rich.table import Table

    t = Table(title=f"{art.path.name} on {result.host or 'this machine'} ({prof.name})", show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    for row in bench_rows(result):
        t.add_row(*row)
    console().print(t)
