package dev.edgekit.demo;

import android.content.Context;
import android.content.res.AssetManager;

import com.google.ai.edge.litert.Accelerator;
import com.google.ai.edge.litert.CompiledModel;
import com.google.ai.edge.litert.TensorBuffer;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * litert-native: LiteRT's CompiledModel API from the com.google.ai.edge.litert AAR, on the CPU (XNNPack).
 * Only in the Gradle build (Android Studio): the offline `edgekit app build` has no AAR and leaves this file out.
 * NOT compiled or run on edgekit's CI; written against LiteRT's documented Kotlin API (CompiledModel.create,
 * createInputBuffers/createOutputBuffers, TensorBuffer.writeFloat/writeInt/writeInt8, run).
 */
public final class NativeLiteRtEngine implements Engine {
    private final AssetManager assets;

    public NativeLiteRtEngine(Context context) {
        this.assets = context.getAssets();
    }

    @Override
    public String name() {
        return "litert-native";
    }

    @Override
    public RunRecord run(InputSpec spec, BenchConfig config) throws Exception {
        RunRecord r = new RunRecord();
        r.engineVersion = "com.google.ai.edge.litert (AAR, CPU)";
        long t0 = System.nanoTime();
        CompiledModel.Options options = new CompiledModel.Options(Accelerator.CPU);
        options.setCpuOptions(new CompiledModel.CpuOptions(config.threads, null, null));
        CompiledModel model = CompiledModel.create(assets, spec.model, options, null);
        List<TensorBuffer> inputs = model.createInputBuffers();
        List<TensorBuffer> outputs = model.createOutputBuffers();
        if (inputs.size() != spec.inputs.size()) {
            throw new IllegalStateException("the model has " + inputs.size() + " inputs, input_spec.json lists " + spec.inputs.size());
        }
        Random rng = new Random(0);
        for (int i = 0; i < inputs.size(); i++) {
            write(inputs.get(i), spec.inputs.get(i), rng, r);
        }
        r.loadMs = (System.nanoTime() - t0) / 1e6;
        long s = System.nanoTime();
        model.run(inputs, outputs);
        r.firstInferenceMs = (System.nanoTime() - s) / 1e6;
        // the harness's rules: warm-up by count AND time, then >= min_runs AND >= min_seconds, capped at max_seconds
        long w0 = System.nanoTime();
        int w = 0;
        while (w < config.warmupRuns || (System.nanoTime() - w0) / 1e9 < config.warmupSeconds) {
            model.run(inputs, outputs);
            w++;
        }
        r.warmupRuns = w;
        r.warmupSeconds = (System.nanoTime() - w0) / 1e9;
        double[] samples = new double[Math.max(16, config.minRuns)];
        int n = 0;
        long start = System.nanoTime();
        long t1 = start;
        while (true) {
            long a = System.nanoTime();
            model.run(inputs, outputs);
            t1 = System.nanoTime();
            if (n == samples.length) {
                samples = java.util.Arrays.copyOf(samples, n * 2);
            }
            samples[n++] = (t1 - a) / 1e6;
            double elapsed = (t1 - start) / 1e9;
            if (n >= config.minRuns && elapsed >= config.minSeconds) {
                break;
            }
            if (elapsed >= config.maxSeconds) {
                r.capped = true;
                break;
            }
        }
        r.samplesMs = java.util.Arrays.copyOf(samples, n);
        r.durationSeconds = (t1 - start) / 1e9;
        for (TensorBuffer b : inputs) {
            b.close();
        }
        for (TensorBuffer b : outputs) {
            b.close();
        }
        model.close();
        return r;
    }

    private void write(TensorBuffer buf, InputSpec.Input in, Random rng, RunRecord r) throws IOException {
        int n = (int) in.elements();
        ByteBuffer bytes = null;
        if (in.file != null) {
            bytes = ByteBuffer.wrap(readAsset(in.file)).order(ByteOrder.LITTLE_ENDIAN);
        }
        Map<String, Object> rec = new HashMap<String, Object>();
        rec.put("name", in.name);
        rec.put("dtype", in.dtype);
        rec.put("source", bytes != null ? "file" : "random");
        r.inputs.add(rec);
        if (in.dtype.equals("float32")) {
            float[] a = new float[n];
            for (int i = 0; i < n; i++) {
                a[i] = bytes != null ? bytes.getFloat() : (float) (in.low + (in.high - in.low) * rng.nextDouble());
            }
            buf.writeFloat(a);
        } else if (in.dtype.equals("int32")) {
            int[] a = new int[n];
            for (int i = 0; i < n; i++) {
                a[i] = bytes != null ? bytes.getInt() : (int) Math.floor(in.low + (in.high - in.low) * rng.nextDouble());
            }
            buf.writeInt(a);
        } else if (in.dtype.equals("int8") || in.dtype.equals("uint8")) {
            byte[] a = new byte[n];
            for (int i = 0; i < n; i++) {
                a[i] = bytes != null ? bytes.get() : (byte) Math.floor(in.low + (in.high - in.low) * rng.nextDouble());
            }
            buf.writeInt8(a);
        } else {
            throw new IllegalArgumentException("input " + in.name + ": dtype " + in.dtype + " is not supported by the LiteRT Kotlin API");
        }
    }

    private byte[] readAsset(String name) throws IOException {
        InputStream in = assets.open(name);
        try {
            ByteArrayOutputStream b = new ByteArrayOutputStream();
            byte[] chunk = new byte[1 << 16];
            int k;
            while ((k = in.read(chunk)) > 0) {
                b.write(chunk, 0, k);
            }
            return b.toByteArray();
        } finally {
            in.close();
        }
    }
}
