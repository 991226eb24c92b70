"""`edgekit deploy`: the main job."""

from __future__ import annotations

import click

from edgekit.cli.common import bench_options, console, json_option, parse_max_drop, print_json, profile_option, progress_printer, shape_option, ssh_options
from edgekit.cli.history import history_option


@click.command()
@click.argument("model")
@profile_option()
@ssh_options
@click.option("--runtime", type=click.Choice(["onnxruntime", "openvino", "tflite", "tensorrt"]), default=None, help="Override the profile's runtime preference.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8", "auto"]), default=None, help="fp32, fp16, int8, or auto: build every feasible runtime x precision, measure each on the target, keep the fastest within --max-drop (default 1%).")
@click.option("--max-drop", default=None, metavar="0.5%", help="Accuracy budget for compression: max drop of the task metric (or output cosine).")
@click.option("--train-budget", default=None, metavar="5m", help="Training time (300, 90s, 5m, 1h, or off) for --precision int8/auto: quantization-aware training (mixed precision where needed) where post-training INT8 misses --max-drop, low-rank -> INT8 compound variants, and (PyTorch sources) structured prune -> distill -> INT8; every variant's latency/score/size goes to the report's Pareto front. Default: 10m, spent only when post-training INT8 missed the budget.")
@click.option("--calib", type=click.Path(exists=True), default=None, help="Calibration data: image folder, .npy or .npz keyed by input name.")
@click.option("--calib-preprocess", default=None, metavar="SPEC", help="For an image folder: size=640x640,layout=NCHW,color=RGB,mean=...,std=...,scale=1/255")
@shape_option
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz", help="Real input values (one array per input name, np.savez) for the fidelity checks and the benchmark instead of random data.")
@click.option("--no-simplify", is_flag=True, help="Skip the onnxsim step.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default=None, help="Write artifacts, manifest.json, report.json, report.md and report.html here.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Artifact cache (default: the user cache dir, or $EDGEKIT_CACHE_DIR).")
@click.option("--no-cache", is_flag=True, help="Rebuild every step even if a cached result exists.")
@click.option("--no-bench", is_flag=True, help="Convert only; do not benchmark.")
@click.option("--fidelity-samples", type=int, default=None, help="Size of the one held-out evaluation set that every fidelity check, the variant search and the on-device check score on (default: the zoo model's, e.g. 32 for ppocr-det; 8 random feeds for models without data).")
@click.option("--trust-pickle", is_flag=True, help="Allow loading pickled PyTorch files that contain code (runs arbitrary code).")
@history_option
@bench_options
@json_option
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def deploy(model, profile, host, ssh, runtime, precision, max_drop, train_budget, calib, calib_preprocess, shapes, inputs_file, no_simplify, out, cache_dir, no_cache, no_bench, fidelity_samples, trust_pickle, history_path, bench, as_json, quiet):
    """Plan, convert, ship and benchmark MODEL (a file or zoo:NAME) on a device profile.

    \b
    Examples:
      edgekit deploy zoo:ppocr-det --profile x86-cpu --out out/
      edgekit deploy model.onnx --profile jetson-orin-nano --host nano.local
      edgekit deploy zoo:minilm --profile x86-cpu --precision int8 --max-drop 0.5%
      edgekit deploy zoo:ppocr-rec --profile x86-cpu --precision int8 --max-drop 1% --train-budget 10m
    """
    from edgekit.cli.common import parse_duration
    from edgekit.workflows.deploy import command_line, deploy as run_deploy
    from edgekit.report import render_terminal
    from edgekit.core.shapes import parse_shape_options

    with progress_printer(not quiet and not as_json) as progress:  # the live status line ends before the tables
        report = run_deploy(
            model,
            profile,
            host=host,
            ssh=ssh,
            runtime=runtime,
            precision=precision,
            max_drop=parse_max_drop(max_drop),
            train_budget=0.0 if (train_budget or "").strip().lower() in ("off", "0", "none") else parse_duration(train_budget),
            calib=calib,
            calib_preprocess=calib_preprocess,
            shapes=parse_shape_options(shapes),
            simplify=not no_simplify,
            out=out,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            bench=bench,
            run_benchmark=not no_bench,
            trust_pickle=trust_pickle,
            fidelity_samples=fidelity_samples,
            progress=progress,
            command=command_line(),
            history=history_path,
            inputs_file=inputs_file,
        )
    if as_json:
        print_json(report.model_dump(mode="json"))
        return
    from rich.markup import escape

    render_terminal(report, console())
    if out:
        from pathlib import Path

        console().print(escape(f"wrote {Path(out) / 'report.json'}, report.html, report.md, manifest.json"))
    if report.benchmark is not None:
        from edgekit.report.history import resolve_path

        where = resolve_path(history_path)
        if where is not None:
            console(stderr=True).print(escape(f"recorded in the history {where} (edgekit history --last 1)"), highlight=False)
