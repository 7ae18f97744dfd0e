// End-to-end test of the hardness explorer in a real headless Chromium (Debian's, driven by
// playwright-core; no browser download). Serves web/dist (built by `trunk build`) on 127.0.0.1,
// loads the demo set and the demo model, scores, sorts by δ, drops a pair, edits a sub-sentence,
// reloads (the curation must survive), exports, and checks the export against dama-core with
// `cargo run -p dama-web --example check_export`. Screenshots of each view go to $E2E_OUT
// (default web/e2e/out). Ends with a line `N passed, M failed`.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const dist = path.join(root, 'web', 'dist');
const out = path.resolve(process.env.E2E_OUT || path.join(here, 'out'));
fs.mkdirSync(out, { recursive: true });
const MODEL = 'dama-demo/tiny-clip (random weights)';
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };

let passed = 0, failed = 0;
function check(name, ok, detail = '') {
  if (ok) { passed++; console.log(`ok   ${name}`); } else { failed++; console.log(`FAIL ${name} ${detail}`); }
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
const errors = [];
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', e => errors.push(String(e)));
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('response', r => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} ${r.url()}`); });

  const t0 = Date.now();
  await page.goto(base);
  await page.waitForSelector('#load-demo');
  console.log(`first render ${Date.now() - t0} ms`);

  // Load the demo set and the demo model, score everything.
  await page.click('#load-demo');
  await page.waitForFunction(() => document.querySelector('#dataset-summary')?.textContent.includes('48 pairs'));
  check('demo set loads 48 pairs', true);
  await page.click('#load-demo-model');
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 60000 });
  check('demo model loads in the worker', true);
  const t1 = Date.now();
  await page.click('#score');
  await page.waitForSelector('#progress-text[data-state="finished"]', { timeout: 120000 });
  const done = await page.getAttribute('#progress-text', 'data-done');
  check('scoring finishes all 48 pairs', done === '48', `done=${done}`);
  console.log(`scored 48 pairs in ${Date.now() - t1} ms: ${await page.textContent('#progress-text')}`);
  const n = await page.getAttribute('svg.hist[data-quantity="δ"]', 'data-n');
  check('the δ histogram counts every pair', n === '48', `n=${n}`);
  await page.screenshot({ path: path.join(out, '1-overview.png'), fullPage: true });

  // Sort by δ (ascending: the hardest first).
  await page.click('#tab-table');
  await page.click('th[data-col="delta"]');
  const deltas = await page.$$eval('#pair-table td.delta', tds => tds.map(td => Number(td.dataset.value)));
  check('the table sorts by δ ascending', deltas.length === 48 && deltas.every((d, i) => i === 0 || deltas[i - 1] <= d), JSON.stringify(deltas.slice(0, 5)));
  await page.screenshot({ path: path.join(out, '2-table.png'), fullPage: true });

  // Drop the hardest pair.
  const dropped = await page.getAttribute('#pair-table tbody tr:first-child', 'data-id');
  await page.click('#pair-table tbody tr:first-child');
  await page.click('#pair-drop');
  await page.waitForFunction(() => document.querySelector('#pair-drop')?.textContent.includes('Keep'));
  check('a pair is dropped', true);

  // Edit the first chosen sub-sentence of the next pair: it is scored again at once.
  await page.click('#pair-next');
  const edited = (await page.textContent('#pair-image + .id, .pair-image .id')).trim();
  const before = await page.getAttribute('#pair-delta', 'data-value');
  const text = 'There is a small purple star in the middle.';
  const input = page.locator('.sub-input[data-side="chosen"][data-j="0"]');
  await input.fill(text);
  await input.press('Enter');
  await page.waitForFunction(b => { const v = document.querySelector('#pair-delta')?.dataset.value; return v && v !== b; }, before, { timeout: 30000 });
  const after = await page.getAttribute('#pair-delta', 'data-value');
  check('an edited sub-sentence is re-scored at once', after !== before && after !== '', `${before} -> ${after}`);
  await page.screenshot({ path: path.join(out, '3-pair.png'), fullPage: true });

  // Reload: the curation and the scores come back from localStorage.
  await page.reload();
  await page.click('#load-demo');
  await page.waitForFunction(() => document.querySelector('#message')?.textContent.includes('restored'));
  const msg = await page.textContent('#message');
  check('a reload restores the curation and scores', /restored 2 curated pair\(s\) and 48 score\(s\)/.test(msg), msg);
  await page.click('#tab-table');
  await page.selectOption('#filter-status', 'dropped');
  const droppedRows = await page.$$eval('#pair-table tbody tr', trs => trs.map(tr => tr.dataset.id));
  check('the dropped pair is still dropped', droppedRows.length === 1 && droppedRows[0] === dropped, JSON.stringify(droppedRows));
  await page.selectOption('#filter-status', '');
  await page.fill('#filter-text', edited);
  await page.click(`#pair-table tr[data-id="${edited}"]`);
  const kept = await page.inputValue('.sub-input[data-side="chosen"][data-j="0"]');
  check('the edit survives the reload', kept === text, kept);
  check('its new score survives too', (await page.getAttribute('#pair-delta', 'data-value')) === after);
  await page.screenshot({ path: path.join(out, '4-pair-after-reload.png'), fullPage: true });

  // Export and check the file against dama-core.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  const file = path.join(out, download.suggestedFilename());
  await download.saveAs(file);
  check('the export is offered as demo.curated.jsonl', download.suggestedFilename() === 'demo.curated.jsonl', download.suggestedFilename());
  try {
    const report = execFileSync('cargo', ['run', '-q', '-p', 'dama-web', '--example', 'check_export', '--', file,
      '--model', MODEL, '--dropped', dropped, '--edited', edited, '--text', text], { cwd: root, encoding: 'utf8' });
    check('the export agrees with dama-core', true);
    console.log(report.trim());
  } catch (e) {
    check('the export agrees with dama-core', false, e.stdout + e.stderr);
  }
  check('no errors in the page', errors.length === 0, errors.join('\n'));
} catch (e) {
  failed++;
  console.log(`FAIL ${e.stack || e}`);
} finally {
  await browser.close();
  server.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
