package dev.edgekit.demo;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/** Latency statistics exactly as the edgekit harness computes them (numpy mean/median, linear percentiles, std ddof=1). */
public final class Stats {
    private Stats() {
    }

    /** numpy.percentile's default ("linear"): interpolate between the closest ranks of the sorted samples. */
    public static double percentile(double[] sorted, double q) {
        if (sorted.length == 0) {
            throw new IllegalArgumentException("no samples");
        }
        double pos = (sorted.length - 1) * q / 100.0;
        int lo = (int) Math.floor(pos);
        int hi = Math.min(lo + 1, sorted.length - 1);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
    }

    /** The harness's `timing.stats` record: mean/median/p90/p99/min/max/std in ms. */
    public static Map<String, Object> of(double[] samplesMs) {
        if (samplesMs.length == 0) {
            throw new IllegalArgumentException("no samples");
        }
        double[] a = samplesMs.clone();
        Arrays.sort(a);
        double sum = 0;
        for (double v : a) {
            sum += v;
        }
        double mean = sum / a.length;
        double ss = 0;
        for (double v : a) {
            ss += (v - mean) * (v - mean);
        }
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("mean_ms", mean);
        m.put("median_ms", percentile(a, 50));
        m.put("p90_ms", percentile(a, 90));
        m.put("p99_ms", percentile(a, 99));
        m.put("min_ms", a[0]);
        m.put("max_ms", a[a.length - 1]);
        m.put("std_ms", a.length > 1 ? Math.sqrt(ss / (a.length - 1)) : 0.0);
        return m;
    }
}
