// What the end-to-end scenarios share: a static server for web/dist, Debian's headless Chromium
// (playwright-core, no browser download), checks that count, timings, the dataset generator and
// reading an exported or generated annotated JSONL.
import { chromium } from 'playwright-core';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
export const out = path.resolve(process.env.E2E_OUT || path.join(here, 'out'));
fs.mkdirSync(out, { recursive: true });
const dist = path.resolve(process.env.E2E_DIST || path.join(root, 'web', 'dist'));
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };

export const result = { passed: 0, failed: 0, timings: {} };
export function check(name, ok, detail = '') {
  if (ok) { result.passed++; console.log(`ok   ${name}`); } else { result.failed++; console.log(`FAIL ${name} ${detail}`); }
  return ok;
}
/** Records a measured duration (printed, never asserted: the machine is shared). */
export function timed(name, ms) {
  result.timings[name] = Math.round(ms);
  console.log(`time ${name}: ${Math.round(ms)} ms`);
}

export async function serve() {
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    const file = path.join(dist, url === '/' ? 'index.html' : url);
    if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) { res.writeHead(404); return res.end(); }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise(r => server.listen(0, '127.0.0.1', r));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A fresh browser profile (its own storage) with a page whose errors are collected. Without
 * `fsa`, the File System Access API is hidden, so exports take the Blob download path.
 */
export async function openPage(browser, origin, { quota, fsa = false, query = '', viewport = { width: 1280, height: 900 } } = {}) {
  const context = await browser.newContext({ acceptDownloads: true, viewport });
  if (!fsa) await context.addInitScript(() => { window.showSaveFilePicker = undefined; });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('response', r => { if (r.status() >= 400) errors.push(`HTTP ${r.status()} ${r.url()}`); });
  if (quota !== undefined) {
    // Chromium enforces this quota for IndexedDB (navigator.storage.estimate() does not show it).
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: quota });
  }
  await page.goto(origin + '/' + query);
  await page.waitForSelector('#load-demo');
  return { context, page, errors };
}

/** `cargo run -p dama-web --example make_scale`: an annotated JSONL of `pairs` pairs. */
export function makeDataset(pairs, { scored, name }) {
  const dir = path.join(out, 'generated');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  const args = ['run', '-q', '-p', 'dama-web', '--example', 'make_scale', '--', '--pairs', String(pairs), '--out', file];
  if (scored) args.push('--scored');
  execFileSync('cargo', args, { cwd: root, encoding: 'utf8' });
  return file;
}

/** The header and records of annotated JSONL text. */
export function parseJsonl(text) {
  const lines = text.split('\n').filter(l => l.trim());
  return { header: JSON.parse(lines[0]), pairs: lines.slice(1).map(l => JSON.parse(l)) };
}

export function readJsonl(file) {
  return parseJsonl(fs.readFileSync(file, 'utf8'));
}

/** Waits until `#message` contains `text` (or matches it); returns the message. */
export async function message(page, text, timeout = 30000) {
  await page.waitForFunction(t => {
    const m = document.querySelector('#message')?.textContent || '';
    return typeof t === 'string' ? m.includes(t) : new RegExp(t[0], t[1]).test(m);
  }, typeof text === 'string' ? text : [text.source, text.flags], { timeout });
  return page.textContent('#message');
}

export async function pickFiles(page, selector, files) {
  await page.setInputFiles(selector, files);
}

/** The ids of the table rows drawn now (the table draws only those in view). */
export async function visibleIds(page) {
  return page.$$eval('#pair-table tbody tr[data-id]', trs => trs.map(tr => tr.dataset.id));
}

export async function rowCount(page) {
  return Number(await page.getAttribute('#row-count', 'data-n'));
}

export async function shownPair(page) {
  return (await page.textContent('#pair-id')).trim();
}
