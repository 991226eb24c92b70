package dev.edgekit.demo;

import android.app.Activity;
import android.os.Build;
import android.os.Bundle;
import android.util.Log;
import android.view.View;
import android.webkit.WebView;
import android.widget.Button;
import android.widget.TextView;

import java.io.BufferedReader;
import java.io.File;
import java.io.FileOutputStream;
import java.io.FileReader;
import java.io.IOException;
import java.util.Date;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/**
 * Runs the in-app benchmark of the embedded model. Started from the launcher: a button and the results on screen.
 * Started by `am start -n dev.edgekit.demo/.MainActivity --ez benchmark true [--ei min_runs N ...]` (the adb runner):
 * runs at once, writes files/result.json (the edgekit BenchmarkResult schema) and finishes.
 */
public class MainActivity extends Activity {
    static final String TAG = "edgekit";

    private TextView status;
    private WebView engineView;

    @Override
    protected void onCreate(Bundle savedInstanceState) {
        super.onCreate(savedInstanceState);
        setContentView(R.layout.activity_main);
        status = (TextView) findViewById(R.id.status);
        engineView = (WebView) findViewById(R.id.engine_view);
        Button run = (Button) findViewById(R.id.run);
        final BenchConfig config;
        try {
            config = BenchConfig.fromExtras(extras(getIntent() != null ? getIntent().getExtras() : null));
        } catch (IllegalArgumentException e) {
            fail(e.getMessage(), true);
            return;
        }
        run.setOnClickListener(new View.OnClickListener() {
            @Override
            public void onClick(View v) {
                start(config);
            }
        });
        if (config.benchmarkMode) {
            start(config);
        }
    }

    static Map<String, Object> extras(Bundle b) {
        Map<String, Object> m = new HashMap<String, Object>();
        if (b != null) {
            for (String k : b.keySet()) {
                m.put(k, b.get(k));
            }
        }
        return m;
    }

    Engine engine(String name) throws Exception {
        if (name.equals("litert-wasm")) {
            return new WasmEngine(this, engineView);
        }
        // present only in the Gradle build (src-native/, the LiteRT AAR); the offline build has no native engine
        try {
            Class<?> c = Class.forName("dev.edgekit.demo.NativeLiteRtEngine");
            return (Engine) c.getConstructor(android.content.Context.class).newInstance(this);
        } catch (ClassNotFoundException e) {
            throw new IllegalStateException("engine litert-native is not in this build (it needs the Gradle build with the LiteRT AAR)");
        }
    }

    private void start(final BenchConfig config) {
        status.setText("running " + config.engine + " …");
        new Thread(new Runnable() {
            @Override
            public void run() {
                try {
                    InputSpec spec = InputSpec.parse(readAsset("input_spec.json"));
                    Engine e = engine(config.engine);
                    RunRecord r = e.run(spec, config);
                    Map<String, Object> result = ResultJson.build(spec, config, e.name(), r, device(), peakRssMb(), new Date());
                    final String json = Json.write(result);
                    if (config.benchmarkMode) {
                        writeResult(json);
                    }
                    @SuppressWarnings("unchecked")
                    final Map<String, Object> st = (Map<String, Object>) ((Map<String, Object>) result.get("timing")).get("stats");
                    final String text = String.format(Locale.US,
                        "engine %s (%s)\nmodel %s\nruns %d, median %.2f ms, p90 %.2f ms, mean %.2f ms\n%s",
                        e.name(), r.engineVersion, spec.model, r.samplesMs.length, (Double) st.get("median_ms"),
                        (Double) st.get("p90_ms"), (Double) st.get("mean_ms"),
                        e.name().equals("litert-wasm") ? "(WebAssembly in a WebView: not native LiteRT speed)" : "");
                    runOnUiThread(new Runnable() {
                        @Override
                        public void run() {
                            status.setText(text);
                            if (config.benchmarkMode) {
                                finish();
                            }
                        }
                    });
                } catch (Exception ex) {
                    fail(ex.toString(), config.benchmarkMode);
                }
            }
        }).start();
    }

    private void fail(final String message, final boolean benchmarkMode) {
        Log.e(TAG, message);
        if (benchmarkMode) {
            Map<String, Object> err = new HashMap<String, Object>();
            err.put("error", message);
            try {
                writeResult(Json.write(err));
            } catch (IOException e) {
                Log.e(TAG, "cannot write the error result: " + e);
            }
        }
        runOnUiThread(new Runnable() {
            @Override
            public void run() {
                status.setText("error: " + message);
            }
        });
    }

    /** Written to a temp name and renamed, so the adb runner never pulls a half-written file. */
    private void writeResult(String json) throws IOException {
        File dir = getExternalFilesDir(null);
        if (dir == null) {
            dir = getFilesDir();
        }
        File tmp = new File(dir, "result.json.part");
        FileOutputStream out = new FileOutputStream(tmp);
        try {
            out.write(json.getBytes("UTF-8"));
        } finally {
            out.close();
        }
        if (!tmp.renameTo(new File(dir, "result.json"))) {
            throw new IOException("cannot rename " + tmp);
        }
    }

    private String readAsset(String name) throws IOException {
        return ResultJson.readAll(getAssets().open(name));
    }

    private Map<String, Object> device() {
        return ResultJson.device(Build.DEVICE, System.getProperty("os.arch"), "Android " + Build.VERSION.RELEASE + " (API " + Build.VERSION.SDK_INT + ")",
            System.getProperty("os.version"), Build.HARDWARE, Runtime.getRuntime().availableProcessors(), null,
            Build.MANUFACTURER + " " + Build.MODEL);
    }

    /** VmHWM of this process (the WebView renderer is a separate process and is not included). */
    private Double peakRssMb() {
        try {
            BufferedReader r = new BufferedReader(new FileReader("/proc/self/status"));
            try {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.startsWith("VmHWM:")) {
                        return Double.parseDouble(line.replaceAll("[^0-9]", "")) / 1024.0;
                    }
                }
            } finally {
                r.close();
            }
        } catch (IOException | NumberFormatException e) {
            Log.w(TAG, "no VmHWM: " + e);
        }
        return null;
    }
}
