"""`edgekit bench`: benchmark existing artifacts (several: interleaved rounds with pairwise ratios)."""

from __future__ import annotations

import click

from edgekit.cli.common import bench_options, console, json_option, print_json, profile_option, progress_printer, shape_option, ssh_options
from edgekit.cli.history import history_option
from edgekit.core.runtimes import names as runtime_names


@click.command()
@click.argument("artifacts", nargs=-1, required=True, type=click.Path())
@profile_option()
@ssh_options
@shape_option
@click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz", help="Real input values (one array per input name, np.savez, in the artifact's own names and layout) instead of random data.")
@click.option("--runtime", type=click.Choice(runtime_names()), default=None, help="Runtime (default: from the file's format).")
@click.option("--rounds", type=click.IntRange(min=1), default=1, show_default=True, help="Benchmark all artifacts interleaved (A B C A B C ...) this many times.")
@click.option("--cooldown", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="S", help="Seconds to wait between rounds.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write the BenchmarkResult JSON here (with several artifacts or rounds: the summary), and report.html beside it.")
@history_option
@bench_options
@json_option
@click.option("--quiet", "-q", is_flag=True)
def bench(artifacts, profile, host, ssh, shapes, inputs_file, runtime, rounds, cooldown, out, history_path, bench, as_json, quiet):
    """Benchmark ARTIFACTS (.onnx, .tflite, OpenVINO .xml, TensorRT engine) on a device profile.

    With several artifacts (or --rounds > 1) they run interleaved on the same device, round by round, and each
    pair gets a ratio of medians with an interval and a verdict. Every run is recorded in the history.

    \b
    Examples:
      edgekit bench out/model.onnx --profile x86-cpu --out bench/result.json
      edgekit bench fp32.onnx int8.onnx --profile x86-cpu --rounds 5 --cooldown 10
    """
    import uuid
    from pathlib import Path

    from edgekit.core.artifact import load_artifact
    from edgekit.workflows.deploy import benchmark, command_line, make_runner
    from edgekit.core.fsutil import atomic_write_text
    from edgekit.core.profiles import load_profile
    from edgekit.report import history as hist
    from edgekit.core.shapes import parse_shape_options, resolve_inputs
    from edgekit.quality.rounds import run_rounds, summarize

    prof = load_profile(profile)
    arts = [load_artifact(a) for a in artifacts]
    parsed = parse_shape_options(shapes)
    hist.check_writable(history_path)
    progress = progress_printer(not quiet and not as_json)
    from edgekit.workflows.bench import inputs_for

    fed = [inputs_for(a, parsed, inputs_file, progress) for a in arts]
    arts = [a for a, _, _ in fed]
    inputs = {id(a): i for a, i, _ in fed}
    feeds = {id(a): f for a, _, f in fed}
    with progress, make_runner(prof, host, ssh, on_progress=progress.on_progress) as runner:
        results = run_rounds(benchmark, arts, prof, runner, lambda a: inputs[id(a)], rounds, cooldown, runtimes=[runtime] * len(arts), bench=bench, progress=progress,
                             feed_for=(lambda a: feeds[id(a)]) if inputs_file else None)
    names = _names(arts)
    command = command_line()
    session = uuid.uuid4().hex[:12] if len(arts) > 1 or rounds > 1 else None
    single = len(arts) == 1 and rounds == 1
    summary = None if single else summarize(names, results)
    html_path = None
    if out:
        html_path = Path(out).with_suffix(".html")
    ids = []
    for art, name, rs in zip(arts, names, results):
        merged = _merge(rs)
        ids.append(hist.append_benchmark(history_path, merged, kind="bench", command=command, model=name, profile=prof.name,
                                         power_mode=prof.power_mode, report_path=str(html_path) if html_path else None, session=session,
                                         round_medians=None if single else [b.timing.stats.median_ms for b in rs]))
    if out:
        from edgekit.report.html import write_html

        if single:
            atomic_write_text(out, results[0][0].model_dump_json(indent=2))
            write_html(html_path, results[0][0], power_mode=prof.power_mode)
        else:
            import json

            atomic_write_text(out, json.dumps({**summary, "history_ids": ids, "results": [[b.model_dump(mode="json") for b in rs] for rs in results]}, indent=2))
            write_html(html_path, _merge(results[0]), power_mode=prof.power_mode, rounds=summary)
    if as_json:
        print_json(results[0][0].model_dump(mode="json") if single else {**summary, "history_ids": ids})
        return
    if single:
        _print_single(arts[0], results[0][0], prof)
    else:
        _print_rounds(summary)
    if ids and ids[0] is not None:
        console(stderr=True).print(f"recorded in history as #{', #'.join(str(i) for i in ids)}" + (f"; wrote {out} and {html_path}" if out else ""), highlight=False)


def _names(arts):
    """Short unique names: file names, or parent/file when file names repeat."""
    base = [a.path.name for a in arts]
    if len(set(base)) == len(base):
        return base
    return [f"{a.path.parent.name}/{a.path.name}" if base.count(a.path.name) > 1 else a.path.name for a in arts]


def _merge(rs):
    """One BenchmarkResult per artifact for the history: the samples of all rounds, stats recomputed by the harness's
    own latency_stats (the same percentiles and sample std as every single-run figure)."""
    if len(rs) == 1:
        return rs[0]
    from edgekit.core.registry import harness_module

    samples = [x for b in rs for x in b.timing.samples_ms]
    first = rs[0]
    stats = first.timing.stats.model_copy(update=harness_module("bench").latency_stats(samples))
    dur = sum(b.timing.duration_s for b in rs)
    timing = first.timing.model_copy(update={"samples_ms": samples, "stats": stats, "runs": len(samples), "duration_s": dur,
                                             "throughput_ips": len(samples) / dur if dur > 0 else 0.0})
    return first.model_copy(update={"timing": timing, "thermal": first.thermal.model_copy(update={"after": rs[-1].thermal.after}),
                                    "warnings": [*first.warnings, f"{len(rs)} interleaved rounds merged"]})


def _print_single(art, result, prof):
    from rich.markup import escape
    from rich.table import Table

    from edgekit.report import bench_rows

    t = Table(title=escape(f"{art.path.name} on {result.host or 'this machine'} ({prof.name})"), show_header=False, title_justify="left")
    t.add_column("metric", style="bold")
    t.add_column("value")
    for row in bench_rows(result):
        t.add_row(*[escape(str(c)) for c in row])
    console().print(t)


def _print_rounds(summary):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"{summary['rounds']} interleaved round(s)", title_justify="left")
    for col in ("artifact", "median over rounds", "min – max", "rel. IQR", "round medians (ms)"):
        t.add_column(col)
    for a in summary["artifacts"]:
        s = a["over_rounds"]
        t.add_row(escape(a["name"]), f"{s['median']:.3f} ms", f"{s['min']:.3f} – {s['max']:.3f}", f"{s['rel_iqr']:.1%}",
                  " ".join(f"{m:.2f}" for m in a["round_medians_ms"]))
    p = Table(title="pairwise ratio of medians (other / base)", title_justify="left")
    for col in ("base", "other", "ratio", "interval", "verdict"):
        p.add_column(col)
    for r in summary["pairs"]:
        p.add_row(escape(r["base"]), escape(r["other"]), f"{r['ratio']:.3f}", f"[{r['lo']:.3f}, {r['hi']:.3f}] ({r['confidence']:.0%})",
                  r["verdict"] if r["verdict"] == "no detectable difference" else f"{r['other']} is {r['verdict']}")
    c = console()
    c.print(t)
    c.print(p)
    for note in dict.fromkeys(r["note"] for r in summary["pairs"] if r.get("note")):
        c.print(escape(note))
