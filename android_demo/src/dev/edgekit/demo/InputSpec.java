package dev.edgekit.demo;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/** The model's input spec that `edgekit app build` writes to assets/input_spec.json (names, shapes, dtypes, data files). */
public final class InputSpec {
    /** One model input: random data in [low, high) unless `file` (raw little-endian, under assets/) is given. */
    public static final class Input {
        public final String name;
        public final long[] shape;
        public final String dtype;
        public final double low;
        public final double high;
        public final String file;

        Input(String name, long[] shape, String dtype, double low, double high, String file) {
            this.name = name;
            this.shape = shape;
            this.dtype = dtype;
            this.low = low;
            this.high = high;
            this.file = file;
        }

        public long elements() {
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            return n;
        }

        public long byteSize() {
            return elements() * itemSize(dtype);
        }
    }

    public final String model;
    public final String sha256;
    public final long sizeBytes;
    public final String precision;
    public final List<Input> inputs;

    private InputSpec(String model, String sha256, long sizeBytes, String precision, List<Input> inputs) {
        this.model = model;
        this.sha256 = sha256;
        this.sizeBytes = sizeBytes;
        this.precision = precision;
        this.inputs = Collections.unmodifiableList(inputs);
    }

    public static int itemSize(String dtype) {
        if (dtype.equals("float32") || dtype.equals("int32") || dtype.equals("uint32")) {
            return 4;
        }
        if (dtype.equals("int64") || dtype.equals("float64")) {
            return 8;
        }
        if (dtype.equals("float16") || dtype.equals("int16")) {
            return 2;
        }
        if (dtype.equals("int8") || dtype.equals("uint8") || dtype.equals("bool")) {
            return 1;
        }
        throw new IllegalArgumentException("input dtype '" + dtype + "' is not supported by the demo app");
    }

    /** Parses and checks input_spec.json; every problem names the field. */
    @SuppressWarnings("unchecked")
    public static InputSpec parse(String json) {
        Object root = Json.parse(json);
        if (!(root instanceof Map)) {
            throw new IllegalArgumentException("input_spec.json: expected an object");
        }
        Map<String, Object> m = (Map<String, Object>) root;
        Object model = m.get("model");
        if (!(model instanceof String)) {
            throw new IllegalArgumentException("input_spec.json: 'model' (the asset name of the .tflite) is missing");
        }
        Object ins = m.get("inputs");
        if (!(ins instanceof List) || ((List<Object>) ins).isEmpty()) {
            throw new IllegalArgumentException("input_spec.json: 'inputs' must be a non-empty list");
        }
        List<Input> out = new ArrayList<Input>();
        int k = 0;
        for (Object o : (List<Object>) ins) {
            String where = "input_spec.json: inputs[" + k + "]";
            if (!(o instanceof Map)) {
                throw new IllegalArgumentException(where + " must be an object");
            }
            Map<String, Object> im = (Map<String, Object>) o;
            Object name = im.get("name");
            Object shape = im.get("shape");
            Object dtype = im.get("dtype");
            if (!(name instanceof String)) {
                throw new IllegalArgumentException(where + ".name is missing");
            }
            if (!(shape instanceof List)) {
                throw new IllegalArgumentException(where + ".shape must be a list of positive integers");
            }
            List<Object> sl = (List<Object>) shape;
            long[] dims = new long[sl.size()];
            for (int j = 0; j < dims.length; j++) {
                Object d = sl.get(j);
                if (!(d instanceof Long) || (Long) d <= 0) {
                    throw new IllegalArgumentException(where + ".shape[" + j + "] must be a positive integer (concrete shape), got " + d);
                }
                dims[j] = (Long) d;
            }
            if (!(dtype instanceof String)) {
                throw new IllegalArgumentException(where + ".dtype is missing");
            }
            itemSize((String) dtype);
            boolean isFloat = ((String) dtype).startsWith("float");
            double low = im.get("low") instanceof Number ? ((Number) im.get("low")).doubleValue() : (isFloat ? 0.0 : 0.0);
            double high = im.get("high") instanceof Number ? ((Number) im.get("high")).doubleValue() : (isFloat ? 1.0 : 2.0);
            Object file = im.get("file");
            out.add(new Input((String) name, dims, (String) dtype, low, high, file instanceof String ? (String) file : null));
            k++;
        }
        long size = m.get("size_bytes") instanceof Long ? (Long) m.get("size_bytes") : -1;
        return new InputSpec((String) model, m.get("sha256") instanceof String ? (String) m.get("sha256") : null, size,
            m.get("precision") instanceof String ? (String) m.get("precision") : null, out);
    }
}
