package dev.edgekit.demo;

import android.app.Activity;
import android.content.res.AssetManager;
import android.net.Uri;
import android.webkit.JavascriptInterface;
import android.webkit.WebResourceRequest;
import android.webkit.WebResourceResponse;
import android.webkit.WebSettings;
import android.webkit.WebView;
import android.webkit.WebViewClient;

import java.io.IOException;
import java.io.InputStream;
import java.net.URLEncoder;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * litert-wasm: LiteRT's WebAssembly build (@litertjs/core) running assets/web/bench.html in a WebView. Assets are
 * served from https://appassets.androidplatform.net/assets/ by shouldInterceptRequest (what AndroidX's
 * WebViewAssetLoader does), so fetch() and WebAssembly streaming work without file:// access.
 */
public final class WasmEngine implements Engine {
    static final String ORIGIN = "https://appassets.androidplatform.net";

    private final Activity activity;
    private final WebView view;

    public WasmEngine(Activity activity, WebView view) {
        this.activity = activity;
        this.view = view;
    }

    @Override
    public String name() {
        return "litert-wasm";
    }

    static String mimeType(String path) {
        if (path.endsWith(".html")) return "text/html";
        if (path.endsWith(".js")) return "text/javascript";
        if (path.endsWith(".wasm")) return "application/wasm";
        if (path.endsWith(".json")) return "application/json";
        return "application/octet-stream";
    }

    private final class Bridge {
        final CountDownLatch done = new CountDownLatch(1);
        volatile String json;

        @JavascriptInterface
        public void onResult(String result) {
            json = result;
            done.countDown();
        }
    }

    @Override
    public RunRecord run(InputSpec spec, final BenchConfig config) throws Exception {
        final Bridge bridge = new Bridge();
        final AssetManager assets = activity.getAssets();
        activity.runOnUiThread(new Runnable() {
            @Override
            public void run() {
                WebSettings ws = view.getSettings();
                ws.setJavaScriptEnabled(true);
                ws.setAllowFileAccess(false);
                view.addJavascriptInterface(bridge, "EdgekitBridge");
                view.setWebViewClient(new WebViewClient() {
                    @Override
                    public WebResourceResponse shouldInterceptRequest(WebView v, WebResourceRequest request) {
                        Uri u = request.getUrl();
                        String path = u.getPath();
                        if (!ORIGIN.equals(u.getScheme() + "://" + u.getHost()) || path == null || !path.startsWith("/assets/")) {
                            return null;
                        }
                        try {
                            InputStream in = assets.open(path.substring("/assets/".length()));
                            return new WebResourceResponse(mimeType(path), null, in);
                        } catch (IOException e) {
                            return new WebResourceResponse("text/plain", null, 404, "Not Found", null, null);
                        }
                    }
                });
                try {
                    view.loadUrl(ORIGIN + "/assets/web/bench.html?config=" + URLEncoder.encode(config.toJson(), "UTF-8"));
                } catch (java.io.UnsupportedEncodingException e) {
                    throw new IllegalStateException(e);
                }
            }
        });
        long waitS = (long) (config.maxSeconds + config.warmupSeconds + 300);
        if (!bridge.done.await(waitS, TimeUnit.SECONDS)) {
            throw new IllegalStateException("the litert-wasm page reported nothing within " + waitS + " s");
        }
        return RunRecord.fromJson(bridge.json);
    }
}
