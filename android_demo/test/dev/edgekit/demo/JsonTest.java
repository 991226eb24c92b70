package dev.edgekit.demo;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.junit.Test;

public class JsonTest {
    @Test
    @SuppressWarnings("unchecked")
    public void parsesNestedDocuments() {
        Map<String, Object> m = (Map<String, Object>) Json.parse(" {\"a\": [1, 2.5, -3e2], \"b\": {\"c\": null, \"d\": true}, \"e\": \"x\\\"y\\u00e9\"} ");
        assertEquals(Arrays.asList(1L, 2.5, -300.0), m.get("a"));
        assertNull(((Map<String, Object>) m.get("b")).get("c"));
        assertEquals(Boolean.TRUE, ((Map<String, Object>) m.get("b")).get("d"));
        assertEquals("x\"y\u00e9", m.get("e"));
    }

    @Test
    public void writesWhatItReads() {
        Map<String, Object> m = new LinkedHashMap<String, Object>();
        m.put("s", "tab\there \"q\" \\ \n");
        m.put("n", 3);
        m.put("d", new double[] {1.5, Double.NaN});
        m.put("l", Arrays.asList((Object) "a", null, false));
        String text = Json.write(m);
        assertEquals("{\"s\":\"tab\\there \\\"q\\\" \\\\ \\n\",\"n\":3,\"d\":[1.5,null],\"l\":[\"a\",null,false]}", text);
        @SuppressWarnings("unchecked")
        Map<String, Object> back = (Map<String, Object>) Json.parse(text);
        assertEquals(m.get("s"), back.get("s"));
        assertEquals(Arrays.asList(1.5, null), back.get("d"));
    }

    @Test
    public void rejectsBrokenInputWithTheOffset() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Json.parse("{\"a\": [1, 2}"));
        assertTrue(e.getMessage(), e.getMessage().contains("offset 11"));
        assertThrows(IllegalArgumentException.class, () -> Json.parse("[1] x"));
        assertThrows(IllegalArgumentException.class, () -> Json.parse("\"open"));
        List<Object> empty = (List<Object>) Json.parse("[]");
        assertTrue(empty.isEmpty());
    }
}
