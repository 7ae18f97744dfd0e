// The explorer at RLAIF-V's size, for scripts/bench-web.sh (a benchmark, not a test: nothing
// here is asserted). For each size in $BENCH_SIZES (default 2000,20000,83132) it generates an
// annotated file scored elsewhere (examples/make_scale.rs), then times in headless Chromium:
// load (pick → table ready), sort by δ, the hard band, a typed word filter (the longest task it
// caused), the export as a Blob download and as a streamed file (File System Access API, on an
// origin-private file), and a reload that reopens the session from IndexedDB. Then scoring
// throughput with 1, 2 and 4 workers ($BENCH_WORKERS) on 400 pairs with the bundled tiny model,
// and with the ViT-B/32 in $BENCH_MODEL when it exists; and the rate over each quarter of a
// $BENCH_LONG-pair run (default 20000; 0 skips it), which must not fall as scores pile up. Writes $BENCH_OUT (default
// web/e2e/out/bench-scale.json) and prints tables.
import fs from 'node:fs';
import path from 'node:path';
import { serve, launch, openPage, makeDataset, readJsonl, message, out } from './harness.mjs';

const SIZES = (process.env.BENCH_SIZES ?? '2000,20000,83132').split(',').filter(Boolean).map(Number);
const WORKERS = (process.env.BENCH_WORKERS || '1,2,4').split(',').map(Number);
const modelDir = process.env.BENCH_MODEL;
const outFile = path.resolve(process.env.BENCH_OUT || path.join(out, 'bench-scale.json'));
const ms = t => Math.round(performance.now() - t);

async function longest(page, f) {
  await page.evaluate(() => { window.__long = []; });
  await f();
  return Math.round(Math.max(0, ...(await page.evaluate(() => window.__long))));
}

async function size(browser, origin, n) {
  const file = makeDataset(n, { scored: true, name: `bench-${n}.jsonl` });
  const bytes = fs.statSync(file).size;
  const { header, pairs } = readJsonl(file);
  const hard = pairs.filter(p => p.delta < header.bands.q1).length;
  const { page, context } = await openPage(browser, origin);
  await page.evaluate(() => { window.__long = []; new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ type: 'longtask', buffered: true }); });
  const r = { pairs: n, mb: +(bytes / 1e6).toFixed(1), hard };
  let t = performance.now();
  await page.setInputFiles('#pick-files', file);
  await page.waitForFunction(k => document.querySelector('#dataset-summary')?.textContent.includes(`${k} pairs`), n.toLocaleString('en-US'), { timeout: 300000 });
  r.load_ms = ms(t);
  await page.click('#tab-table');
  await page.waitForSelector('#pair-table tbody tr[data-id]');
  const first = await page.getAttribute('#pair-table tbody tr[data-id]', 'data-id');
  t = performance.now();
  await page.click('th[data-col="delta"]');
  await page.waitForFunction(f => document.querySelector('#pair-table tbody tr[data-id]')?.dataset.id !== f, first, { timeout: 60000 });
  r.sort_ms = ms(t);
  t = performance.now();
  await page.selectOption('#filter-band', 'hard');
  await page.waitForFunction(k => document.querySelector('#row-count')?.dataset.n === String(k), hard, { timeout: 60000 });
  r.hard_band_ms = ms(t);
  await page.selectOption('#filter-band', '');
  await page.waitForFunction(k => document.querySelector('#row-count')?.dataset.n === String(k), n);
  r.typing_longest_task_ms = await longest(page, async () => {
    t = performance.now();
    await page.type('#filter-text', 'purple star', { delay: 40 });
    await page.waitForFunction(k => Number(document.querySelector('#row-count')?.dataset.n) < k, n, { timeout: 60000 });
    r.typed_filter_ms = ms(t);
  });
  await page.fill('#filter-text', '');
  await page.waitForFunction(k => document.querySelector('#row-count')?.dataset.n === String(k), n);
  // Export, as a Blob download.
  t = performance.now();
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 300000 }), page.click('#export')]);
  await message(page, 'offered as a download', 300000);
  r.export_blob_ms = ms(t);
  r.export_mb = +(fs.statSync(await download.path()).size / 1e6).toFixed(1);
  // Export, streamed to a file.
  await page.evaluate(() => { window.showSaveFilePicker = async (o) => (await navigator.storage.getDirectory()).getFileHandle(o.suggestedName, { create: true }); });
  t = performance.now();
  await page.click('#export');
  await message(page, /^saved /, 300000);
  r.export_stream_ms = ms(t);
  await page.evaluate(async name => (await navigator.storage.getDirectory()).removeEntry(name), `bench-${n}.curated.jsonl`);
  // Reload: the session reopens from IndexedDB.
  t = performance.now();
  await page.reload();
  await message(page, 'reopened', 300000);
  await page.waitForFunction(k => document.querySelector('#dataset-summary')?.textContent.includes(`${k} pairs`), n.toLocaleString('en-US'));
  r.reload_ms = ms(t);
  await context.close();
  fs.rmSync(file, { force: true });
  console.log(JSON.stringify(r));
  return r;
}

async function scoring(browser, origin, workers, { model, pairs }) {
  const file = makeDataset(pairs, { scored: false, name: `plain-${pairs}.jsonl` });
  const { page, context } = await openPage(browser, origin, { query: `?workers=${workers}` });
  await page.setInputFiles('#pick-files', file);
  await page.waitForFunction(k => document.querySelector('#dataset-summary')?.textContent.includes(`${k} pairs`), String(pairs));
  const t0 = performance.now();
  if (model) {
    await page.setInputFiles('#pick-model', ['config.json', 'model.safetensors', 'tokenizer.json', 'preprocessor_config.json'].map(f => path.join(model, f)));
  } else {
    await page.click('#load-demo-model');
  }
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 600000 });
  const load = ms(t0);
  const t = performance.now();
  await page.click('#score');
  await page.waitForSelector('#progress-text[data-state="finished"]', { timeout: 1800000 });
  const wall = ms(t);
  const text = await page.textContent('#progress-text');
  await context.close();
  const page_rate = Number((text.match(/([\d.]+) pairs\/s/) || [])[1]);
  const r = { model: model ? 'vit-b32 (random weights)' : 'tiny demo', workers, pairs, model_load_ms: load, score_ms: wall, pairs_per_s: +(pairs * 1000 / wall).toFixed(1), page_pairs_per_s: page_rate, progress: text };
  console.log(JSON.stringify(r));
  return r;
}

// Does scoring slow down as the scored count grows (it did while the whole state was re-saved
// at every save)? Rate over each quarter of a long run, with storage on.
async function longRun(browser, origin, pairs) {
  const file = makeDataset(pairs, { scored: false, name: `plain-${pairs}.jsonl` });
  const { page, context } = await openPage(browser, origin, { query: '?workers=1' });
  await page.setInputFiles('#pick-files', file);
  await page.waitForFunction(k => document.querySelector('#dataset-summary')?.textContent.includes(`${k} pairs`), pairs.toLocaleString('en-US'), { timeout: 120000 });
  await page.click('#load-demo-model');
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 60000 });
  await page.click('#score');
  const samples = [];
  const t0 = performance.now();
  for (;;) {
    const done = Number(await page.getAttribute('#progress-text', 'data-done'));
    samples.push([performance.now() - t0, done]);
    if (done >= pairs) break;
    await page.waitForTimeout(500);
  }
  await context.close();
  fs.rmSync(file, { force: true });
  const at = q => samples.find(([, d]) => d >= q * pairs);
  const quarters = [0.25, 0.5, 0.75, 1].map((q, k, all) => {
    const [t1, d1] = k === 0 ? [0, 0] : at(all[k - 1]);
    const [t2, d2] = at(q);
    return +((d2 - d1) * 1000 / (t2 - t1)).toFixed(1);
  });
  const r = { pairs, workers: 1, pairs_per_s_by_quarter: quarters };
  console.log(JSON.stringify(r));
  return r;
}

const { server, origin } = await serve();
const browser = await launch();
const result = { chromium: browser.version(), sizes: [], scoring: [] };
try {
  for (const n of SIZES) result.sizes.push(await size(browser, origin, n));
  for (const w of WORKERS) result.scoring.push(await scoring(browser, origin, w, { pairs: 400 }));
  const LONG = Number(process.env.BENCH_LONG ?? 20000);
  if (LONG > 0) result.long = await longRun(browser, origin, LONG);
  if (modelDir && fs.existsSync(path.join(modelDir, 'model.safetensors'))) {
    for (const w of WORKERS.filter(w => w <= 2)) result.scoring.push(await scoring(browser, origin, w, { model: modelDir, pairs: Number(process.env.BENCH_VIT_PAIRS || 24) }));
  }
} finally {
  await browser.close();
  server.close();
  fs.rmSync(path.join(out, 'generated'), { recursive: true, force: true });
}
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n');
console.log(`\nChromium ${result.chromium}\n`);
console.log('| pairs | file | load | sort δ | hard band | typed filter (longest task) | export: Blob / streamed (size) | reload |');
console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of result.sizes) {
  console.log(`| ${r.pairs.toLocaleString('en-US')} | ${r.mb} MB | ${r.load_ms} ms | ${r.sort_ms} ms | ${r.hard_band_ms} ms | ${r.typed_filter_ms} ms (${r.typing_longest_task_ms} ms) | ${r.export_blob_ms} / ${r.export_stream_ms} ms (${r.export_mb} MB) | ${r.reload_ms} ms |`);
}
console.log('\n| model | workers | pairs | pairs/s (wall) | pairs/s (the page\'s count) | model load |\n| --- | ---: | ---: | ---: | ---: | ---: |');
for (const r of result.scoring) console.log(`| ${r.model} | ${r.workers} | ${r.pairs} | ${r.pairs_per_s} | ${r.page_pairs_per_s} | ${r.model_load_ms} ms |`);
if (result.long) console.log(`\nscoring ${result.long.pairs.toLocaleString('en-US')} pairs in one worker, pairs/s in each quarter of the run: ${result.long.pairs_per_s_by_quarter.join(' → ')}`);
console.log(`\nJSON: ${outFile}`);
