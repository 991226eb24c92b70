// Benchmark loop of the litert-wasm engine: the harness's rules (warm-up by count AND time, then timed runs until
// min_runs AND min_seconds, capped at max_seconds), every sample recorded. Statistics are computed in Java (Stats).
import {loadLiteRt, loadAndCompile, Tensor} from './litert/index.js';

const params = new URLSearchParams(location.search);
const cfg = Object.assign({warmup_runs: 10, warmup_seconds: 1, min_runs: 50, min_seconds: 5, max_seconds: 120},
                          JSON.parse(params.get('config') || '{}'));
const wantOutputs = params.get('outputs') === '1';
const log = (msg) => { document.getElementById('log').textContent += '\n' + msg; };

function report(obj) {
  const text = JSON.stringify(obj);
  if (window.EdgekitBridge) {
    window.EdgekitBridge.onResult(text);
  } else {
    fetch('result', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: text});
  }
  document.title = obj.error ? 'edgekit: error' : 'edgekit: done';
}

// mulberry32: a small seeded generator, so the random inputs are the same on every run
function rng(seed) {
  return () => {
    seed |= 0; seed = seed + 0x6D2B79F5 | 0;
    let t = Math.imul(seed ^ seed >>> 15, 1 | seed);
    t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t;
    return ((t ^ t >>> 14) >>> 0) / 4294967296;
  };
}

const ARRAYS = {float32: Float32Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array,
                int16: Int16Array, uint32: Uint32Array, float64: Float64Array, bool: Uint8Array};

async function makeInput(inp, rand) {
  const Arr = ARRAYS[inp.dtype];
  if (!Arr) throw new Error(`input ${inp.name}: dtype ${inp.dtype} is not supported by LiteRT.js here`);
  const n = inp.shape.reduce((a, b) => a * b, 1);
  if (inp.file) {
    const buf = await (await fetch('../' + inp.file)).arrayBuffer();
    if (buf.byteLength !== n * Arr.BYTES_PER_ELEMENT) {
      throw new Error(`input ${inp.name}: ${inp.file} has ${buf.byteLength} bytes, expected ${n * Arr.BYTES_PER_ELEMENT}`);
    }
    return [new Arr(buf), 'file'];
  }
  const a = new Arr(n);
  const lo = inp.low ?? 0, hi = inp.high ?? (inp.dtype.startsWith('float') ? 1 : 2);
  for (let i = 0; i < n; i++) {
    const v = lo + (hi - lo) * rand();
    a[i] = inp.dtype.startsWith('float') ? v : Math.floor(v);
  }
  return [a, 'random'];
}

async function main() {
  const spec = await (await fetch('../input_spec.json')).json();
  const t0 = performance.now();
  const wasmDir = new URL('litert/wasm/', location.href).href;
  await loadLiteRt(wasmDir);
  const model = await loadAndCompile(new URL('../' + spec.model, location.href).href, {accelerator: 'wasm'});
  const loadMs = performance.now() - t0;
  const details = model.getInputDetails();
  const byName = Object.fromEntries(spec.inputs.map((inp) => [inp.name, inp]));
  const warnings = [];
  let order = details.map((d) => byName[d.name]);
  if (order.some((x) => !x)) {
    warnings.push('input names differ between the model and input_spec.json; inputs fed by position');
    order = spec.inputs;
  }
  const rand = rng(0);
  const tensors = [], records = [];
  for (const inp of order) {
    const [data, source] = await makeInput(inp, rand);
    tensors.push(new Tensor(data, inp.shape));
    records.push({name: inp.name, shape: inp.shape, dtype: inp.dtype, source});
  }
  const runOnce = async () => {
    const outs = await model.run(tensors);
    for (const o of outs) o.delete();
  };
  let s = performance.now();
  const first = await model.run(tensors);
  const firstMs = performance.now() - s;
  let outputs = null;
  if (wantOutputs) {
    const od = model.getOutputDetails();
    outputs = first.map((o, i) => ({name: od[i].name, shape: Array.from(od[i].shape), dtype: od[i].dtype,
                                    data: Array.from(o.toTypedArray())}));
  }
  for (const o of first) o.delete();
  log(`loaded in ${loadMs.toFixed(1)} ms, first inference ${firstMs.toFixed(1)} ms`);
  // warm-up: at least warmup_runs AND warmup_seconds
  let wRuns = 0;
  const w0 = performance.now();
  while (wRuns < cfg.warmup_runs || (performance.now() - w0) / 1000 < cfg.warmup_seconds) {
    await runOnce();
    wRuns++;
  }
  const warmupS = (performance.now() - w0) / 1000;
  const samples = [];
  let capped = false;
  const tStart = performance.now();
  let t1 = tStart;
  while (true) {
    const a = performance.now();
    await runOnce();
    t1 = performance.now();
    samples.push(t1 - a);
    const elapsed = (t1 - tStart) / 1000;
    if (samples.length >= cfg.min_runs && elapsed >= cfg.min_seconds) break;
    if (elapsed >= cfg.max_seconds) { capped = true; break; }
  }
  for (const t of tensors) t.delete();
  log(`${samples.length} timed runs`);
  report({engine: 'litert-wasm', engine_version: '@litertjs/core ' + (spec.litertjs_version || 'unknown'),
          load_ms: loadMs, first_inference_ms: firstMs, warmup_runs: wRuns, warmup_s: warmupS,
          samples_ms: samples, duration_s: (t1 - tStart) / 1000, capped, inputs: records, warnings, outputs});
}

main().catch((e) => { log('error: ' + e); report({error: String(e && e.stack || e)}); });
