// Service map: services as boxes in call order (callers left, callees right), edges with call
// counts, error rate and latency. Call counts come from the dependencies query over the whole
// window; error rate and latency from a sample of recent traces (the API says how many).
// Click a service or an edge to search its traces.
import * as api from './api.js';
import { h, statePanel } from './dom.js';
import { fmtDuration, serviceColor, fmtCount } from './format.js';
import { navigate } from './main.js';

const WINDOWS = [['900000', 'last 15 minutes'], ['3600000', 'last hour'], ['21600000', 'last 6 hours'], ['86400000', 'last 24 hours'], ['604800000', 'last 7 days']];

/**
 * Column per service: callers left of callees. Kahn's topological order; when only cycles are
 * left, the service with the fewest remaining callers goes next (its back edges are ignored).
 * A service's column is one more than its furthest placed caller's; columns are dense.
 */
export function layers(services, edges) {
  const callers = new Map(services.map((s) => [s, new Set()]));
  const callees = new Map(services.map((s) => [s, new Set()]));
  for (const e of edges) {
    if (e.parent === e.child || !callers.has(e.child) || !callers.has(e.parent)) continue;
    callers.get(e.child).add(e.parent);
    callees.get(e.parent).add(e.child);
  }
  const level = new Map();
  const pending = new Map(services.map((s) => [s, callers.get(s).size]));
  while (pending.size) {
    let next = null;
    for (const [s, n] of pending) if (next === null || n < pending.get(next) || (n === pending.get(next) && s < next)) next = s;
    pending.delete(next);
    let col = 0;
    for (const p of callers.get(next)) if (level.has(p)) col = Math.max(col, level.get(p) + 1);
    level.set(next, col);
    for (const c of callees.get(next)) if (pending.has(c)) pending.set(c, pending.get(c) - 1);
  }
  const used = [...new Set(level.values())].sort((a, b) => a - b);
  for (const [s, col] of level) level.set(s, used.indexOf(col));
  return level;
}

export function mount(root, url) {
  const lookback = h('select', { id: 'map-window', 'aria-label': 'Time window' }, ...WINDOWS.map(([v, l]) => h('option', { value: v }, l)));
  lookback.value = url.searchParams.get('lookback') || '3600000';
  const out = h('div', { class: 'map-out' });
  root.append(h('div', { class: 'map-page' }, h('div', { class: 'map-head' }, h('h1', {}, 'Service map'), h('label', { class: 'inline' }, 'Window ', lookback),
    h('span', { class: 'muted' }, 'Click a service to search its traces, an edge to search the calls.')), out));
  let gone = false;
  const load = async () => {
    out.replaceChildren(statePanel('loading', 'Loading dependencies…'));
    try {
      const deps = await api.dependencies(lookback.value);
      if (gone) return;
      if (!deps.services.length) {
        out.replaceChildren(statePanel('empty', 'No services in this window', 'Widen the window, or send traces: point an OTLP exporter at :4318. Edges appear when a span\'s parent belongs to another service.'));
        return;
      }
      out.replaceChildren(draw(deps), legend(deps));
    } catch (e) {
      if (!gone) out.replaceChildren(statePanel('error', 'Could not load the service map', e.message));
    }
  };
  lookback.addEventListener('change', load);
  load();
  return { destroy: () => (gone = true) };
}

function legend(deps) {
  return h('p', { class: 'muted map-legend' }, `Call counts: every call in the window. Error rate and mean latency: ${deps.sampledTraces} sampled recent traces. `,
    h('span', { class: 'legend-error' }, '■'), ' edges with errors are red; thicker = more calls.');
}

function draw({ services, edges }) {
  const names = services.map((s) => s.name);
  const level = layers(names, edges);
  const columns = [];
  for (const s of services) (columns[level.get(s.name)] ||= []).push(s);
  const NW = 180, NH = 56, GX = 120, GY = 28, PAD = 24;
  const pos = new Map();
  columns.forEach((col, x) => col.sort((a, b) => a.name.localeCompare(b.name)).forEach((s, y) => pos.set(s.name, { x: PAD + x * (NW + GX), y: PAD + y * (NH + GY) })));
  const W = PAD * 2 + columns.length * NW + (columns.length - 1) * GX;
  const H = PAD * 2 + Math.max(...columns.map((c) => c.length)) * (NH + GY) - GY;
  const ns = 'http://www.w3.org/2000/svg';
  const el = (tag, attrs = {}, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svg = el('svg', { class: 'service-map', id: 'service-map', viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', 'aria-label': 'Service dependency graph' });
  const defs = el('defs');
  for (const kind of ['ok', 'err']) {
    const m = el('marker', { id: `arrow-${kind}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' });
    m.append(el('path', { d: 'M0,0 L10,5 L0,10 z', class: `arrow-${kind}` }));
    defs.append(m);
  }
  svg.append(defs);
  const maxCalls = Math.max(...edges.map((e) => e.callCount), 1);
  for (const e of edges) {
    const a = pos.get(e.parent), b = pos.get(e.child);
    if (!a || !b) continue;
    const errRate = e.sampledCalls ? e.sampledErrors / e.sampledCalls : 0;
    const back = b.x <= a.x;
    const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = back ? b.x + NW : b.x, y2 = b.y + NH / 2;
    const d = back ? `M${x1},${y1} C${x1 + 80},${y1 - 60} ${x2 + 80},${y2 + 60} ${x2},${y2}` : `M${x1},${y1} C${(x1 + x2) / 2},${y1} ${(x1 + x2) / 2},${y2} ${x2},${y2}`;
    const g = el('g', { class: `edge${errRate > 0 ? ' has-errors' : ''}`, 'data-edge': `${e.parent}->${e.child}`, tabindex: 0 });
    g.append(el('path', { d, 'stroke-width': 1.5 + 4 * Math.sqrt(e.callCount / maxCalls), 'marker-end': `url(#arrow-${errRate > 0 ? 'err' : 'ok'})` }));
    const label = `${fmtCount(e.callCount)} calls${e.sampledCalls ? ` · ${(errRate * 100).toFixed(errRate > 0 && errRate < 0.1 ? 1 : 0)}% err · ${fmtDuration(e.meanDurationUs)}` : ''}`;
    const lx = back ? Math.max(x1, x2) + 70 : (x1 + x2) / 2, ly = back ? (y1 + y2) / 2 : (y1 + y2) / 2 - 8;
    // Many edges: labels would overlap, so they show on hover (and in the tooltip) only.
    g.append(el('text', { x: lx, y: ly, 'text-anchor': 'middle', class: `edge-label${edges.length > 14 ? ' on-hover' : ''}` }, label));
    g.append(el('title', {}, `${e.parent} → ${e.child}\n${label}${e.sampledCalls ? `\nmax ${fmtDuration(e.maxDurationUs)} (sampled)` : ''}`));
    g.addEventListener('click', () => navigate(`/search?service=${encodeURIComponent(e.child)}&lookback=1h`));
    svg.append(g);
  }
  for (const s of services) {
    const p = pos.get(s.name);
    const errRate = s.sampledSpans ? s.sampledErrors / s.sampledSpans : 0;
    const g = el('g', { class: `node${errRate > 0 ? ' has-errors' : ''}`, 'data-service': s.name, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'link' });
    g.append(el('rect', { width: NW, height: NH, rx: 8 }));
    g.append(el('rect', { width: 6, height: NH, rx: 3, fill: serviceColor(s.name) }));
    g.append(el('text', { x: 16, y: 23, class: 'node-name' }, s.name.length > 20 ? `${s.name.slice(0, 19)}…` : s.name));
    g.append(el('text', { x: 16, y: 42, class: 'node-stats' }, s.sampledSpans ? `${fmtCount(s.sampledSpans)} spans · ${(errRate * 100).toFixed(errRate > 0 && errRate < 0.1 ? 1 : 0)}% errors` : 'not in the sample'));
    g.append(el('title', {}, `${s.name}: search its traces`));
    const go = () => navigate(`/search?service=${encodeURIComponent(s.name)}&lookback=1h`);
    g.addEventListener('click', go);
    g.addEventListener('keydown', (ev) => ev.key === 'Enter' && go());
    svg.append(g);
  }
  return h('div', { class: 'map-scroll' }, svg);
}
