package dev.edgekit.demo;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;

import org.junit.Test;

public class InputSpecTest {
    @Test
    public void readsTheSpecEdgekitWroteIntoTheApk() throws Exception {
        String path = System.getProperty("edgekit.input_spec");
        if (path == null) {
            throw new AssertionError("run through tests/android_demo/test_junit.py (it passes -Dedgekit.input_spec)");
        }
        InputSpec s = InputSpec.parse(new String(Files.readAllBytes(Paths.get(path)), StandardCharsets.UTF_8));
        assertEquals("model.tflite", s.model);
        assertEquals(1, s.inputs.size());
        InputSpec.Input in = s.inputs.get(0);
        assertEquals("input", in.name);
        assertArrayEquals(new long[] {1, 128, 128, 3}, in.shape);
        assertEquals("float32", in.dtype);
        assertEquals(1 * 128 * 128 * 3 * 4, in.byteSize());
        assertEquals("inputs/0.bin", in.file);
        assertEquals(64, s.sha256.length());
    }

    @Test
    public void randomInputsGetDefaultRanges() {
        InputSpec s = InputSpec.parse("{\"model\":\"m.tflite\",\"inputs\":[{\"name\":\"ids\",\"shape\":[1,8],\"dtype\":\"int32\"}]}");
        InputSpec.Input in = s.inputs.get(0);
        assertNull(in.file);
        assertEquals(0.0, in.low, 0);
        assertEquals(2.0, in.high, 0);
        assertEquals(32, in.byteSize());
    }

    @Test
    public void problemsNameTheField() {
        assertTrue(assertThrows(IllegalArgumentException.class, () -> InputSpec.parse("{\"inputs\":[]}")).getMessage().contains("'model'"));
        assertTrue(assertThrows(IllegalArgumentException.class,
            () -> InputSpec.parse("{\"model\":\"m\",\"inputs\":[{\"name\":\"x\",\"shape\":[1,\"N\"],\"dtype\":\"float32\"}]}"))
            .getMessage().contains("inputs[0].shape[1]"));
        assertTrue(assertThrows(IllegalArgumentException.class,
            () -> InputSpec.parse("{\"model\":\"m\",\"inputs\":[{\"name\":\"x\",\"shape\":[1],\"dtype\":\"complex64\"}]}"))
            .getMessage().contains("complex64"));
    }
}
