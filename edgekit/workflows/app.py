"""`edgekit app build`: the Android demo app with an edgekit-built .tflite embedded, built offline and signed.

No Gradle, no Maven: aapt (resources, R.java, packaging) -> javac (Java 8, against android.jar of API 23+) -> dx or
d8 (dex) -> aapt add classes.dex -> zipalign -p 4 -> apksigner (debug key made with keytool, cached). The model is
stored uncompressed (aapt -0 tflite) so the app can map it; its input spec goes to assets/input_spec.json. The
litert-wasm engine's LiteRT WebAssembly files come from a cached `npm install @litertjs/core`.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from edgekit.core.errors import EdgekitError, ModelLoadError

LITERTJS_VERSION = "2.5.3"
APP_PACKAGE = "dev.edgekit.demo"
MIN_API = 23
# the wasm variants loadLiteRt picks without threads/JSPI: relaxed-SIMD browsers get `internal`, others `compat`
LITERTJS_WASM = ("litert_wasm_internal", "litert_wasm_compat_internal")
DEBIAN_PACKAGES = {
    "aapt": "android-sdk-build-tools",
    "zipalign": "android-sdk-build-tools",
    "apksigner": "android-sdk-build-tools",
    "dx": "dalvik-exchange (Debian 11 bullseye; tests/boards/debfetch bullseye all DIR dalvik-exchange)",
    "android.jar": "android-sdk-platform-23 (Debian 11 bullseye, fetched the same way)",
    "javac": "default-jdk-headless",
    "keytool": "default-jdk-headless",
    "npm": "npm (for the LiteRT WebAssembly files; or set EDGEKIT_LITERTJS_DIR to an unpacked @litertjs/core)",
}


class AndroidToolsMissing(EdgekitError):
    """Build tools for the APK are not installed."""


class AppBuildError(EdgekitError):
    """A build tool failed."""


@dataclass
class AndroidTools:
    aapt: str
    zipalign: str
    apksigner: str
    dexer: str  # d8 or dx / dalvik-exchange
    android_jar: str
    javac: str
    keytool: str
    notes: List[str] = field(default_factory=list)

    @property
    def dexer_kind(self) -> str:
        return "d8" if os.path.basename(self.dexer).startswith("d8") else "dx"


def sdk_roots() -> List[Path]:
    roots = []
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        if os.environ.get(var):
            roots.append(Path(os.environ[var]))
    roots.append(Path("/usr/lib/android-sdk"))  # Debian's android-sdk-* packages
    return roots


def _version_key(p: str):
    return [int(x) if x.isdigit() else 0 for x in re.split(r"[.\-]", Path(p).parent.name)]


def find_tools() -> AndroidTools:
    """Build tools from $ANDROID_HOME / $ANDROID_SDK_ROOT / /usr/lib/android-sdk, then PATH; every missing one named."""
    found: Dict[str, Optional[str]] = {}
    for tool in ("aapt", "zipalign", "apksigner", "d8", "dx"):
        cands: List[str] = []
        for root in sdk_roots():
            cands += sorted(glob.glob(str(root / "build-tools" / "*" / tool)), key=_version_key, reverse=True)
        hit = next((c for c in cands if os.access(c, os.X_OK)), None)
        if hit is None:
            hit = shutil.which(tool) or (shutil.which("dalvik-exchange") if tool == "dx" else None)
        found[tool] = hit
    jars: List[str] = []
    for root in sdk_roots():
        for jar in glob.glob(str(root / "platforms" / "android-*" / "android.jar")):
            m = re.search(r"android-(\d+)", jar)
            if m and int(m.group(1)) >= MIN_API and os.path.exists(jar):
                jars.append(jar)
    jars.sort(key=lambda j: int(re.search(r"android-(\d+)", j).group(1)))
    found["android.jar"] = jars[0] if jars else None  # the lowest API >= 23: what the app is written against
    found["javac"] = shutil.which("javac")
    found["keytool"] = shutil.which("keytool")
    dexer = found["d8"] or found["dx"]
    missing = [name for name in ("aapt", "zipalign", "apksigner", "android.jar", "javac", "keytool") if not found[name]]
    if not dexer:
        missing.append("dx")
    if missing:
        how = "; ".join(f"{m}: {DEBIAN_PACKAGES[m]}" for m in missing)
        raise AndroidToolsMissing(
            f"cannot build the APK: {', '.join(missing)} not found (looked in {', '.join(str(r) for r in sdk_roots())} and PATH)",
            hint=f"Debian/Ubuntu packages — {how}. With Android Studio: set ANDROID_HOME to the SDK (build-tools and "
            f"platforms;android-{MIN_API} or newer installed).",
        )
    return AndroidTools(aapt=found["aapt"], zipalign=found["zipalign"], apksigner=found["apksigner"], dexer=dexer,
                        android_jar=found["android.jar"], javac=found["javac"], keytool=found["keytool"])


def app_source_dir() -> Path:
    """The android_demo/ project: shipped in the wheel as edgekit.android_demo, or the checkout's folder."""
    from importlib import resources

    try:
        p = Path(str(resources.files("edgekit.android_demo")))
        if (p / "AndroidManifest.xml").is_file():
            return p
    except ModuleNotFoundError:
        pass
    p = Path(__file__).resolve().parents[2] / "android_demo"
    if (p / "AndroidManifest.xml").is_file():
        return p
    raise EdgekitError("the android_demo sources are missing from this edgekit installation", hint="reinstall edgekit")


def cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("EDGEKIT_CACHE_DIR") or user_cache_dir("edgekit"))


def litertjs_dir(progress: Callable[[str], None] = lambda m: None) -> Path:
    """An unpacked @litertjs/core (with @litertjs/wasm-utils beside it): $EDGEKIT_LITERTJS_DIR, else a cached npm install."""
    env = os.environ.get("EDGEKIT_LITERTJS_DIR")
    if env:
        core = Path(env)
        if not (core / "dist" / "index.js").is_file():
            raise AppBuildError(f"EDGEKIT_LITERTJS_DIR={env} is not an unpacked @litertjs/core (no dist/index.js)",
                                hint="point it at node_modules/@litertjs/core of an npm install")
        return core
    prefix = cache_root() / "litertjs" / LITERTJS_VERSION
    core = prefix / "node_modules" / "@litertjs" / "core"
    if (core / "dist" / "index.js").is_file():
        return core
    npm = shutil.which("npm")
    if not npm:
        raise AndroidToolsMissing("cannot vendor LiteRT WebAssembly: npm not found",
                                  hint="apt-get install npm, or set EDGEKIT_LITERTJS_DIR to an unpacked @litertjs/core")
    progress(f"npm install @litertjs/core@{LITERTJS_VERSION} into {prefix} (once)")
    tmp = Path(tempfile.mkdtemp(prefix="litertjs-", dir=str(prefix.parent) if prefix.parent.exists() else None))
    try:
        cp = subprocess.run([npm, "install", "--prefix", str(tmp), "--no-audit", "--no-fund", "--no-save",
                             f"@litertjs/core@{LITERTJS_VERSION}"], capture_output=True, text=True, timeout=900)
        if cp.returncode != 0:
            raise AppBuildError(f"npm install @litertjs/core@{LITERTJS_VERSION} failed: {(cp.stderr or cp.stdout).strip()[-400:]}",
                                hint="check access to the npm registry, or set EDGEKIT_LITERTJS_DIR")
        prefix.parent.mkdir(parents=True, exist_ok=True)
        if prefix.exists():
            shutil.rmtree(prefix)
        os.replace(tmp, prefix)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return core


def vendor_litertjs(core: Path, dest: Path) -> str:
    """Copy the ESM entry, its one dependency (import rewritten to a relative path) and the non-threaded wasm files."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "wasm").mkdir(exist_ok=True)
    utils = core.parent / "wasm-utils" / "dist" / "bundle.js"
    if not utils.is_file():
        raise AppBuildError(f"{utils} missing: the @litertjs/core install is incomplete", hint="delete the cache folder and rebuild")
    src = (core / "dist" / "index.js").read_text()
    if '"@litertjs/wasm-utils"' not in src:
        raise AppBuildError(f"@litertjs/core at {core} does not import @litertjs/wasm-utils as expected",
                            hint=f"use @litertjs/core {LITERTJS_VERSION}")
    (dest / "index.js").write_text(src.replace('"@litertjs/wasm-utils"', '"./wasm-utils.js"'))
    shutil.copyfile(utils, dest / "wasm-utils.js")
    for name in LITERTJS_WASM:
        for ext in (".js", ".wasm"):
            shutil.copyfile(core / "wasm" / (name + ext), dest / "wasm" / (name + ext))
    return json.loads((core / "package.json").read_text()).get("version", "unknown")


def debug_keystore(keytool: str) -> Path:
    """A debug signing key, generated once with keytool and cached (like Android Studio's ~/.android/debug.keystore)."""
    ks = cache_root() / "android" / "debug.keystore"
    if ks.is_file():
        return ks
    ks.parent.mkdir(parents=True, exist_ok=True)
    tmp = ks.with_name(f".debug.keystore.{os.getpid()}.part")
    tmp.unlink(missing_ok=True)
    _run([keytool, "-genkeypair", "-keystore", str(tmp), "-storepass", "android", "-keypass", "android",
          "-alias", "androiddebugkey", "-keyalg", "RSA", "-keysize", "2048", "-validity", "10000",
          "-dname", "CN=Android Debug,O=Android,C=US", "-noprompt"], "keytool")
    os.replace(tmp, ks)
    return ks


def _run(argv: List[str], what: str, cwd: Optional[Path] = None) -> str:
    cp = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=900)
    if cp.returncode != 0:
        raise AppBuildError(f"{what} failed (exit {cp.returncode}): {(cp.stderr or cp.stdout).strip()[-800:]}",
                            hint=f"command: {' '.join(argv[:6])} ...")
    return cp.stdout


def input_spec(model: Path, inputs_npz: Optional[Path]) -> tuple[Dict[str, object], Dict[str, bytes]]:
    """assets/input_spec.json and the raw input files: from the model's signature, data from the .npz when given."""
    from edgekit.core.artifact import load_artifact

    art = load_artifact(model)
    if art.format != "tflite":
        raise ModelLoadError(f"{model}: the demo app embeds .tflite models, this is {art.format}",
                             hint="convert it first, e.g. edgekit deploy MODEL --profile android-arm64 --runtime tflite --no-bench --out out/")
    data: Dict[str, bytes] = {}
    arrays = None
    if inputs_npz is not None:
        import numpy as np

        try:
            arrays = dict(np.load(inputs_npz, allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{inputs_npz}: not a readable .npz ({exc})", hint="save inputs with numpy.savez(path, NAME=array)") from exc
    entries = []
    for i, t in enumerate(art.inputs):
        if not all(isinstance(d, int) and d > 0 for d in t.shape):
            raise ModelLoadError(f"{model}: input '{t.name}' has a symbolic shape {t.shape}; the app needs a concrete one",
                                 hint="convert with a fixed input shape (--shape NAME=1x3x640x640)")
        entry: Dict[str, object] = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
        if arrays is not None:
            if t.name not in arrays:
                raise ModelLoadError(f"{inputs_npz}: no array named '{t.name}' (has: {', '.join(arrays) or 'none'})",
                                     hint="key the .npz by the model's input names")
            a = arrays[t.name]
            if list(a.shape) != list(t.shape) or a.dtype.name != t.dtype:
                raise ModelLoadError(f"{inputs_npz}: '{t.name}' is {a.dtype.name}{list(a.shape)}, the model wants {t.dtype}{list(t.shape)}",
                                     hint="save the array with the model's shape and dtype")
            rel = f"inputs/{i}.bin"
            data[rel] = a.astype(a.dtype.newbyteorder("<")).tobytes()
            entry["file"] = rel
        elif t.dtype.startswith("int") or t.dtype.startswith("uint"):
            entry.update({"low": 0, "high": 2})
        else:
            entry.update({"low": 0.0, "high": 1.0})
        entries.append(entry)
    spec = {"model": "model.tflite", "sha256": art.sha256, "size_bytes": art.size_bytes, "precision": art.precision,
            "inputs": entries, "outputs": [o.model_dump() for o in art.outputs]}
    return spec, data


def prepare_assets(model: os.PathLike | str, dest: os.PathLike | str, inputs: Optional[os.PathLike | str] = None,
                   progress: Callable[[str], None] = lambda m: None) -> Dict[str, object]:
    """The app's assets with the model: web/ (engine page + vendored LiteRT.js), model.tflite, input_spec.json, inputs/."""
    model, dest = Path(model), Path(dest)
    spec, input_files = input_spec(model, Path(inputs) if inputs else None)
    core = litertjs_dir(progress)
    shutil.copytree(app_source_dir() / "assets", dest, dirs_exist_ok=True)
    shutil.copyfile(model, dest / "model.tflite")
    for rel, blob in input_files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(blob)
    spec["litertjs_version"] = vendor_litertjs(core, dest / "web" / "litert")
    (dest / "input_spec.json").write_text(json.dumps(spec, indent=1))
    return spec


def build_apk(model: os.PathLike | str, out: os.PathLike | str, inputs: Optional[os.PathLike | str] = None,
              progress: Callable[[str], None] = lambda m: None) -> Path:
    """Build, align and sign the demo APK with `model` embedded; written atomically to `out`."""
    model, out = Path(model), Path(out)
    if out.suffix != ".apk":
        raise EdgekitError(f"--out {out}: the output file must end in .apk")
    input_spec(model, Path(inputs) if inputs else None)  # a bad model or .npz fails before any tool is looked for
    tools = find_tools()
    keystore = debug_keystore(tools.keytool)
    src = app_source_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-apk-") as td:
        w = Path(td)
        assets = w / "assets"
        prepare_assets(model, assets, inputs, progress)
        gen, classes, dex = w / "gen", w / "classes", w / "dex"
        for d in (gen, classes, dex):
            d.mkdir()
        # the source manifest has no package attribute (Gradle's `namespace` sets it); aapt needs it in the file
        text = (src / "AndroidManifest.xml").read_text()
        manifest = w / "AndroidManifest.xml"
        manifest.write_text(text.replace("<manifest ", f'<manifest package="{APP_PACKAGE}" ', 1))
        res, jar = src / "res", tools.android_jar
        progress("aapt: resources and R.java")
        _run([tools.aapt, "package", "-f", "-m", "-J", str(gen), "-M", str(manifest), "-S", str(res), "-I", jar], "aapt (R.java)")
        # src/ only: src-native/ needs the LiteRT AAR (Gradle build)
        java = sorted(str(p) for p in (src / "src").rglob("*.java")) + sorted(str(p) for p in gen.rglob("*.java"))
        progress(f"javac: {len(java)} sources")
        _run([tools.javac, "-source", "8", "-target", "8", "-nowarn", "-Xlint:-options", "-encoding", "UTF-8",
              "-bootclasspath", jar, "-d", str(classes)] + java, "javac")
        progress(f"{tools.dexer_kind}: classes.dex")
        if tools.dexer_kind == "d8":
            _run([tools.dexer, "--release", "--min-api", str(MIN_API), "--lib", jar, "--output", str(dex)]
                 + [str(p) for p in classes.rglob("*.class")], "d8")
        else:
            _run([tools.dexer, "--dex", f"--min-sdk-version={MIN_API}", f"--output={dex / 'classes.dex'}", str(classes)], "dx")
        unaligned = w / "app.unaligned.apk"
        progress("aapt: package (model stored uncompressed)")
        _run([tools.aapt, "package", "-f", "-M", str(manifest), "-S", str(res), "-A", str(assets), "-I", jar,
              "-0", "tflite", "-0", "wasm", "-F", str(unaligned)], "aapt (package)")
        _run([tools.aapt, "add", str(unaligned), "classes.dex"], "aapt add classes.dex", cwd=dex)
        aligned = w / "app.aligned.apk"
        _run([tools.zipalign, "-f", "-p", "4", str(unaligned), str(aligned)], "zipalign")
        signed = w / "app.apk"
        progress("apksigner: sign with the cached debug key")
        _run([tools.apksigner, "sign", "--ks", str(keystore), "--ks-pass", "pass:android", "--key-pass", "pass:android",
              "--ks-key-alias", "androiddebugkey", "--min-sdk-version", str(MIN_API), "--out", str(signed), str(aligned)], "apksigner")
        with zipfile.ZipFile(signed) as z:
            info = z.getinfo("assets/model.tflite")
            if info.compress_type != zipfile.ZIP_STORED:
                raise AppBuildError("assets/model.tflite was compressed in the APK", hint="this is an edgekit bug; please report it")
        tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
        shutil.copyfile(signed, tmp)
        os.replace(tmp, out)
    return out
