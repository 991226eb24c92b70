package dev.edgekit.demo;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** What one engine measured: load, first inference, warm-up, every timed sample, and output checksums. */
public final class RunRecord {
    public String engineVersion = "unknown";
    public double loadMs;
    public double firstInferenceMs;
    public int warmupRuns;
    public double warmupSeconds;
    public double[] samplesMs = new double[0];
    public double durationSeconds;
    public boolean capped;
    public final List<String> warnings = new ArrayList<String>();
    public final List<Map<String, Object>> inputs = new ArrayList<Map<String, Object>>();

    /** Reads the JSON the WebAssembly engine page reports (same field names as here). */
    @SuppressWarnings("unchecked")
    public static RunRecord fromJson(String json) {
        Map<String, Object> m = (Map<String, Object>) Json.parse(json);
        if (m.get("error") != null) {
            throw new IllegalStateException("engine page failed: " + m.get("error"));
        }
        RunRecord r = new RunRecord();
        r.engineVersion = String.valueOf(m.get("engine_version"));
        r.loadMs = ((Number) m.get("load_ms")).doubleValue();
        r.firstInferenceMs = ((Number) m.get("first_inference_ms")).doubleValue();
        r.warmupRuns = ((Number) m.get("warmup_runs")).intValue();
        r.warmupSeconds = ((Number) m.get("warmup_s")).doubleValue();
        r.durationSeconds = ((Number) m.get("duration_s")).doubleValue();
        r.capped = Boolean.TRUE.equals(m.get("capped"));
        List<Object> s = (List<Object>) m.get("samples_ms");
        r.samplesMs = new double[s.size()];
        for (int i = 0; i < r.samplesMs.length; i++) {
            r.samplesMs[i] = ((Number) s.get(i)).doubleValue();
        }
        if (m.get("inputs") instanceof List) {
            for (Object o : (List<Object>) m.get("inputs")) {
                r.inputs.add((Map<String, Object>) o);
            }
        }
        if (m.get("warnings") instanceof List) {
            for (Object o : (List<Object>) m.get("warnings")) {
                r.warnings.add(String.valueOf(o));
            }
        }
        return r;
    }
}
