// ONNX Runtime (npm onnxruntime-node, CPU execution provider) baseline for `vitfit bench`.
// Dev-only.  Prints one JSON line per batch size with the median batch time, like
// `vitfit bench --json` and bench/pytorch_vit.py.
//   node bench/onnx/bench.mjs MODEL.onnx [--threads 2] [--iters 5] [--warmup 1] BATCH...
// The input is random (speed only); the model is bench/onnx/export_vit.py's output.
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import ort from 'onnxruntime-node';

function usage(msg) {
  if (msg) console.error(`bench.mjs: ${msg}`);
  console.error('usage: node bench.mjs MODEL.onnx [--threads N] [--iters N] [--warmup N] BATCH...');
  process.exit(2);
}

const args = process.argv.slice(2);
let model = null, threads = 2, iters = 5, warmup = 1;
const batches = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const num = () => {
    const v = Number(args[++i]);
    if (!Number.isInteger(v) || v < 0) usage(`${a} wants a non-negative integer`);
    return v;
  };
  if (a === '--threads') threads = num();
  else if (a === '--iters') iters = num();
  else if (a === '--warmup') warmup = num();
  else if (a.startsWith('-')) usage(`unknown option ${a}`);
  else if (model === null) model = a;
  else {
    const b = Number(a);
    if (!Number.isInteger(b) || b < 1) usage(`bad batch size ${a}`);
    batches.push(b);
  }
}
if (model === null || batches.length === 0 || iters < 1 || threads < 1) usage();

const version = createRequire(import.meta.url)('onnxruntime-node/package.json').version;
const session = await ort.InferenceSession.create(model, {
  executionProviders: ['cpu'],
  graphOptimizationLevel: 'all',
  executionMode: 'sequential',
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
});
const inputName = session.inputNames[0];

// Deterministic pseudo-random input (values do not matter for speed).
function randomInput(n) {
  const data = new Float32Array(n * 3 * 224 * 224);
  let s = 12345;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s / 2 ** 31 - 1;
  }
  return new ort.Tensor('float32', data, [n, 3, 224, 224]);
}

function median(xs) {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

for (const batch of batches) {
  const feeds = { [inputName]: randomInput(batch) };
  for (let i = 0; i < warmup; i++) {
    const out = await session.run(feeds);
    const dims = out[session.outputNames[0]].dims;
    if (dims[0] !== batch) throw new Error(`output batch ${dims[0]} != ${batch}: export not dynamic?`);
  }
  const times = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    times.push((performance.now() - t0) / 1000);
  }
  const med = median(times);
  console.log(JSON.stringify({
    impl: 'onnxruntime', onnxruntime_node: version, batch, threads,
    median_batch_seconds: med, images_per_second: batch / med,
  }));
}
