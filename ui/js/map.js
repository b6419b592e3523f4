// Service map: services as boxes, callers left of callees (a layered layout, see graph.js), edges
// as thick as their call counts and red when calls failed, back edges (calls that close a cycle)
// dashed. Call counts come from the dependencies query over the whole window; error rate and
// latency from a sample of recent traces (the legend says how many). It opens fitted to the
// screen; wheel or +/− zooms, drag or arrow keys pan, 0 fits again. Hovering or focusing a
// service highlights its callers and callees. Click a service or an edge to search its traces.
import * as api from './api.js';
import { h, statePanel } from './dom.js';
import { fmtDuration, serviceColor, fmtCount, isolate } from './format.js';
import { navigate, setUrl } from './main.js';
import { layoutGraph, curvePath } from './graph.js';

const WINDOWS = [['900000', 'last 15 minutes'], ['3600000', 'last hour'], ['21600000', 'last 6 hours'], ['86400000', 'last 24 hours'], ['604800000', 'last 7 days']];
const NW = 180, NH = 56;
const SVG = 'http://www.w3.org/2000/svg';

export function mount(root, url) {
  const lookback = h('select', { id: 'map-window', 'aria-label': 'Time window' }, ...WINDOWS.map(([v, l]) => h('option', { value: v }, l)));
  lookback.value = url.searchParams.get('lookback') || '3600000';
  // a window that ends in the past: `endTs` (ms), as in Jaeger's dependencies API
  const endTs = Number(url.searchParams.get('endTs')) || 0;
  const out = h('div', { class: 'map-out' });
  let map = null;
  const zoomButtons = h('span', { class: 'map-zoom' },
    h('button', { type: 'button', id: 'map-zoom-out', title: 'Zoom out (−)', onclick: () => map?.zoomBy(1 / 1.25) }, '−'),
    h('button', { type: 'button', id: 'map-zoom-in', title: 'Zoom in (+)', onclick: () => map?.zoomBy(1.25) }, '+'),
    h('button', { type: 'button', id: 'map-fit', title: 'Fit to screen (0)', onclick: () => map?.fit() }, 'Fit'));
  root.append(h('div', { class: 'map-page' }, h('div', { class: 'map-head' }, h('h1', {}, 'Service map'), h('label', { class: 'inline' }, 'Window ', lookback),
    endTs ? h('span', { class: 'badge warn' }, `ending ${new Date(endTs).toLocaleString()}`) : null, zoomButtons,
    h('span', { class: 'muted' }, 'Click a service to search its traces, an edge to search the calls. Wheel or +/− zooms, drag pans, 0 fits.')), out));
  let gone = false;
  const load = async () => {
    out.replaceChildren(statePanel('loading', 'Loading dependencies…'));
    map = null;
    try {
      const deps = await api.dependencies(lookback.value, endTs);
      if (gone) return;
      if (!deps.services.length) {
        out.replaceChildren(statePanel('empty', 'No services in this window', 'Widen the window, or send traces: point an OTLP exporter at :4318. Edges appear when a span\'s parent belongs to another service.'));
        return;
      }
      map = new ServiceMap(deps);
      out.replaceChildren(map.el, legend(deps, map));
      map.fit();
    } catch (e) {
      if (!gone) out.replaceChildren(statePanel('error', 'Could not load the service map', e.message));
    }
  };
  lookback.addEventListener('change', () => {
    const next = new URL(location.href);
    next.searchParams.set('lookback', lookback.value);
    setUrl(next.href);
    load();
  });
  load();
  return {
    destroy: () => { gone = true; map?.destroy(); },
    onKey: (e) => map?.onKey(e) || false,
  };
}

function legend(deps, map) {
  return h('p', { class: 'muted map-legend' }, `${deps.services.length} services, ${deps.edges.length} edges. Call counts: every call in the window. Error rate and mean latency: ${deps.sampledTraces} sampled recent traces. `,
    h('span', { class: 'legend-error' }, '■'), ' edges with errors are red; thicker = more calls',
    map.backEdges ? '; dashed = a call back to an earlier column (a cycle)' : '', '.');
}

const pct = (rate) => `${(rate * 100).toFixed(rate > 0 && rate < 0.1 ? 1 : 0)}%`;

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

class ServiceMap {
  constructor({ services, edges }) {
    const layout = (this.layout = layoutGraph(services.map((s) => s.name), edges, { nodeW: NW, nodeH: NH }));
    this.backEdges = layout.edges.filter((e) => e.back).length;
    this.svg = el('svg', {
      class: 'service-map', id: 'service-map', role: 'img', 'aria-label': 'Service dependency graph',
      'data-layers': Math.max(0, ...[...layout.nodes.values()].map((n) => n.layer)) + 1, 'data-crossings': layout.crossings, 'data-back-edges': this.backEdges,
    });
    const defs = el('defs');
    for (const kind of ['ok', 'err', 'hl']) {
      const m = el('marker', { id: `arrow-${kind}`, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' });
      m.append(el('path', { d: 'M0,0 L10,5 L0,10 z', class: `arrow-${kind}` }));
      defs.append(m);
    }
    this.zoomLayer = el('g', { class: 'zoom-layer' });
    const edgeLayer = el('g', { class: 'edges' });
    const labelLayer = el('g', { class: 'edge-labels' });
    const nodeLayer = el('g', { class: 'nodes' });
    this.zoomLayer.append(edgeLayer, nodeLayer, labelLayer);
    this.svg.append(defs, this.zoomLayer);

    // ---- nodes ----
    this.nodeEls = new Map();
    const boxes = [];
    for (const s of services) {
      const p = layout.nodes.get(s.name);
      const errRate = s.sampledSpans ? s.sampledErrors / s.sampledSpans : 0;
      const g = el('g', { class: `node${errRate > 0 ? ' has-errors' : ''}`, 'data-service': s.name, 'data-layer': p.layer, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'link' });
      g.append(el('rect', { width: NW, height: NH, rx: 8 }));
      g.append(el('rect', { width: 6, height: NH, rx: 3, fill: serviceColor(s.name) }));
      g.append(el('text', { x: 16, y: 23, class: 'node-name' }, s.name.length > 20 ? `${isolate(s.name.slice(0, 19))}…` : s.name));
      g.append(el('text', { x: 16, y: 42, class: 'node-stats' }, s.sampledSpans ? `${fmtCount(s.sampledSpans)} spans · ${pct(errRate)} errors` : 'not in the sample'));
      g.append(el('title', {}, `${isolate(s.name)}: search its traces`));
      const go = () => navigate(`/search?service=${encodeURIComponent(s.name)}&lookback=1h`);
      g.addEventListener('click', () => this.dragged || go());
      g.addEventListener('keydown', (ev) => ev.key === 'Enter' && go());
      g.addEventListener('mouseenter', () => this.highlight(s.name));
      g.addEventListener('mouseleave', () => this.highlight(null));
      g.addEventListener('focus', () => this.highlight(s.name));
      g.addEventListener('blur', () => this.highlight(null));
      nodeLayer.append(g);
      this.nodeEls.set(s.name, g);
      boxes.push([p.x - 4, p.y - 4, p.x + NW + 4, p.y + NH + 4]);
    }

    // ---- edges, widest first so thin ones stay visible on top ----
    const maxCalls = Math.max(...edges.map((e) => e.callCount), 1);
    this.edgeEls = [];
    const placed = [...boxes];
    const showLabels = edges.length <= 40;
    for (const r of [...layout.edges].sort((a, b) => b.edge.callCount - a.edge.callCount)) {
      const e = r.edge;
      const errRate = e.sampledCalls ? e.sampledErrors / e.sampledCalls : 0;
      const kind = errRate > 0 ? 'err' : 'ok';
      const g = el('g', { class: `edge${errRate > 0 ? ' has-errors' : ''}${r.back ? ' back' : ''}${r.self ? ' self' : ''}`, 'data-edge': `${e.parent}->${e.child}`, tabindex: 0 });
      const d = r.self ? `M${r.points[0]} C${r.points[1]} ${r.points[2]} ${r.points[3]}` : curvePath(r.points);
      // the failing share of the calls sets how red: a trickle of errors is a thin red tint
      const width = 1.5 + 4 * Math.sqrt(e.callCount / maxCalls);
      const path = el('path', { d, 'stroke-width': width, 'marker-end': `url(#arrow-${kind})` });
      if (errRate > 0) path.style.strokeOpacity = String(0.45 + 0.55 * Math.min(1, errRate * 2));
      g.append(path);
      // a wider invisible path makes thin edges easy to hover and click
      g.append(el('path', { d, class: 'hit', 'stroke-width': 12 }));
      const label = `${fmtCount(e.callCount)} calls${e.sampledCalls ? ` · ${pct(errRate)} err · ${fmtDuration(e.meanDurationUs)}` : ''}`;
      g.append(el('title', {}, `${isolate(e.parent)} → ${isolate(e.child)}${r.back ? ' (back edge: closes a cycle)' : ''}\n${label}${e.sampledCalls ? `\nmax ${fmtDuration(e.maxDurationUs)} (sampled)` : ''}`));
      // label: the first spot along the route that overlaps no box and no other label; when
      // there is none (or too many edges), it shows on hover only
      const spot = labelSpot(r.points, label, placed);
      const text = el('text', { x: spot.x, y: spot.y, 'text-anchor': 'middle', class: `edge-label${showLabels && spot.free ? '' : ' on-hover'}`, 'data-edge': `${e.parent}->${e.child}` }, label);
      if (showLabels && spot.free) placed.push(spot.box);
      g.append(text);
      g.addEventListener('click', () => this.dragged || navigate(`/search?service=${encodeURIComponent(e.child)}&lookback=1h`));
      g.addEventListener('mouseenter', () => text.classList.add('shown'));
      g.addEventListener('mouseleave', () => text.classList.remove('shown'));
      edgeLayer.append(g);
      this.edgeEls.push({ g, text, parent: e.parent, child: e.child });
    }
    // labels above nodes: moved into their own layer, still linked to their edge for hover
    for (const { text } of this.edgeEls) labelLayer.append(text);

    this.el = h('div', { class: 'map-view', id: 'map-view', tabindex: 0, 'aria-label': 'Service map: arrow keys pan, + and − zoom, 0 fits' }, this.svg);
    this.view = { k: 1, x: 0, y: 0 };
    this.setupPanZoom();
    this.resize = new ResizeObserver(() => { if (!this.userMoved) this.fit(); });
    this.resize.observe(this.el);
  }

  destroy() { this.resize.disconnect(); }

  /** Dims everything but a service, its edges and the services at their other ends. */
  highlight(name) {
    this.svg.classList.toggle('focus-mode', !!name);
    const near = new Set(name ? [name] : []);
    for (const e of this.edgeEls) {
      const on = !!name && (e.parent === name || e.child === name);
      e.g.classList.toggle('hl', on);
      e.text.classList.toggle('shown', on);
      if (on) { near.add(e.parent); near.add(e.child); }
    }
    for (const [s, g] of this.nodeEls) g.classList.toggle('hl', near.has(s));
  }

  apply() {
    const { k, x, y } = this.view;
    this.zoomLayer.setAttribute('transform', `translate(${x.toFixed(1)},${y.toFixed(1)}) scale(${k.toFixed(4)})`);
    this.svg.dataset.scale = k.toFixed(3);
  }

  /** Whole graph on screen, centred; never enlarged past 100%. */
  fit() {
    const w = this.el.clientWidth, hgt = this.el.clientHeight;
    if (!w || !hgt) return;
    const { width, height } = this.layout;
    const k = Math.min(1, w / width, hgt / height);
    this.view = { k, x: (w - width * k) / 2, y: (hgt - height * k) / 2 };
    this.userMoved = false;
    this.apply();
  }

  zoomBy(f, cx = this.el.clientWidth / 2, cy = this.el.clientHeight / 2) {
    const k = Math.max(0.05, Math.min(3, this.view.k * f));
    const r = k / this.view.k;
    this.view = { k, x: cx - (cx - this.view.x) * r, y: cy - (cy - this.view.y) * r };
    this.userMoved = true;
    this.apply();
  }

  panBy(dx, dy) {
    this.view.x += dx;
    this.view.y += dy;
    this.userMoved = true;
    this.apply();
  }

  setupPanZoom() {
    this.el.addEventListener('wheel', (e) => {
      e.preventDefault();
      const r = this.el.getBoundingClientRect();
      this.zoomBy(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    this.el.addEventListener('mousedown', (e) => {
      if (e.button !== 0) return;
      let lastX = e.clientX, lastY = e.clientY, moved = 0;
      this.dragged = false;
      const move = (ev) => {
        moved += Math.abs(ev.clientX - lastX) + Math.abs(ev.clientY - lastY);
        this.panBy(ev.clientX - lastX, ev.clientY - lastY);
        lastX = ev.clientX;
        lastY = ev.clientY;
        if (moved > 4) { this.dragged = true; this.el.classList.add('panning'); }
      };
      const up = () => {
        window.removeEventListener('mousemove', move);
        window.removeEventListener('mouseup', up);
        this.el.classList.remove('panning');
        // the click that ends a drag does not navigate
        setTimeout(() => (this.dragged = false), 0);
      };
      window.addEventListener('mousemove', move);
      window.addEventListener('mouseup', up);
    });
  }

  onKey(e) {
    const step = 60;
    switch (e.key) {
      case '+': case '=': this.zoomBy(1.25); return true;
      case '-': case '_': this.zoomBy(1 / 1.25); return true;
      case '0': this.fit(); return true;
      case 'ArrowLeft': this.panBy(step, 0); return true;
      case 'ArrowRight': this.panBy(-step, 0); return true;
      case 'ArrowUp': this.panBy(0, step); return true;
      case 'ArrowDown': this.panBy(0, -step); return true;
      default: return false;
    }
  }
}

/** Where an edge's label goes: the middle of the longest free stretch of its route. */
function labelSpot(points, label, placed) {
  const w = label.length * 6.4 + 8, hgt = 16;
  const candidates = [];
  for (let k = 1; k < points.length; k++) {
    const [x0, y0] = points[k - 1], [x1, y1] = points[k];
    for (const t of [0.5, 0.3, 0.7]) candidates.push([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, Math.abs(x1 - x0)]);
  }
  candidates.sort((a, b) => b[2] - a[2]);
  const overlaps = (b) => placed.some((p) => b[0] < p[2] && b[2] > p[0] && b[1] < p[3] && b[3] > p[1]);
  for (const [x, y] of candidates) {
    const box = [x - w / 2, y - hgt + 4, x + w / 2, y + 4];
    if (!overlaps(box)) return { x, y: y - 4, box, free: true };
  }
  const [x, y] = candidates[0];
  return { x, y: y - 4, box: null, free: false };
}
