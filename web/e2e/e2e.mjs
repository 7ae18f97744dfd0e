// End-to-end test of the hardness explorer in a real headless Chromium. Serves web/dist (built
// by `trunk build`) on 127.0.0.1 and runs each scenario in a fresh browser profile:
//
// - demo:  the demo set and model: score, sort, walk with the keyboard, drop, edit a
//          sub-sentence and an answer, reload (the session reopens by itself), export through a
//          download and through the File System Access API, check the file against dama-core;
// - scored: 2,000 pairs scored elsewhere: an edited sub-sentence is "score pending", the export
//          names it and writes it with its old δ flagged; a cut file and a false .parquet;
// - quota: scoring with the browser's storage quota forced small: a banner, and no curation lost;
// - tiny-quota: a quota too small even for the curation: said at once, no retry loop, and the
//          next visit says what is missing;
// - scale: RLAIF-V's 83,132 pairs: load, sort, the hard band to its last pair, reload;
// - workers: scoring in 3 workers gives the scores of 1 worker, bit for bit.
//
// E2E_ONLY=demo,scale runs some of them. Generated datasets and screenshots go to $E2E_OUT
// (default web/e2e/out). Ends with a line `N passed, M failed`; timings go to timings.json.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  check, timed, result, serve, launch, openPage, makeDataset, readJsonl, parseJsonl, message,
  visibleIds, rowCount, shownPair, out, root,
} from './harness.mjs';

const MODEL = 'dama-demo/clip (trained on the demo world)';
// Pairs of the bundled demo set (web/demo/demo.jsonl, made by scripts/make-web-demo.sh).
const DEMO_PAIRS = 70;
const only = (process.env.E2E_ONLY || '').split(',').map(s => s.trim()).filter(Boolean);

async function loadDemoAndScore(page) {
  await page.click('#load-demo');
  await page.waitForFunction((n) => document.querySelector("#dataset-summary")?.textContent.includes(`${n} pairs`), DEMO_PAIRS);
  await page.click('#load-demo-model');
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 60000 });
  const t = Date.now();
  await page.click('#score');
  await page.waitForSelector('#progress-text[data-state="finished"]', { timeout: 120000 });
  return Date.now() - t;
}

async function demo(browser, origin) {
  const { page, errors } = await openPage(browser, origin);
  // Before anything is loaded: plain words, no "pair 1 of 0" or "0 / 0".
  await page.click('#tab-pair');
  check('the pair view says there is nothing to show', (await page.textContent('#pair-position')) === 'no pair to show: load a dataset first');
  check('the progress says what to do', (await page.textContent('#progress-text')).startsWith('load a dataset'));
  await page.click('#score');
  check('scoring without a dataset or model says what is missing', (await message(page, 'first')).includes('load a CLIP model first'));
  const ms = await loadDemoAndScore(page);
  check('a later action replaces an old error', !(await page.textContent('#message')).includes('load a CLIP model first'));
  await page.click('#tab-overview');
  check('scoring finishes every pair', (await page.getAttribute('#progress-text', 'data-done')) === String(DEMO_PAIRS));
  console.log(`scored ${DEMO_PAIRS} pairs in ${ms} ms: ${await page.textContent('#progress-text')}`);
  check('the δ histogram counts every pair', (await page.getAttribute('svg.hist[data-quantity="δ"]', 'data-n')) === String(DEMO_PAIRS));
  await page.screenshot({ path: path.join(out, '1-overview.png'), fullPage: true });

  // The table, sorted by δ (the hardest first).
  await page.click('#tab-table');
  await page.click('th[data-col="delta"]');
  const deltas = await page.$$eval('#pair-table td.delta', tds => tds.map(td => Number(td.dataset.value)));
  check('the table sorts by δ ascending', deltas.length >= 10 && deltas.every((d, i) => i === 0 || deltas[i - 1] <= d), JSON.stringify(deltas.slice(0, 5)));
  check('the row count names every pair', (await rowCount(page)) === DEMO_PAIRS);
  // A filter dropdown keeps its value (and its filter) across tabs.
  await page.selectOption('#filter-status', 'kept');
  await page.click('#tab-overview');
  await page.click('#tab-table');
  check('a filter dropdown keeps its value across tabs', (await page.inputValue('#filter-status')) === 'kept');
  await page.selectOption('#filter-status', '');
  await page.screenshot({ path: path.join(out, '2-table.png'), fullPage: true });
  const order = await visibleIds(page);

  // Open the hardest pair; d drops it (and marks it reviewed), → goes to the next in δ order.
  await page.click(`#pair-table tr[data-id="${order[0]}"]`);
  check('the pair view says where it is in the table', (await page.textContent('#pair-position')).startsWith(`pair 1 of ${DEMO_PAIRS} (sorted by δ ▲`), await page.textContent('#pair-position'));
  await page.keyboard.press('d');
  await page.waitForFunction(() => document.querySelector('#pair-drop')?.textContent.includes('Keep'));
  check('d drops the pair and marks it reviewed', await page.isChecked('#pair-reviewed'));
  const dropped = order[0];
  await page.keyboard.press('ArrowRight');
  const edited = await shownPair(page);
  check('→ follows the table\'s sort', edited === order[1], `${edited} vs ${order[1]}`);
  await page.keyboard.press('ArrowLeft');
  check('← goes back', (await shownPair(page)) === dropped);
  await page.click('#pair-next');

  // Edit a sub-sentence: scored again at once.
  const before = await page.getAttribute('#pair-delta', 'data-value');
  const text = 'There is a small purple star in the middle.';
  const input = page.locator('.sub-input[data-side="chosen"][data-j="0"]');
  await input.fill(text);
  await input.press('Enter');
  await page.waitForFunction(b => { const e = document.querySelector('#pair-delta'); return e?.dataset.state === 'scored' && e.dataset.value !== b; }, before, { timeout: 30000 });
  const after = await page.getAttribute('#pair-delta', 'data-value');
  check('an edited sub-sentence is re-scored at once', after !== before && after !== '', `${before} -> ${after}`);

  // Edit the chosen answer of the next pair: it is split again (and says so) and re-scored.
  await page.click('#pair-next');
  const answerId = await shownPair(page);
  const answer = 'There is one big red square. A small blue circle is next to it. Nothing else is there.';
  await page.fill('#answer-chosen', answer);
  await page.click('#pair-note');
  const said = await message(page, 'split again into 3 sub-sentence(s)');
  check('an answer edit says it re-split the answer', said.includes('the export carries the new text'), said);
  const subs = await page.$$eval('.sub-input[data-side="chosen"]', els => els.map(e => e.value).filter(Boolean));
  check('the answer\'s new sub-sentences are shown', JSON.stringify(subs) === JSON.stringify(['There is one big red square.', 'A small blue circle is next to it.', 'Nothing else is there.']), JSON.stringify(subs));
  await page.waitForSelector('#pair-delta[data-state="scored"]', { timeout: 30000 });
  await page.waitForSelector('#save-status[data-state="saved"]', { timeout: 10000 });
  check('the status area confirms the save', (await page.textContent('#save-status')).startsWith('All changes saved in this browser at'));
  await page.screenshot({ path: path.join(out, '3-pair.png'), fullPage: true });
  // At 800 px every sub-sentence and answer is shown whole (they wrap and grow).
  await page.setViewportSize({ width: 800, height: 900 });
  const cut = await page.$$eval('textarea.sub-input, textarea.answer-text', els => els.filter(e => e.value && (e.scrollHeight > e.clientHeight + 2 || e.scrollWidth > e.clientWidth + 2)).map(e => e.value));
  check('no sub-sentence is cut off at 800 px', cut.length === 0, JSON.stringify(cut));
  check('the page does not widen at 800 px', (await page.evaluate(() => document.documentElement.scrollWidth)) <= 800);
  await page.setViewportSize({ width: 1280, height: 900 });

  // Reload: the demo session reopens by itself with its curation and scores.
  await page.reload();
  const msg = await message(page, 'restored');
  check('a reload reopens the session with its curation and scores', new RegExp(`reopened.*restored 3 curated pair\\(s\\) and ${DEMO_PAIRS} score\\(s\\)`).test(msg), msg);
  await page.click('#tab-table');
  await page.selectOption('#filter-status', 'dropped');
  const droppedRows = await visibleIds(page);
  check('the dropped pair is still dropped', droppedRows.length === 1 && droppedRows[0] === dropped, JSON.stringify(droppedRows));
  await page.selectOption('#filter-status', '');
  await page.fill('#filter-text', edited);
  await page.waitForFunction(() => document.querySelectorAll('#pair-table tbody tr[data-id]').length === 1);
  await page.click(`#pair-table tr[data-id="${edited}"]`);
  check('the edit survives the reload', (await page.inputValue('.sub-input[data-side="chosen"][data-j="0"]')) === text);
  check('its new score survives too', (await page.getAttribute('#pair-delta', 'data-value')) === after);
  await page.screenshot({ path: path.join(out, '4-pair-after-reload.png'), fullPage: true });

  // Export as a download (the Blob path), checked against dama-core.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  const file = path.join(out, download.suggestedFilename());
  await download.saveAs(file);
  const offered = await message(page, 'offered as a download');
  check('a download is said to be offered, not saved', !/\bsaved\b/.test(offered), offered);
  check('the export is offered as demo.curated.jsonl', download.suggestedFilename() === 'demo.curated.jsonl');
  try {
    const report = execFileSync('cargo', ['run', '-q', '-p', 'dama-web', '--example', 'check_export', '--', file,
      '--model', MODEL, '--dropped', dropped, '--edited', edited, '--text', text, '--answer', answerId, '--answer-text', answer],
    { cwd: root, encoding: 'utf8' });
    check('the export agrees with dama-core, the edited answer included', true);
    console.log(report.trim());
  } catch (e) {
    check('the export agrees with dama-core, the edited answer included', false, e.stdout + e.stderr);
  }

  // The File System Access path: a real FileSystemFileHandle from the origin-private file
  // system stands in for the file the save dialog would give; "saved" once close() resolved.
  await page.evaluate(() => {
    window.showSaveFilePicker = async (o) => (await navigator.storage.getDirectory()).getFileHandle(o.suggestedName, { create: true });
  });
  await page.click('#export');
  const saved = await message(page, 'saved demo.curated.jsonl');
  check('a streamed export says saved only when written', saved.startsWith(`saved demo.curated.jsonl: ${DEMO_PAIRS} pairs`), saved);
  const streamed = await page.evaluate(async () => (await (await (await navigator.storage.getDirectory()).getFileHandle('demo.curated.jsonl')).getFile()).text());
  check('the streamed file equals the downloaded one', streamed === fs.readFileSync(file, 'utf8').toString() || streamed === await fs.promises.readFile(file, 'utf8'));
  check('no errors in the page (demo)', errors.length === 0, errors.join('\n'));
}

async function scored(browser, origin) {
  const file = makeDataset(2000, { scored: true, name: 'scored-2k.jsonl' });
  const original = readJsonl(file);
  const { page, errors } = await openPage(browser, origin);
  await page.setInputFiles('#pick-files', file);
  await page.waitForFunction(() => document.querySelector('#dataset-summary')?.textContent.includes('2,000 pairs · 2,000 scored'), null, { timeout: 60000 });
  check('a dataset scored elsewhere loads with its scores', true);
  await page.click('#load-demo-model');
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 60000 });

  // h: the hardest pair nobody has reviewed.
  await page.keyboard.press('h');
  const hardest = [...original.pairs].sort((a, b) => a.delta - b.delta || (a.id < b.id ? -1 : 1))[0];
  const id = await shownPair(page);
  check('h opens the hardest unreviewed pair', id === hardest.id, `${id} vs ${hardest.id}`);
  const input = page.locator('.sub-input[data-side="rejected"][data-j="0"]');
  const newText = 'There is a grey mouse in the middle.';
  await input.fill(newText);
  await input.press('Enter');
  await page.waitForSelector('#pair-delta[data-state="pending"]');
  const pending = await message(page, 'score pending');
  check('an edit with another model loaded is "score pending" and says why', pending.includes('elsewhere/clip-vit-l-336'), pending);

  // The export names the pair and offers its old δ, flagged.
  await page.click('#export');
  await page.waitForSelector('#export-dialog');
  check('the export names the pending pair', (await page.textContent('#export-pending')).includes(id));
  check('re-scoring with another model is not offered', await page.isDisabled('#export-rescore'));
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-flagged')]);
  const exported = parseJsonl(fs.readFileSync(await download.path(), 'utf8'));
  const p = exported.pairs.find(q => q.id === id);
  check('the flagged export carries the old δ and the edit', p.delta === hardest.delta && p.sub_sentences.rejected[0] === newText && !p.scores, JSON.stringify(p).slice(0, 300));
  check('the flagged pair is tagged stale-delta', (p.annotation?.tags || []).includes('stale-delta'));
  check('every kept pair has α_D', exported.header.scored === 2000 && exported.pairs.every(q => typeof q.alpha_d === 'number'));

  // A cut file: the header's count against what was read.
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const cut = lines.slice(0, 1200).join('\n') + '\n' + lines[1200].slice(0, 50);
  await page.setInputFiles('#pick-files', { name: 'cut.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(cut) });
  const warning = await message(page, 'announces');
  check('a cut file names both counts', warning.includes('announces 2000 pairs, but the file holds 1200 (1199 read, 1 unreadable)'), warning);
  check('…as a warning', (await page.getAttribute('#message', 'class')).includes('warning'));
  // Random bytes named .parquet.
  const noise = Buffer.alloc(4096, 0).map((_, i) => (i * 2654435761) >>> 13 & 255);
  await page.setInputFiles('#pick-files', { name: 'train.parquet', mimeType: 'application/octet-stream', buffer: noise });
  const notParquet = await message(page, 'not a parquet file');
  check('random bytes named .parquet are "not a parquet file"', notParquet.includes('`train.parquet` is not a parquet file'), notParquet);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  check('messages never widen the page', width <= 1280, `${width} px`);
  // A hub model while the hub cannot be reached: one plain line, no stack trace.
  await page.route('https://huggingface.co/**', r => r.abort('internetdisconnected'));
  await page.click('#load-hub');
  await page.waitForSelector('#model-status[data-state="failed"]', { timeout: 60000 });
  const failed = await page.textContent('#model-status');
  check('an unreachable hub is said plainly', failed.includes('could not download') && !/\n\s+at |wasm-function|TypeError/.test(failed), failed);
  check('…without widening the page', (await page.evaluate(() => document.documentElement.scrollWidth)) <= 1280);
  // Clearing scores asks first.
  const summary = await page.textContent('#dataset-summary');
  await page.click('#clear-scores');
  const ask = await page.textContent('.confirm');
  check('clear scores asks first', /Clear all 1,199 scores\?/.test(ask), ask);
  await page.click('#clear-scores-no');
  check('…and keeps them when told to', (await page.textContent('#dataset-summary')) === summary);
  check('no errors in the page (scored)', errors.length === 0, errors.join('\n'));
}

async function quota(browser, origin) {
  const file = makeDataset(1200, { scored: false, name: 'plain-1200.jsonl' });
  const QUOTA = Number(process.env.E2E_QUOTA || 200000);
  const { page, errors } = await openPage(browser, origin, { quota: QUOTA });
  await page.setInputFiles('#pick-files', file);
  await page.waitForFunction(() => document.querySelector('#dataset-summary')?.textContent.includes('1,200 pairs'), null, { timeout: 60000 });
  await page.waitForFunction(() => document.querySelector('#save-status')?.textContent.includes('not kept in this browser'), null, { timeout: 30000 });
  check('a dataset too big for the quota is said not to be kept', true);
  await page.click('#load-demo-model');
  await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 60000 });

  // Curate three pairs before scoring, two after the storage filled up.
  const curate = async (id, how) => {
    await page.click('#tab-table');
    await page.fill('#filter-text', id);
    await page.waitForFunction(i => document.querySelectorAll('#pair-table tbody tr[data-id]').length === 1 && document.querySelector(`#pair-table tr[data-id="${i}"]`), id);
    await page.click(`#pair-table tr[data-id="${id}"]`);
    if (how === 'drop') await page.keyboard.press('d');
    else { await page.fill('#pair-note', how); await page.click('#pair-tags'); }
    await page.click('#tab-table');
    await page.fill('#filter-text', '');
  };
  const first = ['scale:000003', 'scale:000500', 'scale:001100'];
  await curate(first[0], 'drop');
  await curate(first[1], 'check the colours');
  await curate(first[2], 'drop');
  await page.click('#score');
  await page.waitForSelector('#progress-text[data-state="finished"]', { timeout: 180000 });
  console.log(`scored 1200 pairs with the quota full: ${await page.textContent('#progress-text')}`);
  await page.waitForSelector('#storage-banner', { timeout: 30000 });
  const banner = await page.textContent('#storage-banner');
  check('full storage shows a plain-language banner', banner.includes('Scores computed here are no longer saved') && banner.includes('storage for this page is full') && banner.includes('curation is still saved'), banner);
  check('the banner offers an export', await page.isVisible('#banner-export'));
  check('no raw error reaches the page', !/QuotaExceeded|wasm|at [a-z_]+ \(/.test(await page.textContent('body')));
  const later = ['scale:000010', 'scale:000777'];
  await curate(later[0], 'drop');
  await curate(later[1], 'looked twice');
  await page.waitForSelector('#save-status[data-state="scores-failed"]', { timeout: 10000 });
  const refused = await page.getAttribute('#save-status', 'data-refused');
  await page.waitForTimeout(3000);
  check('a refused save is not retried in a loop', (await page.getAttribute('#save-status', 'data-refused')) === refused, `${refused} → ${await page.getAttribute('#save-status', 'data-refused')}`);
  await page.screenshot({ path: path.join(out, '5-storage-full.png'), fullPage: true });

  // Reload: the file was not kept, so it is picked again, and every curation comes back.
  await page.reload();
  const ask = await message(page, 'pick it again');
  check('after a reload the page names the file to pick again', ask.includes('plain-1200.jsonl'), ask);
  await page.setInputFiles('#pick-files', file);
  const restored = await message(page, 'restored');
  check('all five curated pairs come back', restored.includes('restored 5 curated pair(s)'), restored);
  await page.click('#tab-table');
  await page.selectOption('#filter-status', 'curated');
  const back = (await visibleIds(page)).sort();
  check('…the same five', JSON.stringify(back) === JSON.stringify([...first, ...later].sort()), JSON.stringify(back));
  check('no errors in the page (quota)', errors.length === 0, errors.join('\n'));
}

// A quota too small for anything: the curation itself cannot be saved. The banner says so at
// once, nothing is retried in a loop, and the next visit says what is missing.
async function tinyQuota(browser, origin) {
  const { page, errors, context } = await openPage(browser, origin, { quota: 1000 });
  await page.click('#load-demo');
  await page.waitForSelector('#storage-banner.severe', { timeout: 30000 });
  check('a quota too small for anything is said at once', (await page.textContent('#storage-banner')).includes('Nothing you change here is saved'));
  await page.click('#tab-table');
  const first = (await visibleIds(page))[0];
  await page.click(`#pair-table tr[data-id="${first}"]`);
  await page.keyboard.press('d');
  await page.waitForFunction(() => document.querySelector('#storage-banner')?.textContent.includes('changes to 1 pair(s) are NOT saved'));
  check('…then counts the changes not saved', true);
  const refused = await page.getAttribute('#save-status', 'data-refused');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('d');
  await page.waitForTimeout(1500);
  check('…without trying again in a loop', (await page.getAttribute('#save-status', 'data-refused')) === refused);
  await page.reload();
  await page.click('#load-demo');
  const said = await message(page, 'missing here');
  check('the next visit says changes are missing', said.includes('could not save changes to 2 pair(s)'), said);
  check('no errors in the page (tiny quota)', errors.length === 0, errors.join('\n'));
  await context.close();
}

async function scale(browser, origin) {
  const N = Number(process.env.E2E_SCALE_PAIRS || 83132);
  const file = makeDataset(N, { scored: true, name: `scored-${N}.jsonl` });
  const { header, pairs } = readJsonl(file);
  const hard = pairs.filter(p => p.delta < header.bands.q1).sort((a, b) => a.delta - b.delta || 0);
  const { page, errors } = await openPage(browser, origin);
  const longTasks = () => page.evaluate(() => window.__long || []);
  await page.evaluate(() => { window.__long = []; new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ type: 'longtask', buffered: true }); });

  let t = Date.now();
  await page.setInputFiles('#pick-files', file);
  await page.waitForFunction(n => document.querySelector('#dataset-summary')?.textContent.includes(`${n} pairs`), N.toLocaleString('en-US'), { timeout: 180000 });
  timed(`load ${N} pairs`, Date.now() - t);
  await page.click('#tab-table');
  t = Date.now();
  await page.click('th[data-col="delta"]');
  await page.waitForFunction(id => document.querySelector('#pair-table tbody tr[data-id]')?.dataset.id === id, hard[0].id, { timeout: 60000 });
  timed('sort by δ', Date.now() - t);
  t = Date.now();
  await page.selectOption('#filter-band', 'hard');
  await page.waitForFunction(n => document.querySelector('#row-count')?.dataset.n === String(n), hard.length, { timeout: 60000 });
  timed('filter the hard band', Date.now() - t);
  check(`the hard band holds all ${hard.length} hard pairs`, (await rowCount(page)) === hard.length);
  // Page to the last hard pair.
  t = Date.now();
  await page.evaluate(() => { const b = document.querySelector('#table-scroll'); b.scrollTop = b.scrollHeight; });
  const last = hard[hard.length - 1];
  await page.waitForSelector(`#pair-table tr[data-id="${last.id}"]`, { timeout: 30000 });
  timed('scroll to the end', Date.now() - t);
  check('the table reaches the last hard pair', true);
  await page.screenshot({ path: path.join(out, '6-table-83k.png') });
  await page.click(`#pair-table tr[data-id="${last.id}"]`);
  const pos = await page.textContent('#pair-position');
  check('the pair view knows it is the last of the band', pos.startsWith(`pair ${hard.length.toLocaleString('en-US')} of ${hard.length.toLocaleString('en-US')}`), pos);
  check('▶ stops at the end', await page.isDisabled('#pair-next'));
  await page.keyboard.press('ArrowLeft');
  check('◀ walks the band in δ order', (await shownPair(page)) === hard[hard.length - 2].id);
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('d');
  await page.fill('#pair-tags', 'last-hard');
  await page.click('#pair-note');
  await page.waitForSelector('#save-status[data-state="saved"]', { timeout: 20000 });

  // Typing in the filter: one long task after the pause, not one per key.
  await page.click('#tab-table');
  await page.evaluate(() => { window.__long = []; });
  t = Date.now();
  await page.type('#filter-text', 'purple star', { delay: 40 });
  await page.waitForFunction(() => Number(document.querySelector('#row-count')?.dataset.n) < 20000, null, { timeout: 30000 });
  timed('filter by words (typed, debounced)', Date.now() - t);
  const tasks = await longTasks();
  console.log(`long tasks while typing: ${tasks.length}, longest ${Math.round(Math.max(0, ...tasks))} ms`);
  result.timings['longest task while typing'] = Math.round(Math.max(0, ...tasks));

  // Reload: the kept file reopens by itself, with the curation.
  t = Date.now();
  await page.reload();
  await message(page, 'restored 1 curated pair(s)', 180000);
  timed('reload and reopen from storage', Date.now() - t);
  check('the 83k session survives a reload with its curation', true);
  await page.click('#tab-table');
  await page.selectOption('#filter-status', 'dropped');
  const dropped = await visibleIds(page);
  check('the dropped last hard pair is still dropped', dropped.length === 1 && dropped[0] === last.id, JSON.stringify(dropped));
  check('no errors in the page (scale)', errors.length === 0, errors.join('\n'));
}

async function workers(browser, origin) {
  const file = makeDataset(400, { scored: false, name: 'plain-400.jsonl' });
  const run = async (n) => {
    const { page, errors, context } = await openPage(browser, origin, { query: `?workers=${n}` });
    await page.setInputFiles('#pick-files', file);
    await page.waitForFunction(() => document.querySelector('#dataset-summary')?.textContent.includes('400 pairs'));
    await page.click('#load-demo-model');
    await page.waitForSelector('#model-status[data-state="ready"]', { timeout: 60000 });
    const t = Date.now();
    await page.click('#score');
    await page.waitForSelector('#progress-text[data-state="finished"]', { timeout: 180000 });
    timed(`score 400 pairs in ${n} worker(s)`, Date.now() - t);
    console.log(await page.textContent('#progress-text'));
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    const text = fs.readFileSync(await download.path(), 'utf8');
    check(`no errors in the page (${n} workers)`, errors.length === 0, errors.join('\n'));
    await context.close();
    return parseJsonl(text);
  };
  const one = await run(1);
  const three = await run(3);
  const same = one.pairs.every((p, i) => JSON.stringify(p.scores) === JSON.stringify(three.pairs[i].scores) && p.delta === three.pairs[i].delta);
  check('3 workers give the scores of 1 worker, bit for bit', one.pairs.length === 400 && same);
  check('…and the same δ̄', one.header.delta_mean === three.header.delta_mean);
}

const scenarios = { demo, scored, quota, 'tiny-quota': tinyQuota, scale, workers };
const { server, origin } = await serve();
const browser = await launch();
try {
  for (const [name, run] of Object.entries(scenarios)) {
    if (only.length && !only.includes(name)) continue;
    console.log(`\n--- ${name}`);
    const t = Date.now();
    try {
      await run(browser, origin);
    } catch (e) {
      result.failed++;
      console.log(`FAIL ${name}: ${e.stack || e}`);
    }
    timed(`scenario ${name}`, Date.now() - t);
  }
} finally {
  await browser.close();
  server.close();
  fs.rmSync(path.join(out, 'generated'), { recursive: true, force: true });
}
fs.writeFileSync(path.join(out, 'timings.json'), JSON.stringify(result.timings, null, 2) + '\n');
console.log(`${result.passed} passed, ${result.failed} failed`);
process.exit(result.failed === 0 ? 0 : 1);
