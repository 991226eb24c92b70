package dev.edgekit.demo;

/**
 * One way to run the embedded .tflite: LiteRT WebAssembly in a WebView ("litert-wasm", built offline) or native
 * LiteRT from its AAR ("litert-native", Gradle build only). Blocking; call it off the UI thread.
 */
public interface Engine {
    /** "litert-wasm" or "litert-native": goes into the result's runtime.name. */
    String name();

    /** Load the model asset, warm up, then time runs until config.minRuns AND config.minSeconds (cap maxSeconds). */
    RunRecord run(InputSpec spec, BenchConfig config) throws Exception;
}
