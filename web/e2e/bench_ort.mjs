// onnxruntime-web on the bench's CLIP, in the same headless Chromium as bench.mjs, for
// scripts/bench-web.sh; a benchmark, not a test. The graphs are export_onnx.py's
// ($ORT_PREFIX-vision.onnx and -text.onnx, default target/bench-web/vit-b32-*): the same weights
// candle loads in the worker, checked there against dama-clip.
//
// What is timed: `session.run` on a ready input → (1, P) features: a (1, 3, S, S) pixel tensor
// through the image tower and projection (no preprocessing: bench.mjs compares it with candle's
// time minus its preprocessing), and 77 token ids through the text tower and projection (no
// tokenising). Like candle, ORT runs in a dedicated Web Worker, wasm backend (SIMD is always on
// in onnxruntime-web's one wasm build), graph optimisation "all":
//   - for each tower one session with each of $BENCH_ORT_THREADS threads (default 1,2): more
//     than one needs SharedArrayBuffer, so every response carries COOP same-origin and COEP
//     require-corp and the page is crossOriginIsolated (checked);
//   - for the image, $BENCH_ORT_SESSIONS (default 2) workers with a 1-thread session each, run
//     at once: the peer of the explorer scoring in that many workers (images/s: the sum of each
//     worker's 1000 / median, as bench.mjs counts candle's workers; over the wall time too).
// Each: one warm-up run, then the median of $BENCH_REPEATS (default 7). The browser's output is
// checked against dama-clip's features for the same input (to 1e-4 of their largest value).
// Writes $BENCH_ORT_OUT (default web/e2e/out/bench-ort.json), which bench.mjs reads.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const ortDir = path.resolve(process.env.ORT_DIST || path.join(root, 'target', 'bench-web', 'ort', 'node_modules', 'onnxruntime-web', 'dist'));
const prefix = path.resolve(process.env.ORT_PREFIX || path.join(root, 'target', 'bench-web', 'vit-b32'));
const outFile = path.resolve(process.env.BENCH_ORT_OUT || path.join(here, 'out', 'bench-ort.json'));
const REPEATS = Number(process.env.BENCH_REPEATS || 7);
const THREADS = (process.env.BENCH_ORT_THREADS || '1,2').split(',').map(Number);
const SESSIONS = Number(process.env.BENCH_ORT_SESSIONS || 2);
const version = JSON.parse(fs.readFileSync(path.join(ortDir, '..', 'package.json'), 'utf8')).version;

const median = xs => { const v = [...xs].sort((a, b) => a - b); const n = v.length; return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2; };

// The worker: loads a tower's model and input (message 'load' → 'ready'), then times `repeats`
// runs ('run').
const WORKER = `
import * as ort from '/ort/ort.wasm.min.mjs';
let session, input;
onmessage = async ({ data }) => {
  try {
    if (data.type === 'load') {
      ort.env.wasm.wasmPaths = '/ort/';
      ort.env.wasm.numThreads = data.threads;
      const t = data.tower;
      const [model, given] = await Promise.all(['/' + t + '.onnx', '/' + t + '.input'].map(u => fetch(u).then(r => r.arrayBuffer())));
      const t0 = performance.now();
      session = await ort.InferenceSession.create(new Uint8Array(model), { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
      const loadMs = performance.now() - t0;
      const side = Math.round(Math.sqrt(given.byteLength / 4 / 3));
      input = t === 'vision'
        ? { pixel_values: new ort.Tensor('float32', new Float32Array(given), [1, 3, side, side]) }
        : { input_ids: new ort.Tensor('int64', new BigInt64Array(given), [1, given.byteLength / 8]) };
      const out = await session.run(input); // also the warm-up
      const features = Array.from(out[session.outputNames[0]].data);
      postMessage({ type: 'ready', loadMs, features, isolated: self.crossOriginIsolated });
    } else {
      const times = [];
      for (let i = 0; i < data.repeats; i++) {
        const t0 = performance.now();
        await session.run(input);
        times.push(performance.now() - t0);
      }
      postMessage({ type: 'times', times });
    }
  } catch (e) { postMessage({ type: 'error', error: String(e && e.stack || e) }); }
};`;

const files = {
  '/vision.onnx': `${prefix}-vision.onnx`, '/vision.input': `${prefix}-vision.onnx.pixels.f32`,
  '/text.onnx': `${prefix}-text.onnx`, '/text.input': `${prefix}-text.onnx.ids.i64`,
};
const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  // Cross-origin isolation: SharedArrayBuffer, hence ORT's threads, needs both.
  const headers = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };
  let body, file;
  if (url === '/') body = ['<!doctype html><title>onnxruntime-web bench</title>', 'text/html'];
  else if (url === '/worker.mjs') body = [WORKER, 'text/javascript'];
  else if (files[url]) file = files[url];
  else if (url.startsWith('/ort/') && !url.includes('..')) file = path.join(ortDir, url.slice(5));
  if (body) { res.writeHead(200, { ...headers, 'content-type': body[1] }); return res.end(body[0]); }
  if (!file || !fs.existsSync(file)) { res.writeHead(404, headers); return res.end(); }
  const type = { '.mjs': 'text/javascript', '.wasm': 'application/wasm' }[path.extname(file)] || 'application/octet-stream';
  res.writeHead(200, { ...headers, 'content-type': type });
  fs.createReadStream(file).pipe(res);
});
await new Promise(r => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

function checkOutput(features, tower, what) {
  const refBytes = fs.readFileSync(`${prefix}-${tower}.onnx.features.f32`);
  const reference = new Float32Array(refBytes.buffer.slice(refBytes.byteOffset, refBytes.byteOffset + refBytes.length));
  const scale = Math.max(...reference.map(Math.abs));
  const diff = Math.max(...features.map((x, i) => Math.abs(x - reference[i])));
  if (features.length !== reference.length || !(diff / scale <= 1e-4)) {
    throw new Error(`${what}: onnxruntime-web's features differ from dama-clip's by ${diff} (max |feature| ${scale})`);
  }
  return diff / scale;
}

// `workers` workers of `threads` threads each, loaded, then run at once.
async function run(page, tower, threads, workers) {
  return page.evaluate(async ({ tower, threads, workers, repeats }) => {
    const ask = (w, msg, type) => new Promise((resolve, reject) => {
      w.onmessage = ({ data }) => data.type === 'error' ? reject(new Error(data.error)) : data.type === type && resolve(data);
      w.postMessage(msg);
    });
    const ws = Array.from({ length: workers }, () => new Worker('/worker.mjs', { type: 'module' }));
    const ready = await Promise.all(ws.map(w => ask(w, { type: 'load', tower, threads }, 'ready')));
    const t0 = performance.now();
    const runs = await Promise.all(ws.map(w => ask(w, { type: 'run', repeats }, 'times')));
    const wall = performance.now() - t0;
    ws.forEach(w => w.terminate());
    return { ready, runs: runs.map(r => r.times), wall, isolated: self.crossOriginIsolated };
  }, { tower, threads, workers, repeats: REPEATS });
}

const result = { version, model: path.relative(root, prefix), repeats: REPEATS, chromium: browser.version(), runs: [] };
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  await page.goto(base);
  const plan = [...THREADS.map(t => ['vision', t, 1]), ...(SESSIONS > 1 ? [['vision', 1, SESSIONS]] : []),
    ...THREADS.map(t => ['text', t, 1])];
  for (const [tower, threads, workers] of plan) {
    const r = await run(page, tower, threads, workers);
    if (threads > 1 && !r.isolated) throw new Error('the page is not crossOriginIsolated: no threads');
    const rel = Math.max(...r.ready.map((x, i) => checkOutput(x.features, tower, `${tower}, ${threads} thread(s), worker ${i}`)));
    const ms = median(r.runs.flat());
    const row = {
      tower, threads, workers, ms, times: r.runs, wallMs: r.wall, loadMs: r.ready.map(x => x.loadMs),
      perS: r.runs.reduce((s, t) => s + 1000 / median(t), 0), wallPerS: workers * REPEATS / (r.wall / 1000), maxRelDiff: rel, crossOriginIsolated: r.isolated,
    };
    result.runs.push(row);
    console.log(`onnxruntime-web ${version}, ${tower}, ${workers} worker(s) × ${threads} thread(s): median ${ms.toFixed(1)} ms per call, ` +
      `${row.perS.toFixed(2)} calls/s; session created in ${row.loadMs.map(x => (x / 1000).toFixed(1)).join(', ')} s; ` +
      `output vs dama-clip ${rel.toExponential(1)}`);
  }
  if (errors.length) console.log(`page errors:\n${errors.join('\n')}`);
  await context.close();
} finally {
  await browser.close();
  server.close();
}
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, JSON.stringify(result, null, 2));
console.log(`JSON: ${outFile}`);
