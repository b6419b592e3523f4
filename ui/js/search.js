// Search page: the form (service, operation, attributes with autocomplete, time range, duration
// on any span or the whole trace, limit), a scatter plot and a sortable result list. The URL
// holds the query in Jaeger's parameter names, so a search can be shared and Grafana links work.
import * as api from './api.js';
import { h, statePanel, bdi, chip } from './dom.js';
import { fmtDuration, fmtTime, fmtAgo, serviceColor, utcOffset, fmtCount, readLogfmt, toLogfmt, tagsFromParams, timeParamMs, isolate } from './format.js';
import { navigate, setUrl } from './main.js';

const LOOKBACKS = [['5m', 'Last 5 minutes'], ['15m', 'Last 15 minutes'], ['30m', 'Last 30 minutes'], ['1h', 'Last hour'], ['2h', 'Last 2 hours'], ['6h', 'Last 6 hours'], ['12h', 'Last 12 hours'], ['24h', 'Last 24 hours'], ['2d', 'Last 2 days'], ['7d', 'Last 7 days'], ['custom', 'Custom range…']];
const SORTS = [['recent', 'Most recent'], ['longest', 'Longest first'], ['shortest', 'Shortest first'], ['spans', 'Most spans'], ['errors', 'Most errors']];

const toLocalInput = (ms) => {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
};
const SEARCH_HINT = 'Check the attribute filter (key=value pairs) and durations (like 150ms or 2s). If the server is down, start it with `skein serve`.';

/** Picks `value` in a select, adding it as an option when the list lacks it (a service that aged out of the list, an old link). */
function choose(select, value, note) {
  if (value && ![...select.options].some((o) => o.value === value)) select.append(h('option', { value }, `${value} (${note})`));
  select.value = value;
}

export function mount(root, url) {
  const q = url.searchParams;
  const state = { rows: [], sort: q.get('sort') || 'recent', picked: new Set(), selected: -1 };

  const service = h('select', { id: 'f-service', name: 'service', 'aria-label': 'Service' }, h('option', { value: '' }, 'All services'));
  const operation = h('select', { id: 'f-operation', name: 'operation', 'aria-label': 'Operation' }, h('option', { value: '' }, 'All operations'));
  const urlTags = tagsFromParams(q.get('tags'), q.getAll('tag'));
  const tags = h('input', { id: 'f-tags', name: 'tags', autocomplete: 'off', spellcheck: 'false', placeholder: 'http.response.status_code=500 error=true', value: urlTags.text });
  const suggest = h('ul', { class: 'suggest', role: 'listbox', hidden: true });
  const lookback = h('select', { id: 'f-lookback', name: 'lookback' }, ...LOOKBACKS.map(([v, label]) => h('option', { value: v }, label)));
  choose(lookback, q.get('lookback') || (q.get('start') ? 'custom' : '1h'), 'from the link');
  const from = h('input', { id: 'f-start', type: 'datetime-local', 'aria-label': 'From (local time)' });
  const to = h('input', { id: 'f-end', type: 'datetime-local', 'aria-label': 'To (local time)' });
  // A custom range the page cannot read is reported when the page starts (the fields keep the last hour).
  const range = { start: q.get('start'), end: q.get('end') };
  const badRange = lookback.value === 'custom' && Object.entries(range).find(([, v]) => v !== null && timeParamMs(v) === null);
  from.value = toLocalInput(timeParamMs(range.start) ?? Date.now() - 3600e3);
  to.value = toLocalInput(timeParamMs(range.end) ?? Date.now());
  const custom = h('div', { class: 'custom-range', hidden: lookback.value !== 'custom' },
    h('label', {}, 'From', from), h('label', {}, 'To', to), h('small', {}, `local time, ${utcOffset(new Date())}`));
  lookback.addEventListener('change', () => (custom.hidden = lookback.value !== 'custom'));
  const minDuration = h('input', { id: 'f-min', name: 'minDuration', placeholder: 'e.g. 100ms', value: q.get('minDuration') || '', size: 8 });
  const maxDuration = h('input', { id: 'f-max', name: 'maxDuration', placeholder: 'e.g. 2s', value: q.get('maxDuration') || '', size: 8 });
  const scope = q.get('durationScope') === 'trace' ? 'trace' : 'span';
  const scopeSpan = h('input', { type: 'radio', name: 'durationScope', value: 'span', checked: scope === 'span' });
  const scopeTrace = h('input', { type: 'radio', name: 'durationScope', value: 'trace', checked: scope === 'trace', id: 'f-scope-trace' });
  const limit = h('input', { id: 'f-limit', name: 'limit', type: 'number', min: 1, max: 1500, value: q.get('limit') || '20' });

  const form = h('form', { class: 'search-form', 'aria-label': 'Find traces' },
    h('label', {}, 'Service', service),
    h('label', {}, 'Operation', operation),
    h('label', { class: 'tags-field' }, 'Attributes ', h('small', {}, 'key=value, space separated'), tags, suggest),
    h('label', {}, 'Time range', lookback), custom,
    h('fieldset', {}, h('legend', {}, 'Duration'),
      h('div', { class: 'row2' }, h('label', {}, 'Min', minDuration), h('label', {}, 'Max', maxDuration)),
      h('div', { class: 'scope' }, 'applies to ', h('label', { class: 'inline' }, scopeSpan, 'any one span'), h('label', { class: 'inline' }, scopeTrace, 'the whole trace'))),
    h('label', {}, 'Limit', limit),
    h('button', { type: 'submit', class: 'primary', id: 'f-submit' }, 'Find traces'));

  const results = h('section', { class: 'results', 'aria-live': 'polite' });
  root.append(h('div', { class: 'search-page' }, h('aside', { class: 'search-side' }, form), results));

  // ---- services and operations -----------------------------------------------------------
  const loadOperations = async () => {
    operation.replaceChildren(h('option', { value: '' }, 'All operations'));
    if (service.value) {
      try {
        for (const op of await api.operations(service.value)) operation.append(h('option', { value: op }, op));
      } catch { /* the search itself will report a broken server */ }
    }
    // the link's operation is kept even when the list lacks it: dropping it would widen the search
    if (service.value === (q.get('service') || '')) choose(operation, q.get('operation') || '', 'not in the list');
  };
  service.addEventListener('change', () => { loadOperations(); keyCache.clear(); });

  // ---- attribute autocomplete ------------------------------------------------------------
  const keyCache = new Map();
  let active = -1;
  const currentToken = () => {
    const upto = tags.value.slice(0, tags.selectionStart ?? tags.value.length);
    const start = upto.search(/\S*$/);
    return { start, text: upto.slice(start) };
  };
  let suggestGeneration = 0;
  const showSuggestions = async () => {
    const mine = ++suggestGeneration; // answers to older keystrokes are dropped
    const { text } = currentToken();
    const eq = text.indexOf('=');
    let items;
    if (eq < 0) {
      if (!keyCache.has(service.value)) keyCache.set(service.value, await api.attributeKeys(service.value));
      items = keyCache.get(service.value).filter((k) => k.toLowerCase().includes(text.toLowerCase())).slice(0, 12).map((k) => [k, toLogfmt({ [k]: '' })]);
    } else {
      const key = text.slice(0, eq);
      const part = text.slice(eq + 1).toLowerCase();
      items = (await api.attributeValues(key, service.value)).map(String).filter((v) => v.toLowerCase().includes(part)).slice(0, 12)
        .map((v) => [v, `${toLogfmt({ [key]: v })} `]);
    }
    if (mine !== suggestGeneration) return;
    active = -1;
    suggest.replaceChildren(...items.map(([label, insert]) => h('li', { role: 'option', dataset: { insert }, onmousedown: (e) => { e.preventDefault(); accept(insert); } }, label)));
    suggest.hidden = items.length === 0 || document.activeElement !== tags;
  };
  const accept = (insert) => {
    const { start } = currentToken();
    const end = tags.selectionStart ?? tags.value.length;
    tags.value = tags.value.slice(0, start) + insert + tags.value.slice(end).replace(/^\S*/, '');
    const pos = start + insert.length;
    tags.setSelectionRange(pos, pos);
    showSuggestions();
  };
  tags.addEventListener('input', showSuggestions);
  tags.addEventListener('focus', showSuggestions);
  tags.addEventListener('blur', () => (suggest.hidden = true));
  tags.addEventListener('keydown', (e) => {
    const items = [...suggest.children];
    if (suggest.hidden || !items.length) return;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      active = (active + (e.key === 'ArrowDown' ? 1 : items.length - 1)) % items.length;
      items.forEach((li, i) => li.setAttribute('aria-selected', i === active));
      e.preventDefault();
    } else if ((e.key === 'Enter' || e.key === 'Tab') && (active >= 0 || e.key === 'Tab')) {
      accept(items[Math.max(active, 0)].dataset.insert);
      e.preventDefault();
    } else if (e.key === 'Escape') {
      suggest.hidden = true;
    }
  });

  // ---- the query and the URL -------------------------------------------------------------
  const params = () => {
    const p = new URLSearchParams();
    if (service.value) p.set('service', service.value);
    if (operation.value) p.set('operation', operation.value);
    const t = readLogfmt(tags.value);
    if (t.error) throw new Error(`Attributes: ${t.error}`);
    if (Object.keys(t.tags).length) p.set('tags', JSON.stringify(t.tags));
    if (lookback.value === 'custom') {
      p.set('lookback', 'custom');
      p.set('start', String(new Date(from.value).getTime() * 1000));
      p.set('end', String(new Date(to.value).getTime() * 1000));
    } else p.set('lookback', lookback.value);
    if (minDuration.value.trim()) p.set('minDuration', minDuration.value.trim());
    if (maxDuration.value.trim()) p.set('maxDuration', maxDuration.value.trim());
    if (scopeTrace.checked && (minDuration.value.trim() || maxDuration.value.trim())) p.set('durationScope', 'trace');
    p.set('limit', limit.value || '20');
    return p;
  };

  let generation = 0;
  const fail = (message) => results.replaceChildren(statePanel('error', 'The search failed', message, SEARCH_HINT));
  const run = async () => {
    const mine = ++generation;
    let p;
    try { p = params(); } catch (e) { return fail(e.message); }
    setUrl(`/search?${p}`);
    results.replaceChildren(statePanel('loading', 'Searching…'));
    try {
      const rows = await api.search(p);
      if (mine !== generation) return;
      state.rows = rows;
      state.picked.clear();
      state.selected = -1;
      renderResults();
    } catch (e) {
      if (mine !== generation) return;
      fail(e.message);
    }
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); run(); });

  // ---- results -----------------------------------------------------------------------------
  const sorted = () => {
    const r = state.rows.slice();
    const by = { recent: (a, b) => b.startUs - a.startUs, longest: (a, b) => b.durationUs - a.durationUs, shortest: (a, b) => a.durationUs - b.durationUs, spans: (a, b) => b.spans - a.spans, errors: (a, b) => b.errors - a.errors };
    return r.sort(by[state.sort] || by.recent);
  };

  const renderResults = () => {
    if (!state.rows.length) {
      results.replaceChildren(statePanel('empty', 'No traces match',
        'Widen the time range, remove attribute filters, or lower the minimum duration. Spans are searchable as soon as an export is acknowledged.'));
      return;
    }
    const rows = sorted();
    const compareButton = h('button', { type: 'button', id: 'compare-picked', disabled: state.picked.size !== 2, onclick: comparePicked }, `Compare picked (${state.picked.size}/2)`);
    const sortSelect = h('select', { id: 'sort', 'aria-label': 'Sort results', onchange: (e) => { state.sort = e.target.value; renderResults(); } }, ...SORTS.map(([v, l]) => h('option', { value: v, selected: v === state.sort }, l)));
    const maxDur = Math.max(...rows.map((r) => r.durationUs), 1);
    const list = h('ol', { class: 'result-list' }, ...rows.map((r, i) => resultRow(r, i, maxDur)));
    results.replaceChildren(
      h('div', { class: 'results-head' }, h('h2', {}, `${rows.length} trace${rows.length === 1 ? '' : 's'}`), h('span', { class: 'spacer' }), h('label', { class: 'inline' }, 'Sort ', sortSelect), compareButton),
      scatter(rows), list);
  };

  const resultRow = (r, i, maxDur) => {
    const pick = h('input', { type: 'checkbox', class: 'pick', 'aria-label': 'Pick for compare', checked: state.picked.has(r.traceId), onchange: (e) => togglePick(r.traceId, e.target.checked) });
    return h('li', { class: `result${state.selected === i ? ' selected' : ''}`, dataset: { traceId: r.traceId, index: i } },
      h('div', { class: 'result-top' }, pick,
        h('a', { class: 'result-title', href: `/trace/${r.traceId}` }, h('span', { class: 'swatch', style: { background: serviceColor(r.rootService) } }), bdi(r.rootService), ': ', bdi(r.rootName || '(no name)')),
        r.hasRoot ? null : h('span', { class: 'badge warn', title: 'No span of this trace has an empty parent id: the root has not arrived (yet).' }, 'no root'),
        h('span', { class: 'spacer' }), h('span', { class: 'duration' }, fmtDuration(r.durationUs))),
      h('div', { class: 'result-bar' }, h('div', { style: { width: `${Math.max(0.5, (r.durationUs / maxDur) * 100)}%` } })),
      h('div', { class: 'result-meta' },
        h('span', { class: 'badge' }, `${fmtCount(r.spans)} span${r.spans === 1 ? '' : 's'}`),
        r.errors ? h('span', { class: 'badge error' }, `${fmtCount(r.errors)} error${r.errors === 1 ? '' : 's'}`) : null,
        ...Object.entries(r.services).map(([s, n]) => chip(s, n, serviceColor(s))),
        h('span', { class: 'spacer' }),
        h('span', { class: 'when', title: fmtTime(r.startUs) }, `${fmtTime(r.startUs, { offset: false, millis: false })} · ${fmtAgo(r.startUs)}`),
        h('code', { class: 'tid' }, r.traceId.slice(0, 12))));
  };

  const togglePick = (id, on) => {
    if (on) state.picked.add(id); else state.picked.delete(id);
    while (state.picked.size > 2) state.picked.delete(state.picked.values().next().value);
    for (const cb of results.querySelectorAll('.result')) cb.querySelector('.pick').checked = state.picked.has(cb.dataset.traceId);
    const b = results.querySelector('#compare-picked');
    b.disabled = state.picked.size !== 2;
    b.textContent = `Compare picked (${state.picked.size}/2)`;
  };
  const comparePicked = () => {
    const [a, b] = [...state.picked];
    if (a && b) navigate(`/compare?a=${a}&b=${b}`);
  };

  const select = (i) => {
    const items = results.querySelectorAll('.result');
    if (!items.length) return;
    state.selected = Math.max(0, Math.min(items.length - 1, i));
    items.forEach((el, k) => el.classList.toggle('selected', k === state.selected));
    items[state.selected].scrollIntoView({ block: 'nearest' });
  };

  // ---- start ---------------------------------------------------------------------------------
  (async () => {
    let names;
    try {
      names = await api.services();
    } catch (e) {
      results.replaceChildren(statePanel('error', 'Cannot load services', e.message, 'Is skein running and reachable at this address?'));
      return;
    }
    for (const s of names) service.append(h('option', { value: s }, s));
    // a service that has aged out of the list is still searched (and finds nothing, or old traces)
    choose(service, q.get('service') || '', 'not seen recently');
    await loadOperations();
    if (!names.length) {
      results.replaceChildren(statePanel('empty', 'No traces yet',
        h('p', {}, 'Point an OpenTelemetry exporter at this server: OTLP/HTTP on port ', h('b', {}, ':4318'), ', OTLP/gRPC on ', h('b', {}, ':4317'), '.'),
        h('pre', {}, `OTEL_EXPORTER_OTLP_ENDPOINT=http://${location.hostname}:4318 ./your-service`),
        h('p', {}, 'Zipkin (:9411) and Jaeger (:14268, :14250, :6831/udp) senders work too. Or ', h('a', { href: '/upload' }, 'upload a trace file'), '.')));
      return;
    }
    // a link's filter that cannot be read is reported, not dropped (which would show unrelated traces)
    if (urlTags.error) fail(urlTags.error);
    else if (badRange) fail(`parameter ${badRange[0]}: ${JSON.stringify(badRange[1])} is not a time (microseconds since 1970, as Jaeger's links have)`);
    else run();
  })();

  return {
    onKey(e) {
      if (e.key === '/') { service.focus(); return true; }
      if (e.key === 'j' || e.key === 'ArrowDown') { select(state.selected + 1); return true; }
      if (e.key === 'k' || e.key === 'ArrowUp') { select(state.selected - 1); return true; }
      const el = results.querySelectorAll('.result')[state.selected];
      if ((e.key === 'Enter' || e.key === 'o') && el) { navigate(`/trace/${el.dataset.traceId}`); return true; }
      if (e.key === 'x' && el) { togglePick(el.dataset.traceId, !state.picked.has(el.dataset.traceId)); return true; }
      if (e.key === 'c' && state.picked.size === 2) { comparePicked(); return true; }
      return false;
    },
  };
}

/** Start time × duration; errors red; a click opens the trace. */
function scatter(rows) {
  const W = 900, H = 170, L = 58, R = 12, T = 10, B = 26;
  const t0 = Math.min(...rows.map((r) => r.startUs)), t1 = Math.max(...rows.map((r) => r.startUs));
  const dMax = Math.max(...rows.map((r) => r.durationUs), 1);
  const x = (t) => L + (t1 === t0 ? 0.5 : (t - t0) / (t1 - t0)) * (W - L - R);
  const y = (d) => H - B - (d / dMax) * (H - T - B);
  const ns = 'http://www.w3.org/2000/svg';
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = el('svg', { class: 'scatter', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Trace start time against duration' });
  for (const f of [0, 0.5, 1]) {
    svg.append(el('line', { x1: L, x2: W - R, y1: y(dMax * f), y2: y(dMax * f), class: 'grid' }));
    svg.append(el('text', { x: L - 6, y: y(dMax * f) + 4, 'text-anchor': 'end', class: 'axis' }, fmtDuration(dMax * f)));
  }
  const ticks = t1 === t0 ? [t0] : [t0, (t0 + t1) / 2, t1];
  ticks.forEach((t, i) => svg.append(el('text', { x: x(t), y: H - 6, 'text-anchor': ticks.length === 1 ? 'middle' : ['start', 'middle', 'end'][i], class: 'axis' }, fmtTime(t, { offset: false }).slice(11, 19))));
  const spanMax = Math.max(...rows.map((r) => r.spans), 1);
  for (const r of rows) {
    const c = el('circle', { cx: x(r.startUs), cy: y(r.durationUs), r: 3.5 + 5 * Math.sqrt(r.spans / spanMax), class: r.errors ? 'dot error' : 'dot', 'data-trace-id': r.traceId, tabindex: '-1' });
    c.append(el('title', {}, `${isolate(r.rootService)}: ${isolate(r.rootName)}\n${fmtDuration(r.durationUs)} · ${r.spans} spans${r.errors ? ` · ${r.errors} errors` : ''}\n${fmtTime(r.startUs)}`));
    c.addEventListener('click', () => navigate(`/trace/${r.traceId}`));
    svg.append(c);
  }
  return h('figure', { class: 'scatter-box' }, svg, h('figcaption', {}, 'start time (local) × duration · ', h('span', { class: 'legend-error' }, '●'), ' has errors · size: span count · click a dot to open'));
}
