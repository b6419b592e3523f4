// Trace page: header, timeline (waterfall) / flame graph / statistics, find-in-trace, the span
// detail panel, downloads and deep links (`/trace/{id}?uiFind={spanId or text}`).
import * as api from './api.js';
import { h, statePanel, copyButton, download, esc, bdi, chip } from './dom.js';
import { fmtDuration, fmtTime, serviceColor, KINDS, fmtCount } from './format.js';
import { buildTree, criticalPath, findSpans, ancestors, statistics, valueText } from './model.js';
import { Waterfall } from './waterfall.js';
import { FlameGraph } from './flame.js';
import { navigate, setUrl } from './main.js';

export function mount(root, url, { id }) {
  let handle = { destroyed: false };
  root.append(statePanel('loading', `Loading trace ${id}…`, 'Large traces (100,000 spans) take a moment.'));
  performance.mark('skein:trace-requested');
  api.trace(id).then((t) => {
    if (handle.destroyed) return;
    performance.mark('skein:trace-fetched');
    Object.assign(handle, show(root, t, url));
  }, (e) => {
    if (handle.destroyed) return;
    root.replaceChildren(e.status === 404
      ? statePanel('empty', 'Trace not found', `No span of trace ${id} is stored here.`,
        h('p', {}, 'It may be older than the retention period, still in flight, or sent to another server. ', h('a', { href: '/search' }, 'Search recent traces'), ' or ', h('a', { href: '/upload' }, 'upload a trace file'), '.'))
      : statePanel('error', 'Could not load the trace', e.message, 'A trace id is up to 32 hex characters. Retry, or check the server log.'));
  });
  return {
    onKey: (e) => handle.onKey?.(e) || false,
    destroy: () => { handle.destroyed = true; handle.destroy?.(); },
  };
}

function show(root, t, url) {
  buildTree(t);
  const critical = criticalPath(t);
  const S = t.spans;
  const errors = S.reduce((n, s) => n + (s.error ? 1 : 0), 0);
  const rootSpan = S[t.tops[0]];
  const perService = new Map();
  for (const s of S) perService.set(s.service, (perService.get(s.service) || 0) + 1);

  // ---- header ------------------------------------------------------------------------------
  const findInput = h('input', { id: 'find', type: 'search', placeholder: 'Find spans: name, service, id, key=value…  ( / )', 'aria-label': 'Find in trace', spellcheck: 'false' });
  const findCount = h('span', { class: 'find-count', id: 'find-count' });
  const critToggle = h('input', { type: 'checkbox', id: 'crit-toggle', checked: true });
  const tabs = ['timeline', 'flame', 'stats'];
  const tabButtons = tabs.map((name, k) => h('button', { type: 'button', role: 'tab', class: 'tab', id: `tab-${name}`, dataset: { tab: name }, title: `${k + 1}`, onclick: () => setTab(name) },
    { timeline: 'Timeline', flame: 'Flame graph', stats: 'Statistics' }[name]));
  const header = h('header', { class: 'trace-head' },
    h('div', { class: 'trace-title' },
      h('h1', {}, h('span', { class: 'swatch', style: { background: serviceColor(rootSpan.service) } }), bdi(rootSpan.service), ': ', bdi(rootSpan.name)),
      h('code', { class: 'tid', id: 'trace-id' }, t.traceId), copyButton(t.traceId, 'copy id'),
      t.source === 'file' ? h('span', { class: 'badge warn' }, 'from a file') : null),
    h('dl', { class: 'trace-facts' },
      fact('Start', fmtTime(t.startUs)), fact('Duration', fmtDuration(t.duration), 'fact-duration'),
      fact('Services', String(t.services.length)), fact('Depth', String(t.maxDepth)),
      fact('Spans', fmtCount(S.length), 'fact-spans'), fact('Errors', fmtCount(errors), errors ? 'fact-errors has-errors' : 'fact-errors')),
    h('div', { class: 'chips' }, ...[...perService].sort((a, b) => b[1] - a[1]).map(([s, n]) => chip(s, fmtCount(n), serviceColor(s)))),
    h('div', { class: 'trace-tools' },
      h('div', { class: 'tabs', role: 'tablist' }, ...tabButtons),
      h('div', { class: 'find' }, findInput, findCount,
        h('button', { type: 'button', title: 'previous match (N)', onclick: () => nextMatch(-1) }, '↑'),
        h('button', { type: 'button', title: 'next match (n)', onclick: () => nextMatch(1) }, '↓')),
      h('label', { class: 'inline crit-label', title: 'The chain of spans that determined when the trace ended' }, critToggle, h('span', { class: 'crit-key' }), 'critical path'),
      h('span', { class: 'spacer' }),
      h('button', { type: 'button', id: 'download-jaeger', onclick: () => downloadTrace('jaeger') }, '⤓ Jaeger JSON'),
      h('button', { type: 'button', id: 'download-otlp', onclick: () => downloadTrace('otlp') }, '⤓ OTLP JSON'),
      h('button', { type: 'button', id: 'compare-with', onclick: compareWith }, 'Compare with…')));

  const body = h('div', { class: 'trace-body' });
  const detail = h('aside', { class: 'detail', id: 'detail', hidden: true, 'aria-label': 'Span detail' });
  root.replaceChildren(h('div', { class: 'trace-page' }, header, h('div', { class: 'trace-main' }, body, detail)));

  // ---- views -------------------------------------------------------------------------------
  const timelinePane = h('div', { class: 'pane timeline', id: 'timeline' });
  const flamePane = h('div', { class: 'pane flame-pane', id: 'flame', hidden: true });
  const statsPane = h('div', { class: 'pane stats-pane', id: 'stats', hidden: true });
  body.append(timelinePane, flamePane, statsPane);
  let detailOpen = -1;
  const wf = new Waterfall(timelinePane, t, critical, {
    onSelect: (i) => { flame?.select(i); if (detailOpen >= 0 && i >= 0) openDetail(i); setUrl(`/trace/${t.traceId}?uiFind=${S[i]?.id ?? ''}`); },
    onOpen: (i) => openDetail(i),
  });
  let flame = null;
  let tab = 'timeline';
  function setTab(name) {
    tab = name;
    tabButtons.forEach((b) => b.setAttribute('aria-selected', b.dataset.tab === name));
    timelinePane.hidden = name !== 'timeline';
    flamePane.hidden = name !== 'flame';
    statsPane.hidden = name !== 'stats';
    if (name === 'flame' && !flame) {
      flame = new FlameGraph(flamePane, t, critical, { onSelect: (i) => { wf.select(i, { scroll: true }); openDetail(i); } });
      flame.select(wf.selected);
    }
    if (name === 'flame') flame.draw();
    if (name === 'stats' && !statsPane.firstChild) renderStats(statsPane, t);
    if (name === 'timeline') wf.schedule();
  }
  setTab('timeline');
  critToggle.addEventListener('change', () => wf.setCritical(critToggle.checked));

  // ---- find --------------------------------------------------------------------------------
  let matches = [];
  let matchAt = -1;
  let findTimer = 0;
  const runFind = () => {
    matches = findSpans(t, findInput.value);
    matchAt = -1;
    wf.setMatches(matches);
    findCount.textContent = findInput.value.trim() ? `${matches.length} match${matches.length === 1 ? '' : 'es'}` : '';
    if (matches.length) nextMatch(1);
  };
  findInput.addEventListener('input', () => { clearTimeout(findTimer); findTimer = setTimeout(runFind, 120); });
  findInput.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); clearTimeout(findTimer); if (!matches.length) runFind(); else nextMatch(e.shiftKey ? -1 : 1); }
  });
  function nextMatch(dir) {
    if (!matches.length) return;
    matchAt = (matchAt + dir + matches.length) % matches.length;
    const i = matches[matchAt];
    wf.reveal(i, ancestors(t, i));
    wf.select(i);
    findCount.textContent = `${matchAt + 1} of ${matches.length}`;
  }

  // ---- detail panel ------------------------------------------------------------------------
  let detailGeneration = 0;
  async function openDetail(i) {
    detailOpen = i;
    const s = S[i];
    detail.hidden = false;
    const mine = ++detailGeneration;
    detail.replaceChildren(detailHead(s, i), statePanel('loading', 'Loading span…'));
    try {
      const d = await api.spanDetail(t, s);
      if (mine !== detailGeneration) return;
      detail.replaceChildren(detailHead(s, i), detailBody(t, s, d, i));
    } catch (e) {
      if (mine !== detailGeneration) return;
      detail.replaceChildren(detailHead(s, i), statePanel('error', 'Could not load this span', e.message));
    }
  }
  function closeDetail() { detailOpen = -1; detail.hidden = true; wf.scroller.focus(); }
  function detailHead(s, i) {
    const link = `${location.origin}/trace/${t.traceId}?uiFind=${s.id}`;
    // A long name is clamped to a few lines so the panel body stays in view; it can be
    // unfolded, and copied whole.
    const name = h('h2', { class: 'clamp' }, s.name);
    const long = s.name.length > LONG_NAME;
    const unfold = long ? h('button', { type: 'button', class: 'link name-toggle', 'aria-expanded': 'false', onclick: (e) => {
      const open = !name.classList.toggle('clamp');
      e.currentTarget.setAttribute('aria-expanded', String(open));
      e.currentTarget.textContent = open ? 'fold name' : `whole name (${fmtCount(s.name.length)} characters)`;
    } }, `whole name (${fmtCount(s.name.length)} characters)`) : null;
    return h('div', { class: 'detail-head' },
      h('div', { class: 'detail-title' }, h('span', { class: 'swatch', style: { background: serviceColor(s.service) } }),
        h('div', {}, h('div', { class: 'svc clamp' }, s.service), name, long ? h('div', { class: 'name-tools' }, unfold, copyButton(s.name, 'copy name')) : null),
        h('button', { type: 'button', class: 'close', title: 'Close (Esc)', onclick: closeDetail }, '✕')),
      h('div', { class: 'detail-facts' },
        h('span', {}, h('b', {}, fmtDuration(s.duration)), ` at +${fmtDuration(s.start)}`),
        h('span', {}, `self ${fmtDuration(selfOf(t, i))}`),
        critical.onPath[i] ? h('span', { class: 'badge crit-badge' }, 'on critical path') : null,
        s.error ? h('span', { class: 'badge error' }, 'error') : null),
      h('div', { class: 'detail-ids' }, 'span ', h('code', {}, s.id), copyButton(s.id), ' ', copyButton(link, 'copy link')));
  }

  function downloadTrace(kind) {
    if (t.source === 'file') return download(`trace-${t.traceId}.json`, JSON.stringify(t.fileDoc ?? { note: 'uploaded' }, null, 2));
    const url = kind === 'jaeger' ? `/api/traces/${t.traceId}` : `/api/v3/traces/${t.traceId}`;
    api.getJson(url).then((doc) => download(`trace-${t.traceId}${kind === 'otlp' ? '.otlp' : ''}.json`, JSON.stringify(kind === 'otlp' ? doc.result : doc, null, 2)),
      (e) => alert(`Download failed: ${e.message}`));
  }
  function compareWith() {
    const other = prompt('Compare with which trace id?');
    if (other && other.trim()) navigate(`/compare?a=${t.traceId}&b=${encodeURIComponent(other.trim())}`);
  }

  // ---- deep link ---------------------------------------------------------------------------
  const uiFind = url.searchParams.get('uiFind');
  if (uiFind) {
    const exact = S.findIndex((s) => s.id === uiFind.toLowerCase().padStart(16, '0'));
    if (exact >= 0) {
      wf.reveal(exact, ancestors(t, exact));
      wf.select(exact);
      openDetail(exact);
    } else {
      findInput.value = uiFind;
      runFind();
    }
  } else {
    wf.scroller.focus({ preventScroll: true });
  }
  performance.mark('skein:trace-shown');

  return {
    destroy() { wf.destroy(); flame?.destroy(); },
    onKey(e) {
      const k = e.key;
      if (k === '/') { findInput.focus(); findInput.select(); return true; }
      if (k === 'Escape') { if (!detail.hidden) closeDetail(); else if (findInput.value) { findInput.value = ''; runFind(); } return true; }
      if (k === '1' || k === '2' || k === '3') { setTab(tabs[Number(k) - 1]); return true; }
      if (k === 'n') { nextMatch(1); return true; }
      if (k === 'N') { nextMatch(-1); return true; }
      if (k === 'e') { wf.expandAll(); return true; }
      if (k === 'E') { wf.collapseToTop(); return true; }
      if (k === 'p') {
        const path = wf.rows.filter((i) => critical.onPath[i]);
        if (path.length) wf.select(path.find((i) => wf.rowOf[i] > wf.rowOf[wf.selected]) ?? path[0]);
        return true;
      }
      if (tab !== 'timeline') return false;
      if (k === 'j' || k === 'ArrowDown') { wf.step(1); return true; }
      if (k === 'k' || k === 'ArrowUp') { wf.step(-1); return true; }
      if (k === 'PageDown') { wf.step(20); return true; }
      if (k === 'PageUp') { wf.step(-20); return true; }
      const sel = wf.selected;
      if (sel < 0) return false;
      if (k === 'Enter' || k === 'o') { if (detailOpen === sel && !detail.hidden) closeDetail(); else openDetail(sel); return true; }
      if (k === 'ArrowLeft' || k === 'h') {
        if (t.children[sel].length && !wf.collapsed.has(sel)) wf.toggle(sel, false);
        else if (S[sel].parent >= 0) wf.select(S[sel].parent);
        return true;
      }
      if (k === 'ArrowRight' || k === 'l') { wf.toggle(sel, true); return true; }
      return false;
    },
  };
}

const LONG_NAME = 120; // characters; longer names get "whole name" and "copy name"

function fact(label, value, cls) {
  return h('div', { class: `fact ${cls || ''}` }, h('dt', {}, label), h('dd', {}, value));
}

function selfOf(t, i) {
  // Self time of one span, without computing every span's.
  const s = t.spans[i];
  const kids = t.children[i].map((c) => [Math.max(t.spans[c].start, s.start), Math.min(t.spans[c].end, s.end)]).filter(([a, b]) => b > a);
  let covered = 0, a0 = 0, b0 = -Infinity;
  for (const [a, b] of kids) {
    if (a > b0) { if (b0 > a0) covered += b0 - a0; a0 = a; b0 = b; } else b0 = Math.max(b0, b);
  }
  if (b0 > a0) covered += b0 - a0;
  return Math.max(0, s.duration - covered);
}

function kvTable(list, emptyText) {
  if (!list.length) return h('p', { class: 'muted' }, emptyText);
  return h('table', { class: 'kv' }, h('tbody', {}, ...list.map(({ key, value }) => {
    const text = valueText(value);
    return h('tr', {}, h('th', { scope: 'row' }, key), h('td', {}, h('span', { class: `v v-${typeof value}` }, text)), h('td', { class: 'copy-cell' }, copyButton(text)));
  })));
}

function section(title, open, ...content) {
  return h('details', { open: open || undefined, class: 'detail-section' }, h('summary', {}, title), ...content);
}

/** "Attributes (128)", or "Attributes (128, 172 dropped)" when the sender or skein left some out. */
const counted = (title, kept, dropped) => `${title} (${fmtCount(kept)}${dropped ? `, ${fmtCount(dropped)} dropped` : ''})`;

/** Says how many were dropped, so a short list is not mistaken for the whole. */
function droppedNote(dropped, what) {
  return dropped ? h('p', { class: 'dropped-note' }, `${fmtCount(dropped)} ${what}${dropped === 1 ? ' was' : 's were'} dropped by the sender or by skein's limits (not stored).`) : null;
}

function detailBody(t, s, d, i) {
  const statusText = d.status.message ? `${d.status.code}: ${d.status.message}` : d.status.code;
  // bidi controls as \u escapes: still the same JSON, and a right-to-left override in a name
  // cannot reorder the rest of its line
  const raw = JSON.stringify(d.raw, null, 2).replace(/[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const dropped = d.dropped || {}; // files in Jaeger JSON carry no counts
  return h('div', { class: 'detail-body' },
    h('dl', { class: 'detail-grid' },
      h('dt', {}, 'Status'), h('dd', { class: d.status.code === 'ERROR' ? 'status-error' : '' }, statusText),
      h('dt', {}, 'Kind'), h('dd', {}, KINDS[d.kind] || String(d.kind)),
      h('dt', {}, 'Start'), h('dd', {}, fmtTime(t.startUs + s.start)),
      h('dt', {}, 'Parent'), h('dd', {}, s.parent >= 0 ? h('a', { class: 'clamp', href: `/trace/${t.traceId}?uiFind=${t.spans[s.parent].id}` }, bdi(t.spans[s.parent].name)) : s.parent === -2 ? 'missing from this trace' : 'none (root)'),
      d.scope.name ? h('dt', {}, 'Scope') : null, d.scope.name ? h('dd', {}, `${d.scope.name} ${d.scope.version}`) : null,
      d.traceState ? h('dt', {}, 'Trace state') : null, d.traceState ? h('dd', {}, d.traceState) : null),
    section(counted('Attributes', d.attributes.length, dropped.attributes), true, droppedNote(dropped.attributes, 'attribute'), kvTable(d.attributes, 'No attributes.')),
    section(counted('Resource', d.resource.length, dropped.resource), false, droppedNote(dropped.resource, 'resource attribute'), kvTable(d.resource, 'No resource attributes.')),
    section(counted('Events', d.events.length, dropped.events), d.events.length > 0 || dropped.events > 0, droppedNote(dropped.events, 'event'), d.events.length
      ? h('ol', { class: 'events' }, ...d.events.map((e) => h('li', {}, h('div', {}, h('b', {}, bdi(e.name)), h('span', { class: 'muted' }, ` at +${fmtDuration(e.at)} (${fmtDuration(e.at - s.start)} into the span)`)), droppedNote(e.dropped, 'attribute'), kvTable(e.attributes, ''))))
      : h('p', { class: 'muted' }, 'No events.')),
    section(counted('Links', d.links.length, dropped.links), d.links.length > 0 || dropped.links > 0, droppedNote(dropped.links, 'link'), d.links.length
      ? h('ul', { class: 'links' }, ...d.links.map((l) => h('li', {}, h('a', { class: 'span-link', href: `/trace/${l.traceId}?uiFind=${l.spanId}` }, `trace ${l.traceId.slice(0, 16)}… span ${l.spanId}`), droppedNote(l.dropped, 'attribute'), kvTable(l.attributes, ''))))
      : h('p', { class: 'muted' }, 'No links.')),
    section('Raw JSON', false, h('div', { class: 'raw-tools' }, copyButton(raw, 'copy JSON')), h('pre', { class: 'raw' }, raw)));
}

function renderStats(pane, t) {
  const rows = statistics(t);
  const total = t.duration || 1;
  let sortKey = 'self';
  const table = h('table', { class: 'stats', id: 'stats-table' });
  const cols = [['service', 'Service'], ['name', 'Operation'], ['count', 'Count'], ['errors', 'Errors'], ['total', 'Total'], ['self', 'Self time'], ['mean', 'Mean'], ['max', 'Max']];
  const draw = () => {
    rows.sort((a, b) => (typeof a[sortKey] === 'string' ? a[sortKey].localeCompare(b[sortKey]) : b[sortKey] - a[sortKey]));
    table.innerHTML = `<thead><tr>${cols.map(([k, l]) => `<th data-k="${k}" class="${k === sortKey ? 'sorted' : ''}" tabindex="0">${l}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr><td><span class="swatch" style="background:${serviceColor(r.service)}"></span><bdi>${esc(r.service)}</bdi></td><td><bdi>${esc(r.name)}</bdi></td><td class="num">${fmtCount(r.count)}</td><td class="num${r.errors ? ' status-error' : ''}">${r.errors}</td><td class="num">${fmtDuration(r.total)}</td><td class="num"><span class="self-bar" style="width:${Math.min(100, (r.self / total) * 100)}%"></span>${fmtDuration(r.self)}</td><td class="num">${fmtDuration(r.mean)}</td><td class="num">${fmtDuration(r.max)}</td></tr>`).join('')}</tbody>`;
  };
  table.addEventListener('click', (e) => { const th = e.target.closest('th'); if (th) { sortKey = th.dataset.k; draw(); } });
  draw();
  pane.append(h('p', { class: 'muted' }, 'Per service and operation. Self time is the time a span was not waiting on any of its children; sorted by self time — the biggest number is where the time went.'), table);
}
