package dev.edgekit.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertThrows;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;

import org.junit.Test;

/** Stats must equal the harness's numpy statistics; the pytest driver writes samples + numpy's answers to a file. */
public class StatsTest {
    @Test
    public void matchesTheHarnessOnItsOwnNumbers() throws Exception {
        String path = System.getProperty("edgekit.stats.fixture");
        if (path == null) {
            throw new AssertionError("run through tests/android_demo/test_junit.py (it passes -Dedgekit.stats.fixture)");
        }
        @SuppressWarnings("unchecked")
        List<Object> cases = (List<Object>) Json.parse(new String(Files.readAllBytes(Paths.get(path)), StandardCharsets.UTF_8));
        for (Object o : cases) {
            @SuppressWarnings("unchecked")
            Map<String, Object> c = (Map<String, Object>) o;
            @SuppressWarnings("unchecked")
            List<Object> s = (List<Object>) c.get("samples_ms");
            double[] a = new double[s.size()];
            for (int i = 0; i < a.length; i++) {
                a[i] = ((Number) s.get(i)).doubleValue();
            }
            @SuppressWarnings("unchecked")
            Map<String, Object> want = (Map<String, Object>) c.get("stats");
            Map<String, Object> got = Stats.of(a);
            assertEquals(want.keySet(), got.keySet());
            for (String k : want.keySet()) {
                double w = ((Number) want.get(k)).doubleValue();
                assertEquals(k + " of " + a.length + " samples", w, (Double) got.get(k), 1e-9 * Math.max(1.0, Math.abs(w)));
            }
        }
    }

    @Test
    public void percentileInterpolatesBetweenRanks() {
        double[] sorted = {1, 2, 3, 4};
        assertEquals(2.5, Stats.percentile(sorted, 50), 0);
        assertEquals(3.7, Stats.percentile(sorted, 90), 1e-12);
        assertEquals(1.0, Stats.percentile(sorted, 0), 0);
        assertEquals(4.0, Stats.percentile(sorted, 100), 0);
    }

    @Test
    public void oneSampleHasZeroStd() {
        assertEquals(0.0, (Double) Stats.of(new double[] {5.0}).get("std_ms"), 0);
    }

    @Test
    public void noSamplesIsAnError() {
        assertThrows(IllegalArgumentException.class, () -> Stats.of(new double[0]));
    }
}
