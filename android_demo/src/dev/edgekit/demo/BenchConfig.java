package dev.edgekit.demo;

import java.util.Map;

/** How long to warm up and time, from the benchmark intent's extras (`am start ... --ei min_runs 50 ...`). */
public final class BenchConfig {
    public final boolean benchmarkMode;  // started by intent: run at once, write the JSON result, finish
    public final String engine;          // litert-wasm | litert-native
    public final int warmupRuns;
    public final double warmupSeconds;
    public final int minRuns;
    public final double minSeconds;
    public final double maxSeconds;
    public final int threads;

    public BenchConfig(boolean benchmarkMode, String engine, int warmupRuns, double warmupSeconds, int minRuns,
                       double minSeconds, double maxSeconds, int threads) {
        this.benchmarkMode = benchmarkMode;
        this.engine = engine;
        this.warmupRuns = warmupRuns;
        this.warmupSeconds = warmupSeconds;
        this.minRuns = minRuns;
        this.minSeconds = minSeconds;
        this.maxSeconds = maxSeconds;
        this.threads = threads;
    }

    /** The defaults are the harness's (10 warm-up runs / 1 s, >= 50 runs and >= 5 s, cap 120 s). */
    public static BenchConfig defaults() {
        return new BenchConfig(false, "litert-wasm", 10, 1.0, 50, 5.0, 120.0, 4);
    }

    /** Reads intent extras (a Bundle copied into a Map); a bad value names the extra. */
    public static BenchConfig fromExtras(Map<String, ?> extras) {
        BenchConfig d = defaults();
        String engine = str(extras, "engine", d.engine);
        if (!engine.equals("litert-wasm") && !engine.equals("litert-native")) {
            throw new IllegalArgumentException("extra 'engine' must be litert-wasm or litert-native, got '" + engine + "'");
        }
        BenchConfig c = new BenchConfig(
            bool(extras, "benchmark", false), engine,
            (int) num(extras, "warmup_runs", d.warmupRuns, 0), num(extras, "warmup_seconds", d.warmupSeconds, 0),
            (int) num(extras, "min_runs", d.minRuns, 1), num(extras, "min_seconds", d.minSeconds, 0),
            num(extras, "max_seconds", d.maxSeconds, 0), (int) num(extras, "threads", d.threads, 1));
        if (c.maxSeconds < c.minSeconds) {
            throw new IllegalArgumentException("extra 'max_seconds' (" + c.maxSeconds + ") is below 'min_seconds' (" + c.minSeconds + ")");
        }
        return c;
    }

    private static String str(Map<String, ?> m, String k, String dflt) {
        Object v = m.get(k);
        return v == null ? dflt : v.toString();
    }

    private static boolean bool(Map<String, ?> m, String k, boolean dflt) {
        Object v = m.get(k);
        if (v == null) {
            return dflt;
        }
        if (v instanceof Boolean) {
            return (Boolean) v;
        }
        String s = v.toString();
        if (s.equals("true") || s.equals("1")) {
            return true;
        }
        if (s.equals("false") || s.equals("0")) {
            return false;
        }
        throw new IllegalArgumentException("extra '" + k + "' must be true or false, got '" + s + "'");
    }

    private static double num(Map<String, ?> m, String k, double dflt, double min) {
        Object v = m.get(k);
        double d;
        if (v == null) {
            return dflt;
        } else if (v instanceof Number) {
            d = ((Number) v).doubleValue();
        } else {
            try {
                d = Double.parseDouble(v.toString());
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("extra '" + k + "' must be a number, got '" + v + "'");
            }
        }
        if (Double.isNaN(d) || d < min) {
            throw new IllegalArgumentException("extra '" + k + "' must be >= " + min + ", got " + v);
        }
        return d;
    }

    /** For the JS engine page: the same settings as a JSON object. */
    public String toJson() {
        return "{\"warmup_runs\":" + warmupRuns + ",\"warmup_seconds\":" + warmupSeconds + ",\"min_runs\":" + minRuns
            + ",\"min_seconds\":" + minSeconds + ",\"max_seconds\":" + maxSeconds + ",\"threads\":" + threads + "}";
    }
}
