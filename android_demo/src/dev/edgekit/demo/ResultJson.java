package dev.edgekit.demo;

import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TimeZone;

/** The benchmark result in edgekit's BenchmarkResult schema (version 1), the same document the harness prints. */
public final class ResultJson {
    public static final int SCHEMA_VERSION = 1;

    private ResultJson() {
    }

    /**
     * Off the phone: `java dev.edgekit.demo.ResultJson input_spec.json page_result.json` prints the result document the
     * app would write for that engine-page output (the tests feed it a real litert-wasm run from headless Chromium).
     */
    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: ResultJson INPUT_SPEC.json PAGE_RESULT.json");
            System.exit(2);
        }
        InputSpec spec = InputSpec.parse(read(args[0]));
        RunRecord r = RunRecord.fromJson(read(args[1]));
        Map<String, Object> dev = device(java.net.InetAddress.getLocalHost().getHostName(), System.getProperty("os.arch"),
            System.getProperty("os.name"), System.getProperty("os.version"), null, Runtime.getRuntime().availableProcessors(),
            null, "JDK " + System.getProperty("java.version") + " (not a phone)");
        System.out.println(Json.write(build(spec, BenchConfig.defaults(), "litert-wasm", r, dev, null, new Date())));
    }

    private static String read(String path) throws java.io.IOException {
        return readAll(new java.io.FileInputStream(path));  // no java.nio.file below API 26
    }

    /** The whole stream as UTF-8 text; closes it (the app reads its assets with this too). */
    public static String readAll(java.io.InputStream in) throws java.io.IOException {
        try {
            java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
            byte[] buf = new byte[8192];
            int n;
            while ((n = in.read(buf)) > 0) {
                b.write(buf, 0, n);
            }
            return b.toString("UTF-8");
        } finally {
            in.close();
        }
    }

    /** A device record: Build.* and /proc facts gathered by the activity (hostname, arch, os, kernel, cores...). */
    public static Map<String, Object> device(String hostname, String arch, String os, String kernel, String cpuModel,
                                             int cores, Long memoryMb, String deviceModel) {
        Map<String, Object> d = new LinkedHashMap<String, Object>();
        d.put("hostname", hostname);
        d.put("arch", arch);
        d.put("os", os);
        d.put("kernel", kernel);
        d.put("python", "none (edgekit demo app)");
        d.put("cpu_model", cpuModel);
        d.put("cores", cores);
        d.put("memory_mb", memoryMb);
        d.put("device_model", deviceModel);
        return d;
    }

    public static Map<String, Object> build(InputSpec spec, BenchConfig config, String engine, RunRecord r,
                                            Map<String, Object> device, Double peakRssMb, Date now) {
        if (r.samplesMs.length == 0) {
            throw new IllegalArgumentException("the engine recorded no timed runs");
        }
        Map<String, Object> out = new LinkedHashMap<String, Object>();
        out.put("schema_version", SCHEMA_VERSION);
        SimpleDateFormat iso = new SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss'Z'", Locale.US);
        iso.setTimeZone(TimeZone.getTimeZone("UTC"));
        out.put("created", iso.format(now));
        out.put("runner", "android-app");
        out.put("host", null);

        Map<String, Object> model = new LinkedHashMap<String, Object>();
        model.put("path", "assets/" + spec.model);
        model.put("format", "tflite");
        model.put("sha256", spec.sha256);
        model.put("size_bytes", spec.sizeBytes);
        model.put("precision", spec.precision);
        out.put("model", model);

        Map<String, Object> rt = new LinkedHashMap<String, Object>();
        rt.put("name", engine);  // litert-wasm or litert-native: never reported as the other
        rt.put("version", r.engineVersion);
        rt.put("threads", config.threads);
        rt.put("providers", new ArrayList<Object>());
        Map<String, Object> opts = new LinkedHashMap<String, Object>();
        opts.put("engine", engine);
        rt.put("options", opts);
        out.put("runtime", rt);
        out.put("device", device);
        out.put("inputs", r.inputs);

        Map<String, Object> timing = new LinkedHashMap<String, Object>();
        timing.put("load_ms", r.loadMs);
        timing.put("first_inference_ms", r.firstInferenceMs);
        timing.put("warmup_runs", r.warmupRuns);
        timing.put("warmup_s", r.warmupSeconds);
        timing.put("runs", r.samplesMs.length);
        timing.put("duration_s", r.durationSeconds);
        timing.put("samples_ms", r.samplesMs);
        timing.put("stats", Stats.of(r.samplesMs));
        timing.put("throughput_ips", r.durationSeconds > 0 ? r.samplesMs.length / r.durationSeconds : 0.0);
        out.put("timing", timing);

        Map<String, Object> mem = new LinkedHashMap<String, Object>();
        mem.put("peak_rss_mb", peakRssMb);
        mem.put("rss_before_load_mb", null);
        mem.put("rss_after_load_mb", null);
        mem.put("source", peakRssMb != null ? "/proc/self/status VmHWM (app process)" : "unavailable");
        out.put("memory", mem);

        Map<String, Object> energy = new LinkedHashMap<String, Object>();
        energy.put("available", false);
        energy.put("reason", "the demo app does not sample the battery; the adb runner records battery and thermal readings around the run");
        out.put("energy", energy);

        Map<String, Object> thermal = new LinkedHashMap<String, Object>();
        thermal.put("before", new LinkedHashMap<String, Object>());
        thermal.put("after", new LinkedHashMap<String, Object>());
        thermal.put("throttled", null);
        thermal.put("notes", new ArrayList<Object>());
        out.put("thermal", thermal);

        List<Object> warnings = new ArrayList<Object>(r.warnings);
        if (engine.equals("litert-wasm")) {
            warnings.add("engine litert-wasm: LiteRT WebAssembly (XNNPack in WASM) inside a WebView; this is not the speed of native LiteRT on this phone");
        }
        if (r.capped) {
            warnings.add("timed phase stopped at max_seconds=" + config.maxSeconds + " before min_runs=" + config.minRuns);
        }
        out.put("warnings", warnings);
        return out;
    }
}
