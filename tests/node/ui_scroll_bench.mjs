// Scrolling benchmark for the waterfall, A/B: the same server and the same 100,000-span trace,
// with the page's /static/ files served from different ui/ directories (for example the
// committed UI exported with `git archive HEAD ui | tar -x -C /tmp/old`), measured in turns so
// both see the same machine load. Not a test: it asserts nothing. Usage:
//   NODE_PATH=.test-deps/node/node_modules node tests/node/ui_scroll_bench.mjs \
//     --query http://127.0.0.1:16686 [--otlp http://127.0.0.1:4318] [--rounds 3] /tmp/old/ui:old ui:new
// With --otlp it first sends the trace (the same shape as crates/skein/tests/ui.rs big_trace).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core'); // resolved through NODE_PATH

const args = process.argv.slice(2);
const opt = (name, dflt) => { const k = args.indexOf(name); return k >= 0 ? args.splice(k, 2)[1] : dflt; };
const query = opt('--query');
const otlp = opt('--otlp');
const rounds = Number(opt('--rounds', '3'));
const variants = args.map((a) => { const [dir, label = dir] = a.split(':'); return { dir, label }; });
const BIG = '3df7651916cd43dd8448eb211c8031af';

async function sendBigTrace() {
  const SERVICES = ['gateway', 'orders', 'inventory', 'pricing', 'search', 'users', 'ledger', 'notify'];
  const MS = 1_000_000n;
  const id = (n) => (0x2000000000000000n + BigInt(n)).toString(16);
  const spans = [];
  const push = (n, parent, start, end, depth) => spans.push([SERVICES[(n * 7 + depth) % 8], {
    traceId: BIG, spanId: id(n), ...(parent === null ? {} : { parentSpanId: id(parent) }), name: `op-${depth}-${n % 13}`, kind: depth ? 3 : 2,
    startTimeUnixNano: String(start), endTimeUnixNano: String(end), attributes: [{ key: 'item.index', value: { intValue: String(n) } }],
    status: n % 997 === 0 ? { code: 2, message: 'boom' } : {},
  }]);
  const t0 = BigInt(Date.now() - 5 * 60_000) * MS;
  push(0, null, t0, t0 + 900n * MS, 0);
  let parents = [[0, t0, t0 + 900n * MS]], n = 1, depth = 1;
  while (n < 100_000) {
    const next = [];
    for (const [p, ps, pe] of parents) {
      const slot = (pe - ps) / 11n;
      for (let k = 0n; k < 10n && n < 100_000; k++, n++) {
        const s = ps + slot / 2n + k * slot;
        push(n, p, s, s + (slot * BigInt(5 + (n % 6))) / 10n, depth);
        next.push([n, s, s + (slot * BigInt(5 + (n % 6))) / 10n]);
      }
    }
    parents = next;
    depth++;
  }
  for (let c = 0; c < spans.length; c += 10_000) {
    const by = new Map();
    for (const [svc, v] of spans.slice(c, c + 10_000)) { if (!by.has(svc)) by.set(svc, []); by.get(svc).push(v); }
    const body = { resourceSpans: [...by].map(([svc, list]) => ({ resource: { attributes: [{ key: 'service.name', value: { stringValue: svc } }] }, scopeSpans: [{ scope: { name: 'bench' }, spans: list }] })) };
    const r = await fetch(`${otlp}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    if (!r.ok) throw new Error(`OTLP export: ${r.status} ${await r.text()}`);
  }
}

async function measure(browser, { dir }) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  await page.route('**/static/**', (route) => {
    const file = new URL(route.request().url()).pathname.replace('/static/', '');
    const type = file.endsWith('.js') ? 'text/javascript' : file.endsWith('.css') ? 'text/css' : 'image/svg+xml';
    route.fulfill({ body: fs.readFileSync(path.join(dir, file)), contentType: type });
  });
  await page.goto(`${query}/trace/${BIG}`);
  await page.waitForFunction(() => document.body.dataset.waterfallPainted === 'true', null, { timeout: 60_000 });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  const counters = async () => Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((m) => [m.name, m.value]));
  const out = {};
  for (const pattern of ['jump', 'wheel']) {
    const a = await counters();
    const frames = await page.evaluate(async (pattern) => {
      const sc = document.querySelector('.wf-scroll');
      const frame = () => new Promise((r) => requestAnimationFrame(r));
      if (pattern === 'wheel') sc.scrollTop = sc.scrollHeight / 2;
      else sc.scrollTop = 0;
      await frame();
      await frame();
      const times = [];
      let last = performance.now();
      for (let k = 0; k < 120; k++) {
        if (pattern === 'jump') sc.scrollTop = (sc.scrollHeight * k) / 120; // 1/120 of the trace per frame
        else sc.scrollTop += 100; // 100 px per frame
        await frame();
        const now = performance.now();
        times.push(now - last);
        last = now;
      }
      return times.sort((x, y) => x - y);
    }, pattern);
    const b = await counters();
    const perFrame = (m) => Math.round(((b[m] - a[m]) * 1000 * 10) / 122) / 10;
    out[pattern] = { median: frames[60], p95: frames[114], max: frames[119], task: perFrame('TaskDuration'), script: perFrame('ScriptDuration'), style: perFrame('RecalcStyleDuration'), layout: perFrame('LayoutDuration') };
  }
  await page.close();
  return out;
}

if (otlp) await sendBigTrace();
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
});
const all = new Map(variants.map((v) => [v.label, []]));
for (let r = 0; r < rounds; r++) for (const v of variants) all.get(v.label).push(await measure(browser, v));
await browser.close();
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return Math.round(s[s.length >> 1] * 10) / 10; };
for (const [label, runs] of all) {
  for (const pattern of ['jump', 'wheel']) {
    const pick = (k) => median(runs.map((r) => r[pattern][k]));
    console.log(`${label.padEnd(8)} ${pattern.padEnd(5)}  frame median ${pick('median')} ms, p95 ${pick('p95')} ms, max ${pick('max')} ms; main thread per frame: all tasks ${pick('task')} ms (script ${pick('script')}, style ${pick('style')}, layout ${pick('layout')})  [median of ${runs.length} runs]`);
  }
}
