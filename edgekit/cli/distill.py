"""`edgekit distill`: train a smaller student from a teacher (worked example: zoo:minilm -> a 3-layer student)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from edgekit.cli.common import print_json


def _entry_point(spec: str, what: str):
    """Import 'package.module:callable' and call it (no arguments)."""
    import importlib

    from edgekit.core.errors import UsageError

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise UsageError(f"{what} '{spec}' is not a Python entry point", hint="write it as package.module:callable")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{what} '{spec}' cannot be imported: {exc}", hint="check the module is importable (PYTHONPATH) and the name exists") from exc
    return fn()


@click.command("distill")
@click.argument("teacher")
@click.option("--student-layers", type=int, default=3, show_default=True, help="zoo:minilm: layers kept in the student (copied from the teacher).")
@click.option("--student", "student_spec", default=None, help="Your own student: package.module:callable returning an nn.Module.")
@click.option("--data", "data_spec", default=None, help="Your own training data: package.module:callable returning an iterable of batches.")
@click.option("--kind", type=click.Choice(["auto", "logits", "embedding"]), default="auto", show_default=True,
              help="Loss: logits -> KL at --temperature (+ CE on 'labels'); embedding -> cosine + MSE.")
@click.option("--temperature", type=float, default=2.0, show_default=True)
@click.option("--steps", type=int, default=300, show_default=True, help="Optimiser steps.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=4e-4, show_default=True)
@click.option("--train-sentences", type=int, default=None, help="zoo:minilm: how many real training sentences (split 'train'); default: all of them (~25k).")
@click.option("--eval-sentences", type=int, default=200, show_default=True, help="zoo:minilm: held-out sentences for the cosine (split 'eval').")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads for training and timing.")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory for student.onnx, report.json, report.md.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def distill(teacher: str, student_layers: int, student_spec: Optional[str], data_spec: Optional[str], kind: str, temperature: float,
            steps: int, batch_size: int, lr: float, train_sentences: int, eval_sentences: int, threads: int, out_dir: str,
            as_json: bool) -> None:
    """Distil TEACHER into a smaller student and report fidelity and speed-up.

    \b
    TEACHER is zoo:minilm (worked example: half the layers, initialised from the teacher, trained on real
    sentences; report = embedding cosine on held-out sentences + ORT speed-up at seq 128), or your own
    package.module:callable returning an nn.Module, together with --student and --data entry points.
    \b
    Examples:
      edgekit distill zoo:minilm --student-layers 3 --steps 300 --out out/student
      edgekit distill mypkg.models:teacher --student mypkg.models:student --data mypkg.data:batches --steps 1000 --out out/s
    """
    from edgekit.workflows import distill as d
    from edgekit.core.errors import UsageError

    say = None if as_json else (lambda m: click.echo(m, err=True))
    for name, v in (("--steps", steps), ("--batch-size", batch_size), ("--threads", threads), ("--eval-sentences", eval_sentences)):
        if v <= 0:
            raise UsageError(f"{name} must be > 0, got {v}")
    is_zoo = teacher.strip().lower() == "zoo:minilm"
    if is_zoo and (student_spec or data_spec):
        raise UsageError("--student/--data are for your own teacher; zoo:minilm builds its student with --student-layers")
    if not is_zoo and teacher.startswith("zoo:"):
        raise UsageError(f"distillation example exists only for zoo:minilm, not {teacher}",
                         hint="pass your own teacher/student/data as package.module:callable entry points")
    if not is_zoo and (not student_spec or not data_spec):
        raise UsageError("a custom teacher needs --student and --data entry points", hint="e.g. --student mypkg.models:student --data mypkg.data:batches")
    from edgekit.core.outdir import OutDir

    outdir = OutDir(out_dir).open()  # locked now, staged, swapped in only when the run finished (as deploy's --out)
    try:
        if is_zoo:
            run = d.distill_minilm(num_layers=student_layers, steps=steps, batch_size=batch_size, lr=lr, train_sentences=train_sentences,
                                   eval_sentences=eval_sentences, threads=threads, progress=say)
            rep = d.minilm_report(run, outdir.stage, threads=threads, progress=say, shown=outdir.shown_path)
            text = d.render_minilm_markdown(rep)
        else:
            rep, text = _custom(teacher, student_spec, data_spec, kind, temperature, steps, lr, threads, outdir.stage, say, outdir.shown_path)
        outdir.commit()
    finally:
        outdir.abort()  # no-op after a commit; a failed run leaves --out as it was
    if as_json:
        print_json(rep)
    else:
        click.echo(text)


def _custom(teacher_spec, student_spec, data_spec, kind, temperature, steps, lr, threads, out_dir, say, shown=str):
    """General path: user modules and batches; saves the student's state_dict and a loss report."""
    from edgekit.workflows import distill as d
    from edgekit.core.compression import count_params, save_state
    from edgekit.core.fsutil import atomic_write_text, ensure_writable_dir

    out_dir = ensure_writable_dir(out_dir)
    teacher = _entry_point(teacher_spec, "teacher")
    student = _entry_point(student_spec, "student")
    data = list(_entry_point(data_spec, "data"))
    every = max(1, steps // 10)
    res = d.distill(teacher, student, data, kind=kind, temperature=temperature, steps=steps, lr=lr, threads=threads,
                    on_step=(lambda i, loss, parts: say and i % every == 0 and say(f"step {i + 1}/{steps} loss {loss:.5f}")))
    state = save_state(student, out_dir / "student.state.pt")
    rep = {"teacher": teacher_spec, "student": student_spec, "data": data_spec, "training": res.summary(),
           "losses": res.losses, "params": {"teacher": count_params(teacher), "student": count_params(student)},
           "student_state": shown(state)}
    atomic_write_text(out_dir / "report.json", json.dumps(rep, indent=2))
    text = (f"# Distilled student\n\nteacher {teacher_spec} ({rep['params']['teacher']} params) -> student {student_spec} "
            f"({rep['params']['student']} params); {res.steps} steps, {res.kind} loss {rep['training']['loss_first']} -> "
            f"{rep['training']['loss_last']}; state_dict saved to {rep['student_state']}\n")
    atomic_write_text(out_dir / "report.md", text)
    return rep, text
