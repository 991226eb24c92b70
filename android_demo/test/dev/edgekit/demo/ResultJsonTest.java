package dev.edgekit.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.Date;
import java.util.List;
import java.util.Map;

import org.junit.Test;

/** The app's result document; the pytest driver validates the written file with edgekit's BenchmarkResult schema. */
public class ResultJsonTest {
    static final String PAGE = "{\"engine\":\"litert-wasm\",\"engine_version\":\"@litertjs/core 2.5.3\",\"load_ms\":120.5,"
        + "\"first_inference_ms\":9.0,\"warmup_runs\":3,\"warmup_s\":0.02,\"samples_ms\":[4.0,5.0,6.0,7.0],\"duration_s\":0.022,"
        + "\"capped\":false,\"inputs\":[{\"name\":\"input\",\"shape\":[1,128,128,3],\"dtype\":\"float32\",\"source\":\"random\"}],"
        + "\"warnings\":[],\"outputs\":null}";

    @Test
    @SuppressWarnings("unchecked")
    public void buildsTheHarnessSchemaAndNamesTheEngine() throws Exception {
        InputSpec spec = InputSpec.parse("{\"model\":\"model.tflite\",\"sha256\":\"ab\",\"size_bytes\":229032,\"precision\":\"fp32\","
            + "\"inputs\":[{\"name\":\"input\",\"shape\":[1,128,128,3],\"dtype\":\"float32\"}]}");
        RunRecord r = RunRecord.fromJson(PAGE);
        Map<String, Object> dev = ResultJson.device("phone", "aarch64", "Android 14 (API 34)", "5.15", "qcom", 8, 7800L, "Google Pixel 8");
        Map<String, Object> m = ResultJson.build(spec, BenchConfig.defaults(), "litert-wasm", r, dev, 210.0, new Date(0));
        assertEquals("1970-01-01T00:00:00Z", m.get("created"));
        Map<String, Object> rt = (Map<String, Object>) m.get("runtime");
        assertEquals("litert-wasm", rt.get("name"));
        Map<String, Object> timing = (Map<String, Object>) m.get("timing");
        assertEquals(4, timing.get("runs"));
        assertEquals(5.5, (Double) ((Map<String, Object>) timing.get("stats")).get("median_ms"), 1e-12);
        assertEquals(4 / 0.022, (Double) timing.get("throughput_ips"), 1e-9);
        List<Object> warnings = (List<Object>) m.get("warnings");
        assertTrue(warnings.toString(), warnings.toString().contains("not the speed of native LiteRT"));
        String out = System.getProperty("edgekit.result.out");
        if (out != null) {
            Files.write(Paths.get(out), Json.write(m).getBytes(StandardCharsets.UTF_8));
        }
    }

    @Test
    public void nativeEngineCarriesNoWasmCaveatAndCappedRunsAreSaid() {
        InputSpec spec = InputSpec.parse("{\"model\":\"model.tflite\",\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"dtype\":\"float32\"}]}");
        RunRecord r = RunRecord.fromJson(PAGE.replace("\"capped\":false", "\"capped\":true"));
        Map<String, Object> m = ResultJson.build(spec, BenchConfig.defaults(), "litert-native", r,
            ResultJson.device("h", "aarch64", "Android", "k", null, 8, null, null), null, new Date());
        String w = m.get("warnings").toString();
        assertTrue(w, !w.contains("WebAssembly") && w.contains("max_seconds"));
    }

    @Test
    public void aFailedPageIsAnError() {
        IllegalStateException e = org.junit.Assert.assertThrows(IllegalStateException.class,
            () -> RunRecord.fromJson("{\"error\":\"TypeError: x\"}"));
        assertTrue(e.getMessage().contains("TypeError"));
    }
}
