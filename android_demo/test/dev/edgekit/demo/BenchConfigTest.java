package dev.edgekit.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.HashMap;
import java.util.Map;

import org.junit.Test;

/** Intent extras as `am start --ez/--ei/--ef/--es` deliver them (Boolean, Integer, Float, String). */
public class BenchConfigTest {
    @Test
    public void noExtrasGivesTheHarnessDefaults() {
        BenchConfig c = BenchConfig.fromExtras(new HashMap<String, Object>());
        assertFalse(c.benchmarkMode);
        assertEquals("litert-wasm", c.engine);
        assertEquals(10, c.warmupRuns);
        assertEquals(50, c.minRuns);
        assertEquals(5.0, c.minSeconds, 0);
        assertEquals(120.0, c.maxSeconds, 0);
    }

    @Test
    public void readsTypedExtras() {
        Map<String, Object> x = new HashMap<String, Object>();
        x.put("benchmark", Boolean.TRUE);
        x.put("warmup_runs", 3);
        x.put("min_runs", 20);
        x.put("min_seconds", 2.5f);
        x.put("max_seconds", "30");
        x.put("threads", 2);
        x.put("engine", "litert-native");
        BenchConfig c = BenchConfig.fromExtras(x);
        assertTrue(c.benchmarkMode);
        assertEquals(3, c.warmupRuns);
        assertEquals(20, c.minRuns);
        assertEquals(2.5, c.minSeconds, 0);
        assertEquals(30.0, c.maxSeconds, 0);
        assertEquals("litert-native", c.engine);
        assertEquals("{\"warmup_runs\":3,\"warmup_seconds\":1.0,\"min_runs\":20,\"min_seconds\":2.5,\"max_seconds\":30.0,\"threads\":2}", c.toJson());
    }

    @Test
    public void badExtrasNameTheExtra() {
        Map<String, Object> x = new HashMap<String, Object>();
        x.put("min_runs", 0);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> BenchConfig.fromExtras(x)).getMessage().contains("'min_runs'"));
        x.clear();
        x.put("engine", "tflite-gpu");
        assertTrue(assertThrows(IllegalArgumentException.class, () -> BenchConfig.fromExtras(x)).getMessage().contains("'engine'"));
        x.clear();
        x.put("benchmark", "yes");
        assertTrue(assertThrows(IllegalArgumentException.class, () -> BenchConfig.fromExtras(x)).getMessage().contains("'benchmark'"));
        x.clear();
        x.put("min_seconds", 10);
        x.put("max_seconds", 5);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> BenchConfig.fromExtras(x)).getMessage().contains("'max_seconds'"));
        x.clear();
        x.put("warmup_seconds", "abc");
        assertTrue(assertThrows(IllegalArgumentException.class, () -> BenchConfig.fromExtras(x)).getMessage().contains("must be a number"));
    }
}
