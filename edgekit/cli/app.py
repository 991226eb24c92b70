"""`edgekit app`: the Android demo app."""

from __future__ import annotations

import click

from edgekit.cli.common import console, progress_printer


def _model_options(out_help: str, out_type):
    """--model, --inputs, --out, --quiet: what both `app` commands take."""

    def wrap(f):
        f = click.option("--quiet", "-q", is_flag=True, help="No progress lines.")(f)
        f = click.option("--out", "-o", required=True, type=out_type, help=out_help)(f)
        f = click.option("--inputs", type=click.Path(dir_okay=False), default=None,
                         help=".npz keyed by input name: the app feeds these instead of seeded random data.")(f)
        return click.option("--model", "-m", required=True, type=click.Path(dir_okay=False),
                            help="The .tflite to embed (stored uncompressed).")(f)

    return wrap


@click.group()
def app():
    """Build the Android demo app that embeds an edgekit-built .tflite and benchmarks it on the phone."""


@app.command()
@_model_options("Where to write the signed APK (e.g. demo.apk).", click.Path(dir_okay=False))
def build(model, inputs, out, quiet):
    """Build, align and sign the demo APK offline (aapt, javac, dx/d8, zipalign, apksigner).

    \b
    Tools come from $ANDROID_HOME / $ANDROID_SDK_ROOT, /usr/lib/android-sdk or PATH.
    Examples:
      edgekit app build --model out/model.tflite --out demo.apk
      adb install -r demo.apk
      adb shell am start -n dev.edgekit.demo/.MainActivity --ez benchmark true --ei min_runs 50
    """
    import time

    from edgekit.workflows.app import build_apk

    t0 = time.perf_counter()
    path = build_apk(model, out, inputs=inputs, progress=progress_printer(not quiet))
    console().print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")


@app.command()
@_model_options("Folder for the assets (Gradle: android_demo/build/edgekit-assets).", click.Path(file_okay=False))
def assets(model, inputs, out, quiet):
    """Write the app's assets (model, input spec, LiteRT WebAssembly) for the Gradle / Android Studio build.

    \b
    Example:
      edgekit app assets --model out/model.tflite --out android_demo/build/edgekit-assets
    """
    from pathlib import Path

    from edgekit.workflows.app import prepare_assets

    spec = prepare_assets(model, Path(out), inputs=inputs, progress=progress_printer(not quiet))
    console().print(f"wrote {out}: model.tflite ({spec['size_bytes']} bytes), input_spec.json, web/ (@litertjs/core {spec['litertjs_version']})")
