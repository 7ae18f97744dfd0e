// Performance of the hardness explorer in headless Chromium (Debian's, driven by playwright-core),
// for scripts/bench-web.sh; a benchmark, not a test (not in CI). Serves $BENCH_DIST (default
// web/dist) on 127.0.0.1 and measures (1) the wasm sizes, raw and gzipped, (2) time to first
// render: navigation start → the dataset panel's first button visible, median of fresh loads,
// (3) CLIP encode time per call in the worker for the model in $BENCH_MODEL (a random-weight
// ViT-B/32 made by make_bench_model.py), loaded through the explorer's "Model files…" picker:
// the page is opened with `?bench`, which installs `window.damaBench` (src/bench.rs), (4) the same
// in $BENCH_PARALLEL pages at once (default 2; 0 or 1 skips it), each page's worker with its own
// model: the explorer scoring in that many workers, as images per second. Each worker is one
// wasm thread (candle is built without threads). Against onnxruntime-web on the image and text
// towers when bench_ort.mjs has written $BENCH_ORT_OUT (default web/e2e/out/bench-ort.json) for
// the same model.
// Writes the numbers as JSON to $BENCH_OUT (default web/e2e/out/bench.json) and prints a table.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const dist = path.resolve(process.env.BENCH_DIST || path.join(root, 'web', 'dist'));
const modelDir = path.resolve(process.env.BENCH_MODEL || path.join(root, 'target', 'bench-web', 'vit-b32'));
const outFile = path.resolve(process.env.BENCH_OUT || path.join(here, 'out', 'bench.json'));
const REPEATS = Number(process.env.BENCH_REPEATS || 7);
const LOADS = Number(process.env.BENCH_LOADS || 5);
const PARALLEL = Number(process.env.BENCH_PARALLEL ?? 2);
const ortFile = path.resolve(process.env.BENCH_ORT_OUT || path.join(here, 'out', 'bench-ort.json'));
const CANDLE_BEFORE_MS = 510, CANDLE_TEXT_BEFORE_MS = 290; // candle-wasm before issue 17's work
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };

// One call's tower and projection: each repetition's end-to-end time minus its preprocessing's.
const towerMs = r => median(r.image.map((x, i) => x - r.image_preprocess[i]));
const median = xs => { const v = [...xs].sort((a, b) => a - b); const n = v.length; return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2; };
const fmt = x => x.toFixed(1);

// (1) sizes
const sizes = {};
for (const f of fs.readdirSync(dist).filter(f => f.endsWith('.wasm') || f.endsWith('.js'))) {
  const bytes = fs.readFileSync(path.join(dist, f));
  sizes[f] = { raw: bytes.length, gzip: zlib.gzipSync(bytes, { level: 9 }).length };
}

const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const file = path.join(dist, url === '/' ? 'index.html' : url);
  if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.writeHead(404); return res.end(); }
  res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise(r => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let result;

// `n` fresh pages, each with the model picked into its worker (loaded at once).
async function loadModels(n) {
  return Promise.all(Array.from({ length: n }, async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', e => errors.push(String(e)));
    page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(`${base}?bench`);
    await page.waitForSelector('#pick-model');
    const t0 = Date.now();
    await page.setInputFiles('#pick-model', ['config.json', 'model.safetensors', 'tokenizer.json', 'preprocessor_config.json'].map(f => path.join(modelDir, f)));
    await page.waitForSelector('#model-status[data-state="ready"], #model-status[data-state="failed"]', { timeout: 300000 });
    const status = await page.textContent('#model-status');
    if ((await page.getAttribute('#model-status', 'data-state')) !== 'ready') throw new Error(`model: ${status} ${errors.join('\n')}`);
    return { context, page, errors, status, loadMs: Date.now() - t0 };
  }));
}

// window.damaBench in every page at once; their reports (the pages are closed after).
async function benchAll(pages) {
  await Promise.all(pages.map(p => p.page.evaluate(n => window.damaBench(n), REPEATS)));
  return Promise.all(pages.map(async ({ context, page, errors }) => {
    const report = JSON.parse(await (await page.waitForFunction(() => window.damaBenchResult, null, { timeout: 600000, polling: 500 })).jsonValue());
    if (report.error) throw new Error(report.error);
    if (errors.length) console.log(`page errors:\n${errors.join('\n')}`);
    await context.close();
    return report;
  }));
}

try {
  // (2) time to first render, each in a fresh context (empty HTTP cache, no compiled-wasm cache).
  const renders = [];
  for (let i = 0; i < LOADS; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(base, { waitUntil: 'commit' });
    const ms = await (await page.waitForFunction(() => {
      const e = document.querySelector('#load-demo');
      if (!e || !e.getClientRects().length) return false;
      return window.__firstRender ??= performance.now(); // ms since navigation start
    }, null, { polling: 'raf', timeout: 60000 })).jsonValue();
    const nav = await page.evaluate(() => { const n = performance.getEntriesByType('navigation')[0]; return { domContentLoaded: n.domContentLoadedEventEnd, load: n.loadEventEnd }; });
    renders.push({ firstRender: ms, ...nav });
    await context.close();
  }

  // (3) CLIP in the worker: the model picked as files, then window.damaBench.
  const [one] = await loadModels(1);
  const report = (await benchAll([one]))[0];
  // (4) the same in PARALLEL pages (workers) at once.
  let parallel = null;
  if (PARALLEL > 1) {
    const pages = await loadModels(PARALLEL);
    const t0 = Date.now();
    parallel = { pages: PARALLEL, reports: await benchAll(pages), wallMs: Date.now() - t0 };
  }
  result = { sizes, renders, model: { status: one.status, loadMs: one.loadMs }, report, parallel, chromium: browser.version() };
} finally {
  await browser.close();
  server.close();
}

fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, JSON.stringify(result, null, 2));
const r = result.report, m = k => median(r[k]);
console.log(`\nChromium ${result.chromium}, ${dist}`);
console.log('\n| file | raw | gzip -9 |\n| --- | ---: | ---: |');
for (const [f, s] of Object.entries(sizes)) console.log(`| ${f} | ${(s.raw / 1e6).toFixed(2)} MB | ${(s.gzip / 1e6).toFixed(2)} MB |`);
const fr = median(result.renders.map(x => x.firstRender)), dcl = median(result.renders.map(x => x.domContentLoaded));
console.log(`\nfirst render (navigation start → #load-demo visible), median of ${LOADS} fresh loads: ${fmt(fr)} ms (DOMContentLoaded ${fmt(dcl)} ms)`);
console.log(`model load (pick files → ready, ${r.shape}): ${(result.model.loadMs / 1000).toFixed(1)} s`);
console.log(`\nCLIP in the worker, median of ${REPEATS} calls after a warm-up (ms per call):\n`);
console.log('| what | ms | vs candle-wasm before |\n| --- | ---: | ---: |');
console.log(`| image 224×224, end to end | ${fmt(m('image'))} | ${(m('image') / CANDLE_BEFORE_MS).toFixed(2)}× of 510 ms |`);
console.log(`| text, 8 sub-sentences in one call | ${fmt(m('texts8'))} | |`);
console.log(`| text, one of ${r.text77_tokens} tokens | ${fmt(m('text77'))} | ${(m('text77') / CANDLE_TEXT_BEFORE_MS).toFixed(2)}× of 290 ms |`);

// Against onnxruntime-web on the same graphs and weights, like for like: a ready input in,
// features out. candle's image twice: a whole call minus a preprocessing call (what scoring an
// image costs), and vision_model.forward alone (no projection: a lower bound); its 77-token text
// includes tokenising (ORT gets the ids). Calls/s of n workers at once: the sum of each worker's
// 1000 / median, alike on both sides.
const ort = fs.existsSync(ortFile) ? JSON.parse(fs.readFileSync(ortFile, 'utf8')) : null;
if (!ort || ort.model !== path.relative(root, modelDir)) {
  console.log(`\n(no onnxruntime-web numbers for ${path.relative(root, modelDir)} in ${path.relative(root, ortFile)}: run bench_ort.mjs first)`);
} else {
  const rate = x => x.times.reduce((s, t) => s + 1000 / median(t), 0);
  const ortRow = (tower, x) => {
    const what = x.workers > 1 ? `${x.workers} workers at once, 1 thread each` : `1 worker, ${x.threads} thread${x.threads > 1 ? 's (cross-origin isolated)' : ''}`;
    return [`onnxruntime-web, ${what}`, x.workers > 1 ? null : x.ms, rate(x)];
  };
  const table = (title, tower, candleRows) => {
    const runs = ort.runs.filter(x => x.tower === tower);
    const one = runs.find(x => x.threads === 1 && x.workers === 1);
    console.log(`\n${title}, candle (dama's worker, one wasm thread each) against onnxruntime-web ${ort.version} (wasm, SIMD, a Web Worker each), medians:\n`);
    console.log(`| | ms per call | calls/s | × ORT with 1 thread |\n| --- | ---: | ---: | ---: |`);
    for (const [what, ms, perS] of [...candleRows, ...runs.map(x => ortRow(tower, x))]) {
      console.log(`| ${what} | ${ms === null ? '' : fmt(ms)} | ${perS.toFixed(2)} | ${one ? (perS / rate(one)).toFixed(2) + '×' : ''} |`);
    }
  };
  const images = [
    ['candle, 1 worker: a call minus preprocessing', towerMs(r), 1000 / towerMs(r)],
    ['candle, 1 worker: vision_model.forward alone', m('image_tower'), 1000 / m('image_tower')],
  ];
  // From the ready tensor to the unit-norm embedding, timed right after the tower: ORT's work.
  if (r.image_from_pixels?.length) images.unshift(['candle, 1 worker: from the ready tensor (tower, projection, norm)', m('image_from_pixels'), 1000 / m('image_from_pixels')]);
  if (result.parallel) {
    images.push([`candle, ${result.parallel.pages} workers at once`, null, result.parallel.reports.reduce((s, x) => s + 1000 / towerMs(x), 0)]);
  }
  table('image from a ready (1, 3, 224, 224) tensor to its features', 'vision', images);
  table(`one ${r.text77_tokens}-token text to its features`, 'text', [['candle, 1 worker (tokenising included)', m('text77'), 1000 / m('text77')]]);
}
const layers = r.shape.match(/vision \d+×(\d+)/)[1];
console.log(`\nwhere the image's time goes (ms, medians):\n`);
console.log(`| stage | ms | share |\n| --- | ---: | ---: |`);
const tot = m('image');
const rows = [
  ['preprocess (resize, crop, normalise)', m('image_preprocess')],
  ['patch + position embedding, pre-norm', m('image_embed')],
  [`${layers} encoder layers (one: ${fmt(m('image_layer'))} ms; the last only for the class token)`, m('image_tower') - m('image_embed')],
  ['projection, norm, rest', tot - m('image_preprocess') - m('image_tower')],
];
for (const [k, v] of rows) console.log(`| ${k} | ${fmt(v)} | ${(100 * v / tot).toFixed(0)}% |`);
// The same call at two places in each round: how much a call's time depends on what ran
// before it (the breakdown's last row can be negative when this is larger than the
// projection's work).
if (r.image_again?.length) console.log(`\nthe end-to-end image call first in each round ${fmt(m('image'))} ms, again after the tower ${fmt(m('image_again'))} ms`);
console.log(`\nimage forward: ${r.image_gflop.toFixed(2)} GFLOP → ${(r.image_gflop / (tot / 1000)).toFixed(1)} GFLOP/s; candle f32 matmul of the MLP's first linear alone: ${fmt(median(r.gemm_ms))} ms, ${r.gemm_gflops.toFixed(1)} GFLOP/s`);
// One layer's linears (q, k, v, o and the MLP) at the probe's matmul rate, against the layer's time.
const [, hid, , toks] = r.shape.match(/vision (\d+)×(\d+) layers, (\d+) tokens/).map(Number);
const linGflop = 2 * toks * (4 * hid * hid + 2 * hid * 4 * hid) / 1e9;
console.log(`one layer's linears: ${(linGflop * 1000).toFixed(0)} MFLOP → ${fmt(linGflop / r.gemm_gflops * 1000)} ms at the probe's rate, of the layer's ${fmt(m('image_layer'))} ms`);
console.log(`\nJSON: ${outFile}`);
