// End-to-end test of skein's web UI in headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core. Started by crates/skein/tests/ui.rs, which runs the real server, loads real
// traces over OTLP and passes: SKEIN_URL, OTLP_URL, SKEIN_IDS (JSON), SCREENSHOT_DIR, OTLP_FILE, JAEGER_FILE.
// Every step asserts on real DOM content and saves a screenshot.
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';
import { denseGraph, denseOtlp, DENSE_SERVICES, DENSE_EDGES } from './ui_graph.mjs';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core'); // resolved through NODE_PATH

const base = process.env.SKEIN_URL;
const ids = JSON.parse(process.env.SKEIN_IDS);
const shots = process.env.SCREENSHOT_DIR;
assert.ok(base && shots, 'SKEIN_URL and SCREENSHOT_DIR must be set');

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'skein-ui-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
  viewport: { width: 1440, height: 900 },
  colorScheme: 'light',
  acceptDownloads: true,
  permissions: ['clipboard-read', 'clipboard-write'],
});
const page = context.pages()[0] || (await context.newPage());
const consoleErrors = [];
page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
page.on('console', (m) => m.type() === 'error' && consoleErrors.push(`console: ${m.text()}`));
page.setDefaultTimeout(30000);

let step = '';
const results = {};
async function shot(name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}
async function run(name, fn) {
  step = name;
  process.stdout.write(`step: ${name} … `);
  await fn();
  console.log('ok');
}
const text = (sel) => page.locator(sel).first().innerText();

try {
  // ---- search -------------------------------------------------------------------------------
  await run('search page lists recent traces with counts, chips and a scatter plot', async () => {
    await page.goto(`${base}/search?lookback=1h&limit=50`);
    await page.waitForSelector('.result');
    const n = await page.locator('.result').count();
    assert.ok(n >= 12, `expected at least 12 results, got ${n}`);
    const list = await text('.result-list');
    assert.match(list, /frontend: GET \/checkout/);
    assert.match(list, /payment-service 2/);
    assert.match(list, /100,000 spans/);
    assert.ok((await page.locator('svg.scatter circle.dot').count()) >= 12);
    assert.ok((await page.locator('svg.scatter circle.dot.error').count()) >= 2, 'error traces are red dots');
    const options = await page.locator('#f-service option').allInnerTexts();
    for (const s of ['frontend', 'payment-service', 'cart-service', 'gateway']) assert.ok(options.includes(s), `service ${s} offered`);
    await shot('01-search');
  });

  await run('search by service and operation puts the query in the URL', async () => {
    await page.selectOption('#f-service', 'payment-service');
    await page.waitForFunction(() => [...document.querySelectorAll('#f-operation option')].some((o) => o.value === 'Charge'));
    await page.selectOption('#f-operation', 'Charge');
    await page.click('#f-submit');
    await page.waitForFunction(() => location.search.includes('service=payment-service') && document.querySelectorAll('.result').length === 2);
    assert.match(page.url(), /operation=Charge/);
    // a shared link reproduces the search
    await page.goto(page.url());
    await page.waitForSelector('.result');
    assert.equal(await page.locator('.result').count(), 2);
    assert.equal(await page.inputValue('#f-service'), 'payment-service');
  });

  await run('attribute filter and durations on any span vs the whole trace', async () => {
    await page.goto(`${base}/search?lookback=1h&tags=${encodeURIComponent('{"http.response.status_code":"500"}')}`);
    await page.waitForSelector('.result');
    assert.equal(await page.locator('.result').count(), 1);
    assert.match(await text('.result'), /GET \/product\/\{id\}/);
    assert.equal(await page.inputValue('#f-tags'), 'http.response.status_code=500');
    // 1.5s: only the slow checkout's trace lasts that long (the 100,000-span trace is 900ms)
    await page.goto(`${base}/search?lookback=1h&minDuration=1.5s&durationScope=trace&limit=20`);
    await page.waitForSelector('.result');
    assert.equal(await page.locator('.result').count(), 1);
    assert.ok(await page.isChecked('#f-scope-trace'));
    assert.equal(await page.getAttribute('.result', 'data-trace-id'), ids.checkoutSlow);
    // any one span of at least 500ms: the slow checkout (Charge) and the big trace's root
    await page.goto(`${base}/search?lookback=1h&minDuration=500ms&limit=20`);
    await page.waitForSelector('.result');
    assert.equal(await page.locator('.result').count(), 2);
  });

  await run('attribute autocomplete offers keys, then values', async () => {
    await page.goto(`${base}/search?lookback=1h`);
    await page.waitForSelector('.result');
    await page.click('#f-tags');
    await page.keyboard.type('payment.cur');
    const suggestions = (want) => page.waitForFunction((w) => [...document.querySelectorAll('.suggest li')].map((li) => li.textContent).join('|') === w, want);
    await suggestions('payment.currency');
    await page.keyboard.press('Tab');
    assert.equal(await page.inputValue('#f-tags'), 'payment.currency=');
    await suggestions('EUR');
    await shot('01b-autocomplete');
    await page.click('.suggest li:has-text("EUR")');
    assert.equal(await page.inputValue('#f-tags'), 'payment.currency=EUR ');
    await page.click('#f-submit');
    await page.waitForFunction(() => location.search.includes('payment.currency') && document.querySelectorAll('.result').length === 2);
  });

  await run('no matches says what to change', async () => {
    await page.goto(`${base}/search?lookback=1h&service=frontend&minDuration=1h`);
    await page.waitForSelector('.state-empty');
    assert.match(await text('.state-empty'), /Widen the time range/);
    await page.goto(`${base}/search?lookback=1h&minDuration=fast`);
    await page.waitForSelector('.state-error');
    assert.match(await text('.state-error'), /minDuration/);
  });

  await run('sort, keyboard selection and picking two traces to compare', async () => {
    await page.goto(`${base}/search?lookback=1h&service=frontend&operation=${encodeURIComponent('GET /checkout')}`);
    await page.waitForSelector('.result');
    await page.selectOption('#sort', 'longest');
    assert.equal(await page.getAttribute('.result >> nth=0', 'data-trace-id'), ids.checkoutSlow);
    await page.selectOption('#sort', 'shortest');
    assert.equal(await page.getAttribute('.result >> nth=0', 'data-trace-id'), ids.checkout);
    await page.locator('body').press('j');
    await page.keyboard.press('x');
    await page.keyboard.press('j');
    await page.keyboard.press('x');
    assert.equal(await page.locator('.result.selected').getAttribute('data-trace-id'), ids.checkoutSlow);
    assert.ok(await page.isEnabled('#compare-picked'));
    await shot('02-search-picked');
    await page.click('#compare-picked');
    await page.waitForSelector('#diff-table');
  });

  // ---- compare ------------------------------------------------------------------------------
  await run('compare shows the structural diff with the latency difference per node', async () => {
    assert.match(page.url(), new RegExp(`/compare\\?a=${ids.checkout}&b=${ids.checkoutSlow}`));
    const verdict = await text('#verdict');
    assert.match(verdict, /B is 1\.77s slower than A/);
    assert.match(verdict, /Most of it is in payment-service: Charge \(\+1\.77s of its own time\)/);
    const charge = page.locator('tr.diff-row[data-key="payment-service: Charge"]');
    assert.match(await charge.innerText(), /\+1\.77s/);
    const redis = page.locator('tr.diff-row[data-key="cart-service: redis GET"]');
    assert.match(await redis.innerText(), /8ms\s+8ms\s+0ns/);
    await shot('03-compare');
    // Jaeger's compare URL shape works too
    await page.goto(`${base}/trace/${ids.checkout}...${ids.checkoutSlow}`);
    await page.waitForSelector('#diff-table');
  });

  // ---- trace --------------------------------------------------------------------------------
  await run('a trace opens at /trace/{id} with header, waterfall and critical path', async () => {
    await page.goto(`${base}/search?lookback=1h&service=payment-service`);
    await page.waitForSelector('.result');
    await page.click(`.result[data-trace-id="${ids.checkoutSlow}"] a.result-title`);
    await page.waitForSelector('.wf-row');
    assert.equal(new URL(page.url()).pathname, `/trace/${ids.checkoutSlow}`);
    assert.equal(await text('#trace-id'), ids.checkoutSlow);
    assert.match(await text('.fact-spans'), /9/);
    assert.match(await text('.fact-errors'), /1/);
    assert.match(await text('.fact-duration'), /1\.89s/);
    assert.match(await text('.trace-facts'), /UTC[+-]\d\d:\d\d/);
    assert.equal(await page.locator('.wf-row').count(), 9);
    // ListRecommendations runs beside PlaceOrder and ends first: the only span off the path
    const offPath = await page.locator('.wf-row:not(.crit) .op').allInnerTexts();
    assert.deepEqual(offPath, ['ListRecommendations'], 'critical path');
    assert.equal(await page.locator('.wf-row.crit').count(), 8);
    assert.equal(await page.locator('.wf-row.err .op').innerText(), 'Charge');
    await shot('04-trace');
  });

  await run('collapse and expand a subtree', async () => {
    const place = page.locator('.wf-row', { hasText: 'PlaceOrder' });
    await place.locator('button.tog').click();
    await page.waitForFunction(() => document.querySelectorAll('.wf-row').length === 6);
    assert.match(await place.innerText(), /\+3/);
    await shot('05-trace-collapsed');
    await place.locator('button.tog').click();
    await page.waitForFunction(() => document.querySelectorAll('.wf-row').length === 9);
  });

  await run('span detail: attributes, status, events, resource, raw JSON', async () => {
    await page.locator('.wf-row', { hasText: 'Charge' }).locator('.wf-name').click();
    await page.waitForSelector('#detail .detail-body');
    const d = await text('#detail');
    assert.match(d, /payment\.amount/);
    assert.match(d, /42\.5/);
    assert.match(d, /ERROR: card declined/);
    assert.match(d, /exception/);
    assert.match(d, /CardDeclined/);
    assert.match(d, /on critical path/);
    assert.match(d, /Links \(1\)/);
    assert.match(new URL(page.url()).search, new RegExp(`uiFind=${ids.chargeSlow}`));
    await page.click('#detail summary:has-text("Resource")');
    assert.match(await text('#detail'), /ui-test-host/);
    await page.click('#detail summary:has-text("Raw JSON")');
    assert.match(await text('#detail pre.raw'), /"startTimeUnixNano"/);
    await shot('06-span-detail');
  });

  await run('keyboard: j/k move, Enter opens, ← collapses, / finds', async () => {
    await page.keyboard.press('Escape');
    await page.waitForSelector('#detail', { state: 'hidden' });
    await page.keyboard.press('k'); // from Charge up to PlaceOrder
    assert.match(await text('.wf-row.selected'), /PlaceOrder/);
    await page.keyboard.press('ArrowLeft');
    await page.waitForFunction(() => document.querySelectorAll('.wf-row').length === 6);
    await page.keyboard.press('ArrowRight');
    await page.waitForFunction(() => document.querySelectorAll('.wf-row').length === 9);
    await page.keyboard.press('j');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#detail .detail-body');
    assert.match(await text('#detail h2'), /Charge/);
    await page.keyboard.press('Escape');
    await page.keyboard.press('/');
    await page.keyboard.type('redis');
    await page.waitForFunction(() => document.querySelector('#find-count').textContent === '1 of 1');
    assert.match(await text('.wf-row.match'), /redis GET/);
    await page.keyboard.press('Escape'); // leaves the find box
    await shot('07-find');
  });

  await run('a link in the detail panel opens the linked trace at the linked span', async () => {
    await page.goto(`${base}/trace/${ids.checkoutSlow}?uiFind=${ids.chargeSlow}`);
    await page.waitForSelector('#detail a.span-link');
    await page.click('#detail a.span-link');
    await page.waitForFunction((id) => location.pathname === `/trace/${id}`, ids.productError);
    await page.waitForSelector('#detail .detail-body');
    assert.match(await text('#detail h2'), /GetProduct/);
    assert.match(await text('.wf-row.selected'), /GetProduct/);
  });

  await run('flame graph and statistics views', async () => {
    await page.goto(`${base}/trace/${ids.checkoutSlow}`);
    await page.waitForSelector('.wf-row');
    await page.keyboard.press('2');
    await page.waitForSelector('#flame canvas.flame');
    const box = await page.locator('#flame canvas.flame').boundingBox();
    assert.ok(box.width > 500 && box.height > 100, 'flame graph has a size');
    // the root box spans the full width in row 0: clicking it selects the root
    await page.mouse.click(box.x + box.width / 2, box.y + 10);
    await page.waitForSelector('#detail .detail-body');
    assert.match(await text('#detail h2'), /GET \/checkout/);
    await shot('08-flame');
    await page.keyboard.press('Escape');
    await page.keyboard.press('3');
    await page.waitForSelector('#stats-table');
    const stats = await text('#stats-table');
    assert.match(stats, /payment-service\s+Charge\s+1\s+1\s+1\.82s\s+1\.81s/, "Charge: count, errors, total, self time");
    await shot('09-stats');
  });

  await run('minimap drag zooms the time axis, p walks the critical path, copy buttons, g s', async () => {
    await page.goto(`${base}/trace/${ids.checkoutSlow}`);
    await page.waitForSelector('.wf-row');
    const ticks = () => page.locator('.wf-ruler .tick').allInnerTexts();
    assert.equal((await ticks())[0], '0ns');
    const mm = await page.locator('canvas.minimap').boundingBox();
    await page.mouse.move(mm.x + mm.width * 0.5, mm.y + 20);
    await page.mouse.down();
    await page.mouse.move(mm.x + mm.width - 2, mm.y + 30, { steps: 6 });
    await page.mouse.up();
    await page.waitForSelector('.wf-zoom button');
    assert.match(await text('.wf-zoom'), /Zoomed to 9\d\dms – 1\.8\ds/);
    assert.match((await ticks())[0], /^9\d\dms$/, 'the ruler starts at the window');
    await shot('09b-trace-zoomed');
    await page.click('.wf-zoom button');
    await page.waitForFunction(() => !document.querySelector('.wf-zoom').textContent);
    assert.equal((await ticks())[0], '0ns');
    // p: the next span on the critical path
    await page.locator('.wf-scroll').focus();
    await page.keyboard.press('p');
    assert.match(await text('.wf-row.selected'), /GET \/checkout/);
    await page.keyboard.press('p');
    assert.match(await page.locator('.wf-row.selected').getAttribute('class'), /\bcrit\b/);
    assert.match(await text('.wf-row.selected'), /GetCart/);
    // copy buttons put the id and a deep link on the clipboard
    await page.click('.trace-title button.copy');
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), ids.checkoutSlow);
    assert.equal(await text('.trace-title button.copy'), 'copied');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#detail .detail-body');
    await page.click('#detail button.copy:has-text("copy link")');
    const spanId = await page.locator('#detail .detail-ids code').innerText();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), `${base}/trace/${ids.checkoutSlow}?uiFind=${spanId}`);
    await page.keyboard.press('Escape');
    // g s: go to search
    await page.locator('body').press('g');
    await page.keyboard.press('s');
    await page.waitForFunction(() => location.pathname === '/search');
    await page.goto(`${base}/trace/${ids.checkoutSlow}`);
    await page.waitForSelector('.wf-row');
  });

  await run('download the trace as Jaeger JSON', async () => {
    await page.keyboard.press('1');
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('#download-jaeger')]);
    const body = JSON.parse(fs.readFileSync(await dl.path(), 'utf8'));
    assert.equal(body.data[0].traceID, ids.checkoutSlow);
    assert.equal(body.data[0].spans.length, 9);
  });

  await run('dark theme toggle', async () => {
    await page.click('#theme');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'dark');
    await shot('10-trace-dark');
    await page.click('#theme');
    assert.equal(await page.getAttribute('html', 'data-theme'), 'light');
  });

  await run('unknown trace says so and what to do', async () => {
    await page.goto(`${base}/trace/00000000000000000000000000abcdef`);
    await page.waitForSelector('.state-empty');
    assert.match(await text('.state-empty'), /Trace not found/);
  });

  // ---- odd links and names ------------------------------------------------------------------
  await run('a trace link with broken percent-encoding says so, and the app stays usable', async () => {
    for (const bad of ['%E0%A4%A', '%']) {
      await page.goto(`${base}/trace/${bad}`);
      await page.waitForSelector('main[data-view="missing"] .state-empty');
      assert.match(await text('.state-empty'), /No such page[\s\S]*percent-encoding is broken/);
    }
    await page.click('nav a[data-nav="search"]');
    await page.waitForSelector('.result');
  });

  // the /api/ui/search request a page load sends
  const searchRequest = async (query) => {
    const [req] = await Promise.all([page.waitForRequest((r) => r.url().includes('/api/ui/search?')), page.goto(`${base}/search?${query}`)]);
    return new URL(req.url()).searchParams;
  };

  await run('search links keep their filters: an unknown service or operation, key=value tags', async () => {
    let p = await searchRequest('lookback=1h&service=nosuchservice');
    assert.equal(p.get('service'), 'nosuchservice');
    await page.waitForSelector('.state-empty');
    assert.match(await text('.state-empty'), /No traces match/);
    assert.equal(await page.inputValue('#f-service'), 'nosuchservice');
    p = await searchRequest('lookback=1h&service=constructor&operation=nosuchop');
    assert.equal(p.get('operation'), 'nosuchop');
    await page.waitForSelector('.state-empty');
    assert.equal(await page.inputValue('#f-operation'), 'nosuchop');
    p = await searchRequest('lookback=1h&tags=k0%3Cimg%3D1');
    assert.equal(p.get('tags'), '{"k0<img":"1"}');
    assert.equal(await page.inputValue('#f-tags'), 'k0<img=1');
    // tags that cannot be read are reported, in the link and from the form, never dropped
    let searched = false;
    const watch = (r) => { if (r.url().includes('/api/ui/search?')) searched = true; };
    page.on('request', watch);
    await page.goto(`${base}/search?lookback=1h&tags=${encodeURIComponent('[1,2]')}`);
    await page.waitForSelector('.state-error');
    assert.match(await text('.state-error'), /The search failed[\s\S]*parameter tags: "\[1,2\]"/);
    assert.equal(await page.inputValue('#f-tags'), '[1,2]');
    await page.click('#f-submit');
    await page.waitForFunction(() => /Attributes: cannot read/.test(document.querySelector('.state-error')?.textContent));
    page.off('request', watch);
    assert.equal(searched, false, 'no search without the filter');
  });

  await run('a bad custom time range is reported with the form shown; From/To show only for a custom range', async () => {
    for (const [query, param] of [['start=garbage&end=abc', 'start'], ['start=99999999999999999999&end=0', 'start'], [`start=${Date.now() * 1000 - 3600e6}&end=abc`, 'end']]) {
      await page.goto(`${base}/search?lookback=custom&${query}`);
      await page.waitForSelector('.state-error');
      assert.match(await text('.state-error'), new RegExp(`The search failed[\\s\\S]*parameter ${param}: `));
      assert.equal(await page.inputValue('#f-lookback'), 'custom');
      assert.ok(await page.isVisible('#f-start'), 'the custom range fields are shown');
    }
    await shot('16-search-bad-range');
    await page.goto(`${base}/search?lookback=1h`);
    await page.waitForSelector('.result');
    assert.equal(await page.isVisible('#f-start'), false, 'From/To hidden for a quick lookback');
    await page.selectOption('#f-lookback', 'custom');
    assert.ok(await page.isVisible('#f-start'));
  });

  await run('a service named ".." gets its operations', async () => {
    await page.goto(`${base}/search?lookback=1h&service=..`);
    await page.waitForFunction(() => [...document.querySelectorAll('#f-operation option')].some((o) => o.value === 'dot-op'));
    await page.waitForSelector('.result');
    assert.equal(await page.getAttribute('.result', 'data-trace-id'), ids.odd);
  });

  // Text with a right-to-left override must sit in an isolating element (or, in tooltips,
  // between U+2068 and U+2069), so it cannot reorder the text after it.
  const unisolated = () => page.evaluate(() => {
    const bad = [];
    const isolatedInText = (t) => !t.replace(/\u2068[^\u2068\u2069]*\u2069/g, '').includes('\u202e');
    const walk = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
    for (let n; (n = walk.nextNode());) {
      const el = n.parentElement;
      if (!n.data.includes('\u202e') || el.closest('option') || isolatedInText(n.data)) continue;
      if (!['isolate', 'isolate-override', 'plaintext'].includes(getComputedStyle(el).unicodeBidi) || !n.data.endsWith('\u202e')) bad.push(`${el.tagName}.${el.className}: ${JSON.stringify(n.data.slice(0, 60))}`);
    }
    for (const el of document.querySelectorAll('main [title]')) if (!isolatedInText(el.title)) bad.push(`title of ${el.tagName}.${el.className}`);
    return bad;
  });
  // where the characters of `a` and `b` are, left to right, in the first element matching sel
  const xOf = (sel, ...texts) => page.evaluate(([sel, texts]) => texts.map((s) => {
    const walk = document.createTreeWalker(document.querySelector(sel), NodeFilter.SHOW_TEXT);
    for (let n; (n = walk.nextNode());) {
      const k = n.data.indexOf(s);
      if (k < 0) continue;
      const r = document.createRange();
      r.setStart(n, k);
      r.setEnd(n, k + 1);
      return r.getBoundingClientRect().left;
    }
    return NaN;
  }), [sel, texts]);

  await run('names with a right-to-left override do not reorder the text around them', async () => {
    await page.goto(`${base}/trace/${ids.odd}`);
    await page.waitForSelector('.wf-row');
    const [b, colon, g] = await xOf('.trace-title h1', 'bidi', ':', 'gnp');
    assert.ok(b < colon && colon < g, `"bidi…: gnp.exe" reads left to right (${b}, ${colon}, ${g})`);
    await page.hover('.wf-row >> nth=0 >> .wf-name');
    assert.deepEqual(await unisolated(), [], 'trace header, chips and rows');
    await page.locator('.wf-row >> nth=0').locator('.wf-name').click();
    await page.waitForSelector('#detail .detail-body');
    assert.deepEqual(await unisolated(), [], 'detail panel');
    await page.keyboard.press('3');
    await page.waitForSelector('#stats-table');
    assert.deepEqual(await unisolated(), [], 'statistics');
    await page.goto(`${base}/search?lookback=1h&service=${encodeURIComponent(ids.bidiService)}`);
    await page.waitForSelector('.result');
    const [rb, rcolon, rg] = await xOf('.result-title', 'bidi', ':', 'gnp');
    assert.ok(rb < rcolon && rcolon < rg, 'search result title');
    assert.deepEqual(await unisolated(), [], 'search results');
    await page.goto(`${base}/compare?a=${ids.odd}&b=${ids.odd}`);
    await page.waitForSelector('#diff-table');
    assert.deepEqual(await unisolated(), [], 'compare');
  });

  await run('a 16 KB span name is clamped in the detail panel; dropped attributes, events and links are counted', async () => {
    await page.goto(`${base}/trace/${ids.odd}?uiFind=${ids.longSpan}`);
    await page.waitForSelector('#detail .detail-body');
    const head = await page.locator('#detail .detail-head').boundingBox();
    const body = await page.locator('#detail .detail-body').boundingBox();
    assert.ok(head.height < 260, `the panel header stays small (${head.height}px)`);
    assert.ok(body.y < 700, `the panel body is in view (${body.y}px)`);
    await shot('17-long-name');
    assert.equal(await page.locator('#detail h2').textContent(), ids.longName, 'the whole name is in the page');
    await page.click('#detail .name-toggle');
    assert.ok((await page.locator('#detail h2').boundingBox()).height > 600, 'unfolds');
    await page.click('#detail .name-toggle');
    assert.ok((await page.locator('#detail h2').boundingBox()).height < 120, 'folds again');
    await page.click('#detail button.copy:has-text("copy name")');
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), ids.longName);
    const d = await text('#detail .detail-body');
    assert.match(d, /Attributes \(1, 172 dropped\)/);
    assert.match(d, /172 attributes were dropped by the sender or by skein's limits/);
    assert.match(d, /Events \(1, 3 dropped\)/);
    assert.match(d, /3 events were dropped/);
    assert.match(d, /2 attributes were dropped/, "the event's own dropped attributes");
    assert.match(d, /Links \(0, 2 dropped\)/);
    assert.match(d, /2 links were dropped/);
    assert.match(d, /Resource \(\d+, 5 dropped\)/, "the resource's dropped attributes");
  });

  await run('a 50-deep chain: every row shows its service and operation, and its depth', async () => {
    // rows on screen whose service or operation is (nearly) cut off by the indent
    const unreadable = () => page.evaluate(() => [...document.querySelectorAll('.wf-row')].filter((row) => {
      const name = row.querySelector('.wf-name').getBoundingClientRect();
      const shown = (sel) => { const r = row.querySelector(sel).getBoundingClientRect(); return Math.min(r.right, name.right) - r.left; };
      return shown('.svc') < 40 || shown('.op') < 30;
    }).map((row) => `depth ${Number(row.getAttribute('aria-level')) - 1}`));
    const check = async (what) => {
      for (const end of ['top', 'bottom']) {
        await page.evaluate((end) => { const sc = document.querySelector('.wf-scroll'); sc.scrollTop = end === 'top' ? 0 : sc.scrollHeight; }, end);
        await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
        assert.deepEqual(await unreadable(), [], `${what}, ${end}`);
      }
      assert.equal(await text(`.wf-row[aria-level="${ids.deepSpans}"] .depth`), String(ids.deepSpans - 1), 'the deepest row shows its depth');
    };
    await page.goto(`${base}/trace/${ids.deep}`);
    await page.waitForSelector('.wf-row');
    await check('1440 px wide');
    await page.setViewportSize({ width: 1024, height: 900 });
    await page.locator('.wf-row .op').first().click();
    await page.waitForSelector('#detail .detail-body');
    await check('1024 px wide with the detail panel open');
    await shot('18-deep-chain');
    await page.setViewportSize({ width: 1440, height: 900 });
  });

  // ---- service map --------------------------------------------------------------------------
  // What a laid-out map looks like to a user: every node box inside the visible map area,
  // each service once, the edges drawn.
  const mapStructure = () => page.evaluate(() => {
    const view = document.querySelector('#map-view').getBoundingClientRect();
    const nodes = [...document.querySelectorAll('#service-map .node')];
    const outside = nodes.filter((n) => {
      const r = n.getBoundingClientRect();
      return r.left < view.left - 0.5 || r.top < view.top - 0.5 || r.right > view.right + 0.5 || r.bottom > view.bottom + 0.5;
    }).map((n) => n.dataset.service);
    const svg = document.querySelector('#service-map');
    return {
      services: nodes.map((n) => n.dataset.service), outside, edges: [...document.querySelectorAll('#service-map .edge')].map((e) => e.dataset.edge),
      scale: Number(svg.dataset.scale), layers: Number(svg.dataset.layers), backEdges: Number(svg.dataset.backEdges), transform: svg.querySelector('.zoom-layer').getAttribute('transform'),
    };
  });
  const apiDeps = async (query) => (await fetch(`${base}/api/ui/dependencies?${query}`)).json();
  const assertDrawnOnce = (m, deps) => {
    assert.equal(new Set(m.services).size, m.services.length, 'each service drawn once');
    assert.deepEqual([...m.services].sort(), deps.services.map((s) => s.name).sort(), 'every service of the API is drawn');
    assert.deepEqual([...m.edges].sort(), deps.edges.map((e) => `${e.parent}->${e.child}`).sort(), 'every edge of the API is drawn, once');
    assert.deepEqual(m.outside, [], 'after fitting, no service is outside the view');
  };

  await run('service map: nodes, edges with calls/error rate/latency, fit, zoom, pan, highlight, click-through', async () => {
    await page.goto(`${base}/map`);
    await page.waitForSelector('#service-map .node');
    const deps = await apiDeps('lookback=3600000');
    const m = await mapStructure();
    for (const s of ['frontend', 'cart-service', 'checkout-service', 'payment-service', 'shipping-service', 'catalog-service', 'gateway']) assert.ok(m.services.includes(s), `node ${s}`);
    assertDrawnOnce(m, deps);
    // callers are left of callees
    const x = (s) => page.locator(`#service-map .node[data-service="${s}"]`).evaluate((n) => n.getBoundingClientRect().left);
    assert.ok(await x('frontend') < await x('checkout-service') && await x('checkout-service') < await x('payment-service'), 'frontend → checkout → payment, left to right');
    const edge = page.locator('#service-map .edge[data-edge="checkout-service->payment-service"]');
    assert.match(await page.locator('#service-map .edge-label[data-edge="checkout-service->payment-service"]').innerHTML(), /2 calls · 50% err · /);
    assert.equal(await edge.getAttribute('class'), 'edge has-errors');
    assert.match(await page.locator('#service-map .edge-label[data-edge="frontend->cart-service"]').innerHTML(), /2 calls · 0% err/);
    await shot('11-service-map');
    // hover: the service, its edges and its neighbours stay, the rest dims
    await page.hover('#service-map .node[data-service="checkout-service"]');
    assert.ok(await page.locator('#service-map.focus-mode').count() === 1);
    const lit = await page.locator('#service-map .node.hl').evaluateAll((els) => els.map((e) => e.dataset.service).sort());
    assert.deepEqual(lit, ['checkout-service', 'frontend', 'payment-service', 'shipping-service']);
    assert.equal(await page.locator('#service-map .edge.hl').count(), 3);
    await shot('11a-service-map-hover');
    await page.mouse.move(5, 5);
    assert.equal(await page.locator('#service-map.focus-mode').count(), 0);
    // keyboard and wheel zoom, drag to pan, 0 fits again
    await page.locator('#map-view').focus();
    await page.keyboard.press('+');
    const zoomed = await mapStructure();
    assert.ok(zoomed.scale > m.scale, `+ zooms in (${m.scale} → ${zoomed.scale})`);
    await page.keyboard.press('0');
    assert.equal((await mapStructure()).transform, m.transform, '0 fits again');
    const box = await page.locator('#map-view').boundingBox();
    await page.mouse.move(box.x + 20, box.y + 20);
    await page.mouse.wheel(0, -400);
    await page.waitForFunction((k) => Number(document.querySelector('#service-map').dataset.scale) > k, m.scale);
    await page.keyboard.press('0');
    await page.mouse.move(box.x + 10, box.y + box.height - 10);
    await page.mouse.down();
    await page.mouse.move(box.x + 110, box.y + box.height - 60, { steps: 5 });
    await page.mouse.up();
    const panned = await mapStructure();
    assert.notEqual(panned.transform, m.transform, 'dragging pans');
    assert.equal(new URL(page.url()).pathname, '/map', 'a drag is not a click');
    await page.click('#map-fit');
    await page.click('#service-map .node[data-service="payment-service"]');
    await page.waitForSelector('.result');
    assert.match(page.url(), /\/search\?service=payment-service/);
  });

  await run('service map of a dense graph with cycles (40 services, 120 edges) stays on screen, layered', async () => {
    // sent now, five hours back, so the other windows keep their small graph
    const t0 = Date.now() - 5 * 3600_000;
    const graph = denseGraph();
    const r = await fetch(`${process.env.OTLP_URL}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(denseOtlp(graph, BigInt(t0) * 1_000_000n)) });
    assert.ok(r.ok, `OTLP export: ${r.status} ${await r.text()}`);
    const query = `lookback=3600000&endTs=${t0 + 1800_000}`;
    let deps;
    for (let k = 0; k < 100; k++) {
      deps = await apiDeps(query);
      if (deps.edges.length >= DENSE_EDGES) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.deepEqual(deps.edges.map((e) => `${e.parent}->${e.child}`).sort(), graph.edges.map((e) => `${e.parent}->${e.child}`).sort(), 'the API reports the generated edges');
    await page.goto(`${base}/map?${query}`);
    await page.waitForSelector('#service-map .node');
    const m = await mapStructure();
    assert.equal(m.services.length, DENSE_SERVICES);
    assert.equal(m.edges.length, DENSE_EDGES);
    assertDrawnOnce(m, deps);
    assert.ok(m.backEdges > 0, 'the cycles show as back edges');
    assert.equal(await page.locator('#service-map .edge.back').count(), m.backEdges);
    assert.ok(m.layers >= 3 && m.layers <= 12, `layered by call depth (${m.layers} columns)`);
    // forward edges go left to right, back edges right to left
    const wrong = await page.evaluate(() => {
      const left = (s) => document.querySelector(`#service-map .node[data-service="${s}"]`).getBoundingClientRect().left;
      return [...document.querySelectorAll('#service-map .edge:not(.self)')].filter((e) => {
        const [a, b] = e.dataset.edge.split('->');
        return e.classList.contains('back') ? left(b) >= left(a) : left(b) <= left(a);
      }).map((e) => e.dataset.edge);
    });
    assert.deepEqual(wrong, [], 'edge directions match the columns');
    await shot('11b-service-map-dense');
    await page.hover('#service-map .node[data-service="dense-14"]');
    await shot('11c-service-map-dense-hover');
  });

  // ---- upload -------------------------------------------------------------------------------
  await run('upload an OTLP JSON file and view it', async () => {
    await page.goto(`${base}/upload`);
    await page.setInputFiles('#upload-file', process.env.OTLP_FILE);
    await page.waitForSelector('.wf-row');
    assert.equal(new URL(page.url()).pathname, `/trace/${ids.fileTrace}`);
    assert.match(await text('.trace-title'), /from a file/);
    assert.match(await text('.trace-title h1'), /file-frontend: GET \/checkout/);
    assert.equal(await page.locator('.wf-row').count(), 9);
    await page.locator('.wf-row', { hasText: 'Charge' }).locator('.wf-name').click();
    await page.waitForSelector('#detail .detail-body');
    assert.match(await text('#detail'), /payment\.currency/);
    await shot('12-upload-otlp');
    // compare the uploaded trace with a stored one ("Compare with…" asks for the other id)
    await page.keyboard.press('Escape');
    page.once('dialog', (d) => d.accept(ids.checkout));
    await page.click('#compare-with');
    await page.waitForSelector('#diff-table');
    assert.match(page.url(), new RegExp(`/compare\\?a=${ids.fileTrace}&b=${ids.checkout}`));
    assert.match(await text('#verdict'), /B is 40ms faster than A/);
    // the roots' services differ (file-frontend vs frontend), so the trees match from nowhere
    assert.equal(await page.locator('tr.diff-row.only-a[data-key="file-frontend: GET /checkout"]').count(), 1);
    assert.equal(await page.locator('tr.diff-row.only-b[data-key="frontend: GET /checkout"]').count(), 1);
    await shot('12b-compare-uploaded');
  });

  await run('upload a Jaeger JSON file', async () => {
    await page.goto(`${base}/upload`);
    await page.setInputFiles('#upload-file', process.env.JAEGER_FILE);
    await page.waitForSelector('.wf-row');
    assert.match(await text('.trace-title'), /from a file/);
    assert.match(await text('.wf-row.err >> nth=1'), /GetProduct/);
    await page.locator('.wf-row', { hasText: 'GetProduct' }).locator('.wf-name').click();
    await page.waitForSelector('#detail .detail-body');
    assert.match(await text('#detail'), /product not found/);
    await page.goto(`${base}/upload`);
    await page.setInputFiles('#upload-file', { name: 'notes.json', mimeType: 'application/json', buffer: Buffer.from('{"hello": "world"}') });
    await page.waitForSelector('.state-error');
    assert.match(await text('.state-error'), /notes\.json.*neither Jaeger JSON/s);
    await shot('13-upload-error');
  });

  // ---- the big trace ------------------------------------------------------------------------
  await run(`a ${ids.bigSpans.toLocaleString('en-US')}-span trace: first paint, virtualised rows, scrolling`, async () => {
    const runs = [];
    for (let k = 0; k < 3; k++) {
      await page.goto('about:blank');
      await page.goto(`${base}/trace/${ids.big}`);
      await page.waitForFunction(() => document.body.dataset.waterfallPainted === 'true', null, { timeout: 60000 });
      runs.push(await page.evaluate(() => {
        const mark = (n) => performance.getEntriesByName(n)[0]?.startTime;
        const res = performance.getEntriesByType('resource').find((e) => e.name.includes('/api/ui/traces/'));
        return {
          fetched: mark('skein:trace-fetched'), shown: mark('skein:trace-shown'), painted: mark('skein:waterfall-painted'),
          requested: res.requestStart, serverMs: res.responseStart - res.requestStart, downloadMs: res.responseEnd - res.responseStart, bytes: res.encodedBodySize,
        };
      }));
    }
    results.bigTraceFirstPaintMs = runs.map((r) => Math.round(r.painted));
    results.bigTraceFetchedMs = runs.map((r) => Math.round(r.fetched));
    results.bigTraceRequestStartMs = runs.map((r) => Math.round(r.requested));
    results.bigTraceServerMs = runs.map((r) => Math.round(r.serverMs));
    results.bigTraceDownloadMs = runs.map((r) => Math.round(r.downloadMs));
    results.bigTraceShownMs = runs.map((r) => Math.round(r.shown));
    results.bigTraceBytes = runs[0].bytes;
    assert.match(await text('.fact-spans'), /100,000/);
    const rendered = await page.locator('.wf-row').count();
    assert.ok(rendered > 10 && rendered < 200, `only the rows on screen exist in the DOM (${rendered})`);
    await shot('14-big-trace');
    // Main-thread work per frame from Chrome's own counters (script, style, layout, and all tasks
    // incl. paint and commit), next to the wall-clock frame times.
    const cdp = await context.newCDPSession(page);
    await cdp.send('Performance.enable');
    const counters = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
    const perFrame = (a, b, n) => Object.fromEntries([['task', 'TaskDuration'], ['script', 'ScriptDuration'], ['style', 'RecalcStyleDuration'], ['layout', 'LayoutDuration']]
      .map(([k, m]) => [k, Math.round(((b[m] - a[m]) * 1000 * 10) / n) / 10]));
    // scroll through the whole trace, one frame per step, and time the frames
    const before = await counters();
    const frames = await page.evaluate(async () => {
      const sc = document.querySelector('.wf-scroll');
      const times = [];
      let last = performance.now();
      for (let k = 0; k < 120; k++) {
        sc.scrollTop = (sc.scrollHeight * k) / 120;
        await new Promise((r) => requestAnimationFrame(r));
        const now = performance.now();
        times.push(now - last);
        last = now;
      }
      sc.scrollTop = sc.scrollHeight;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const rows = [...document.querySelectorAll('.wf-row')].map((r) => Number(r.dataset.i));
      times.sort((a, b) => a - b);
      return { median: times[60], p95: times[114], max: times[119], lastRow: Math.max(...rows), domRows: rows.length };
    });
    const afterJump = await counters();
    results.bigTraceScrollFrameMs = { median: Math.round(frames.median * 10) / 10, p95: Math.round(frames.p95 * 10) / 10, max: Math.round(frames.max * 10) / 10, mainThreadPerFrame: perFrame(before, afterJump, 122) };
    // wheel-like scrolling: 100 px per frame from the middle of the trace
    results.bigTraceWheelFrameMs = await page.evaluate(async () => {
      const sc = document.querySelector('.wf-scroll');
      sc.scrollTop = sc.scrollHeight / 2;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const times = [];
      let last = performance.now();
      for (let k = 0; k < 120; k++) {
        sc.scrollTop += 100;
        await new Promise((r) => requestAnimationFrame(r));
        const now = performance.now();
        times.push(now - last);
        last = now;
      }
      times.sort((a, b) => a - b);
      const r1 = (x) => Math.round(x * 10) / 10;
      return { median: r1(times[60]), p95: r1(times[114]), max: r1(times[119]) };
    });
    results.bigTraceWheelFrameMs.mainThreadPerFrame = perFrame(afterJump, await counters(), 122);
    assert.ok(frames.domRows < 200, 'still virtualised at the bottom');
    assert.ok(frames.lastRow >= 0);
    await shot('15-big-trace-bottom');
    // find in a 100,000-span trace and jump to the match
    await page.keyboard.press('/');
    await page.keyboard.type('op-5-7');
    await page.waitForFunction(() => /of \d+/.test(document.querySelector('#find-count').textContent));
    const count = await text('#find-count');
    assert.match(count, /^1 of \d{4}$/, count);
    assert.match(await text('.wf-row.selected'), /op-5-7/);
    // collapse to the top level and expand all
    await page.keyboard.press('Escape');
    await page.keyboard.press('E');
    await page.waitForSelector('.wf-scroll[data-rows="11"]');
    await page.keyboard.press('e');
    await page.waitForSelector(`.wf-scroll[data-rows="${ids.bigSpans}"]`);
  });

  assert.deepEqual(consoleErrors.filter((e) => !/Failed to load resource: the server responded with a status of 40[04]/.test(e)), [], 'no script errors in the page');
  console.log(`RESULTS ${JSON.stringify(results)}`);
} catch (e) {
  console.log('FAILED');
  console.error(`step "${step}" failed: ${e.stack || e}`);
  try { await shot(`failed-${step.replace(/[^a-z0-9]+/gi, '-').slice(0, 40)}`); } catch { /* ignore */ }
  if (consoleErrors.length) console.error(`page errors:\n${consoleErrors.join('\n')}`);
  process.exitCode = 1;
} finally {
  await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
