// The waterfall: a collapsible span tree against a time axis, with a minimap and a ruler.
// Rows are virtualised, and a frame's work grows with the rows on screen, not with the trace:
// * the name column is a fixed pool of row nodes reused for the rows on screen, updated in place
//   (text nodes, one className, attributes; only what changed; colours and indents are classes);
// * the bars column of those rows is drawn on one canvas that sits in the scrolled content, so
//   the compositor scrolls it with the rows and a scroll within the drawn rows costs nothing;
// * scrolling fills rows ahead in its direction; a jump fills just the screen and a margin.
// Measured in docs/benchmarks.md ("Web UI"). The minimap draws every span on a canvas; drag on it
// to zoom into a time window, click to jump to a row, double-click to zoom out.
import { visibleRows } from './model.js';
import { fmtDuration, serviceColor, serviceRgb, isolate } from './format.js';

const ROW = 26; // px, keep in step with .wf-row in app.css
const OVERSCAN = 4; // rows filled beyond each edge: a small scroll finds them ready
const AHEAD = 16; // rows filled ahead while scrolling
// Indents: 14px a level for the first FULL_INDENT levels, then 3px a level up to MAX_INDENT, and
// never more than INDENT_SHARE of the name column, so the name stays readable at any depth;
// rows deeper than FULL_INDENT show their depth, which the squeezed indent no longer tells.
const FULL_INDENT = 4;
const MAX_INDENT = 40;
const INDENT_SHARE = '25%';
const indentPx = (d) => Math.min(d, FULL_INDENT) * 14 + Math.max(0, Math.min(d, MAX_INDENT) - FULL_INDENT) * 3;
const ERROR_RGB = [229, 72, 77];

export class Waterfall {
  constructor(container, trace, critical, { onSelect, onOpen }) {
    this.t = trace;
    this.critical = critical;
    this.onSelect = onSelect;
    this.onOpen = onOpen;
    this.collapsed = new Set();
    this.matches = new Set();
    this.selected = -1;
    this.showCritical = true;
    this.view = [0, Math.max(trace.duration, 1e-3)];
    this.critBySpan = new Map();
    for (const s of critical.segments) {
      const list = this.critBySpan.get(s.span) || [];
      list.push(s);
      this.critBySpan.set(s.span, list);
    }

    this.pool = [];
    this.textCache = [];
    this.minimap = document.createElement('canvas');
    this.minimap.className = 'minimap';
    this.minimap.setAttribute('aria-label', 'Minimap: drag to zoom into a time window, click to jump, double-click to zoom out');
    // the rows on screen, as a box over the minimap: moving it is a transform, not a redraw
    this.viewBox = document.createElement('div');
    this.viewBox.className = 'minimap-view';
    const minimapBox = document.createElement('div');
    minimapBox.className = 'minimap-box';
    minimapBox.append(this.minimap, this.viewBox);
    this.ruler = document.createElement('div');
    this.ruler.className = 'wf-ruler';
    this.scroller = document.createElement('div');
    this.scroller.className = 'wf-scroll';
    this.scroller.tabIndex = 0;
    this.scroller.setAttribute('role', 'tree');
    this.scroller.setAttribute('aria-label', 'Spans');
    this.spacer = document.createElement('div');
    this.spacer.className = 'wf-spacer';
    this.layer = document.createElement('div');
    this.layer.className = 'wf-layer';
    // the bars column of the rows on screen, drawn on one canvas that scrolls with the rows
    this.barsCanvas = document.createElement('canvas');
    this.barsCanvas.className = 'wf-bars-canvas';
    this.barsCanvas.setAttribute('aria-hidden', 'true');
    this.spacer.append(this.layer, this.barsCanvas);
    this.scroller.append(this.spacer);
    const zoomNote = document.createElement('div');
    zoomNote.className = 'wf-zoom';
    this.zoomNote = zoomNote;
    container.append(minimapBox, zoomNote, this.ruler, this.scroller);

    this.scroller.addEventListener('scroll', () => this.schedule());
    // the full name as a tooltip, written when the pointer gets there rather than on every fill
    this.layer.addEventListener('mouseover', (e) => {
      const name = e.target.closest('.wf-name');
      const i = Number(name?.parentElement.dataset.i);
      if (name && Number.isInteger(i)) name.title = `${isolate(this.t.spans[i].service)}: ${isolate(this.t.spans[i].name)} · depth ${this.t.depth[i]}`;
    });
    this.layer.addEventListener('click', (e) => {
      const tog = e.target.closest('[data-toggle]');
      const row = e.target.closest('.wf-row');
      if (!row) return;
      const i = Number(row.dataset.i);
      if (tog) this.toggle(i);
      else {
        this.select(i);
        this.onOpen?.(i);
      }
    });
    this.resizeObserver = new ResizeObserver((entries) => {
      const { height, width } = entries[entries.length - 1].contentRect;
      if (height && (height !== this.viewHeight || width !== this.viewWidth)) {
        this.viewHeight = height;
        this.viewWidth = width;
        this.measureBars();
        this.rendered = null;
        this.schedule();
      }
      if (this.minimap.clientWidth === this.minimapWidth) return; // the first call, or height only
      this.drawMinimap();
      this.schedule();
    });
    this.resizeObserver.observe(this.scroller);
    this.setupMinimap();
    window.addEventListener('skein:theme', (this.onTheme = () => { this.readTheme(); this.drawMinimap(); this.rendered = null; this.render(); }));
    this.readTheme();
    this.writeRowStyles();
    this.recompute();
  }

  destroy() {
    this.resizeObserver.disconnect();
    this.rowStyles.remove();
    window.removeEventListener('skein:theme', this.onTheme);
  }

  recompute() {
    this.rows = visibleRows(this.t, this.collapsed);
    this.rowOf = new Int32Array(this.t.spans.length).fill(-1);
    this.rows.forEach((i, r) => (this.rowOf[i] = r));
    this.spacer.style.height = `${this.rows.length * ROW}px`;
    this.rendered = null;
    this.scroller.dataset.rows = String(this.rows.length); // for tests and curious people
    this.drawMinimap();
    this.render();
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.render({ scrollOnly: true });
    });
  }

  /**
   * Fills the row pool for the rows on screen. Row r always lives in pool slot r % pool size, so a
   * small scroll rewrites only the few slots that came into view; every write is skipped when the
   * value is unchanged, and nothing is read from the layout after the first write.
   */
  render({ scrollOnly = false } = {}) {
    // reads first: the scroll position and the height (cached by the ResizeObserver)
    const top = this.scroller.scrollTop;
    const height = this.viewHeight || this.scroller.clientHeight || 600;
    const seenFirst = Math.floor(top / ROW), seenLast = Math.min(this.rows.length, Math.ceil((top + height) / ROW));
    const was = this.rendered;
    if (scrollOnly && was && seenFirst >= was[0] && seenLast <= was[1]) {
      this.moveViewportBox(top, height);
      return;
    }
    // A scroll that overlaps what is drawn fills AHEAD rows more in its direction, so the next
    // frames have nothing to do; a jump fills just the rows on screen and a margin.
    const overlaps = was && seenLast > was[0] && seenFirst < was[1];
    const down = !was || seenFirst >= was[0];
    const first = Math.max(0, seenFirst - (overlaps && !down ? AHEAD : OVERSCAN));
    const last = Math.min(this.rows.length, seenLast + (overlaps && down ? AHEAD : OVERSCAN));
    this.rendered = [first, last];
    const size = Math.ceil(height / ROW) + OVERSCAN + AHEAD + 2;
    while (this.pool.length < size) this.pool.push(new PooledRow());
    for (let r = first; r < last; r++) this.fill(this.pool[r % size], r);
    // exactly the rows in use are in the DOM (tests and screen readers count them)
    const used = last - first;
    const inUse = new Set();
    for (let r = first; r < last; r++) inUse.add(this.pool[r % size]);
    for (const slot of this.pool) {
      if (inUse.has(slot)) { if (!slot.attached) { this.layer.append(slot.el); slot.attached = true; } }
      else if (slot.attached) { slot.el.remove(); slot.attached = false; }
    }
    this.layer.dataset.used = String(used);
    this.drawBars(first, last);
    if (this.rulerView !== this.view) {
      this.rulerView = this.view;
      this.drawRuler();
    }
    this.moveViewportBox(top, height);
    if (!this.painted) {
      this.painted = true;
      // Two frames later the first rows are on screen: the "first waterfall paint" mark.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        performance.mark('skein:waterfall-painted');
        document.body.dataset.waterfallPainted = 'true';
      }));
    }
  }

  /** Per-span strings that never change for a trace: made once, on first sight. */
  texts(i) {
    let x = this.textCache[i];
    if (!x) {
      const s = this.t.spans[i];
      const kids = this.t.children[i].length;
      x = this.textCache[i] = {
        // service colour and indent come from classes (one stylesheet per trace), not inline styles
        cls: ` s${this.serviceIndex.get(s.service)} d${Math.min(this.t.depth[i], MAX_INDENT)}${s.error ? ' err' : ''}${kids ? '' : ' leaf'}${s.parent === -2 ? ' orphan' : ''}`,
        level: String(this.t.depth[i] + 1),
        depth: this.t.depth[i] > FULL_INDENT ? String(this.t.depth[i]) : '',
        label: `${fmtDuration(s.duration)}${s.events ? ` · ${s.events} event${s.events > 1 ? 's' : ''}` : ''}`,
        color: serviceColor(s.service),
      };
    }
    return x;
  }

  /** Colours per service and indents per depth, as classes: a row's look is one className write. */
  writeRowStyles() {
    this.serviceIndex = new Map(this.t.services.map((s, k) => [s, k]));
    for (const s of this.t.spans) if (!this.serviceIndex.has(s.service)) this.serviceIndex.set(s.service, this.serviceIndex.size);
    let css = '';
    for (const [s, k] of this.serviceIndex) css += `.wf-row.s${k} .svc-mark{background:${serviceColor(s)}}\n`;
    for (let d = 0; d <= MAX_INDENT; d++) css += `.wf-row.d${d} .indent{width:min(${indentPx(d)}px,${INDENT_SHARE})}\n`;
    this.rowStyles = document.createElement('style');
    this.rowStyles.textContent = css;
    document.head.append(this.rowStyles);
  }

  /** Writes row r (span rows[r]) into a pool slot. */
  fill(slot, r) {
    const i = this.rows[r];
    const s = this.t.spans[i];
    const x = this.texts(i);
    const folded = this.collapsed.has(i) && this.t.children[i].length > 0;
    const onPath = this.showCritical && this.critical.onPath[i];
    const selected = i === this.selected;
    slot.set('top', `${r * ROW}px`);
    slot.set('className', `wf-row${x.cls}${selected ? ' selected' : ''}${this.matches.has(i) ? ' match' : ''}${onPath ? ' crit' : ''}${folded ? ' folded' : ''}`);
    slot.set('i', i);
    slot.set('level', x.level);
    slot.set('depth', x.depth);
    slot.set('expanded', x.cls.includes(' leaf') ? '' : String(!folded));
    slot.set('selected', String(selected));
    slot.set('svc', s.service);
    slot.set('op', s.name);
    slot.set('folded', folded ? `+${this.t.descendants[i]}` : '');
  }

  /** Where the bars column sits in a row: after the name column (.wf-name), 8px in, 90px short of the end (as .wf-ruler-time). */
  measureBars() {
    const rowWidth = this.layer.clientWidth || this.scroller.clientWidth;
    const nameWidth = Math.max(260, rowWidth * 0.36);
    this.barsLeft = nameWidth + 8;
    this.barsWidth = Math.max(10, rowWidth - this.barsLeft - 90);
    this.barsFont = `11.5px ${getComputedStyle(this.scroller).fontFamily}`;
  }

  /**
   * Bars, critical-path segments, error outlines and duration labels of rows [first, last) on
   * the canvas, which sits at row `first` so the compositor scrolls it with the rows.
   */
  drawBars(first, last) {
    if (this.barsWidth === undefined) this.measureBars();
    const c = this.barsCanvas;
    const dpr = window.devicePixelRatio || 1;
    const cssW = Math.round(this.barsWidth + 90), cssH = Math.max(1, (last - first) * ROW);
    if (c.width !== Math.round(cssW * dpr) || c.height !== Math.round(cssH * dpr)) {
      c.width = Math.round(cssW * dpr);
      c.height = Math.round(cssH * dpr);
      c.style.width = `${cssW}px`;
      c.style.height = `${cssH}px`;
    }
    c.style.transform = `translate(${this.barsLeft}px, ${first * ROW}px)`;
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);
    g.font = this.barsFont;
    g.textBaseline = 'middle';
    const W = this.barsWidth, S = this.t.spans, colors = this.colors;
    const px = (time) => ((time - this.view[0]) / (this.view[1] - this.view[0])) * W;
    for (let r = first; r < last; r++) {
      const i = this.rows[r];
      const s = S[i];
      const x = this.texts(i);
      const y = (r - first) * ROW;
      const left = px(s.start);
      const width = Math.max(W * 0.0015, px(s.end) - left, 1);
      g.globalAlpha = 0.9;
      g.fillStyle = x.color;
      g.fillRect(left, y + 7, width, 12);
      g.globalAlpha = 1;
      if (s.error) {
        g.strokeStyle = colors.error;
        g.lineWidth = 2;
        g.strokeRect(left - 1, y + 6, width + 2, 14);
      }
      if (this.showCritical && this.critical.onPath[i]) {
        g.fillStyle = colors.crit;
        for (const seg of this.critBySpan.get(i) || []) {
          const l = px(seg.start);
          g.fillRect(l, y + 20, Math.max(W * 0.001, px(seg.end) - l), 3);
        }
      }
      // the label goes right of the bar, else left of it, else inside a bar that fills the row
      const end = left + width;
      if (end < W * 0.82) {
        g.fillStyle = colors.muted;
        g.textAlign = 'left';
        g.fillText(x.label, end + 6, y + 13);
      } else if (left > W * 0.18) {
        g.fillStyle = colors.muted;
        g.textAlign = 'right';
        g.fillText(x.label, left - 6, y + 13);
      } else {
        g.fillStyle = colors.barText;
        g.textAlign = 'left';
        g.fillText(x.label, Math.max(left, 0) + 6, y + 13);
      }
    }
  }

  drawRuler() {
    const [lo, hi] = this.view;
    let html = '';
    for (let k = 0; k <= 4; k++) {
      const t = lo + ((hi - lo) * k) / 4;
      html += `<span class="tick${k === 4 ? ' last' : ''}" style="left:${k * 25}%">${fmtDuration(t)}</span>`;
    }
    this.ruler.innerHTML = `<div class="wf-ruler-name">Service · operation</div><div class="wf-ruler-time">${html}</div>`;
  }

  // ---- minimap -----------------------------------------------------------------------------
  /** Theme colours the canvases need, read once per theme (getComputedStyle forces a style pass). */
  readTheme() {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    this.colors = { shade: v('--shade'), accent: v('--accent'), muted: v('--muted'), crit: v('--crit'), error: v('--error'), barText: '#ffffff' };
  }

  /**
   * Every span as a 1-pixel-high run on an RGBA buffer (row position down, time across):
   * writing pixels beats 100,000 fillRect calls by an order of magnitude.
   */
  drawMinimap() {
    const c = this.minimap;
    const w = Math.max(1, Math.round(c.clientWidth || 800));
    const hgt = 56;
    this.minimapWidth = c.clientWidth;
    c.width = w;
    c.height = hgt;
    const g = c.getContext('2d');
    const img = g.createImageData(w, hgt);
    const px = img.data;
    const rows = this.rows.length || 1;
    const D = this.t.duration || 1;
    const S = this.t.spans;
    const rgb = new Map();
    const rowsPerPixel = rows / hgt;
    for (let r = 0; r < this.rows.length; r++) {
      const s = S[this.rows[r]];
      let color = s.error ? ERROR_RGB : rgb.get(s.service);
      if (!color) rgb.set(s.service, (color = serviceRgb(s.service)));
      const y0 = Math.floor(r / rowsPerPixel);
      const y1 = Math.max(y0 + 1, Math.floor((r + 1) / rowsPerPixel));
      const x0 = Math.min(w - 1, Math.floor((s.start / D) * w));
      const x1 = Math.max(x0 + 1, Math.ceil((s.end / D) * w));
      for (let y = y0; y < y1 && y < hgt; y++) {
        for (let x = x0, o = (y * w + x0) * 4; x < x1 && x < w; x++, o += 4) {
          px[o] = color[0];
          px[o + 1] = color[1];
          px[o + 2] = color[2];
          px[o + 3] = 255;
        }
      }
    }
    this.minimapImage = img;
    this.drawViewport();
  }

  /** Moves the box over the minimap that marks the rows on screen. */
  moveViewportBox(top = this.scroller.scrollTop, height = this.viewHeight || this.scroller.clientHeight) {
    const hgt = 56;
    const rows = this.rows.length || 1;
    const y0 = Math.max(0, Math.min(hgt - 3, (top / ROW / rows) * hgt));
    const y1 = Math.min(hgt, ((top + height) / ROW / rows) * hgt);
    const boxHeight = `${Math.max(3, y1 - y0)}px`;
    const transform = `translateY(${y0}px)`;
    if (this.viewBoxHeight !== boxHeight) this.viewBox.style.height = this.viewBoxHeight = boxHeight;
    if (this.viewBoxTransform !== transform) this.viewBox.style.transform = this.viewBoxTransform = transform;
  }

  drawViewport() {
    if (!this.minimapImage) return;
    const c = this.minimap;
    const g = c.getContext('2d');
    g.putImageData(this.minimapImage, 0, 0);
    const w = c.width, hgt = c.height;
    const D = this.t.duration || 1;
    // shade what lies outside the zoomed time window
    g.fillStyle = this.colors.shade || 'rgba(0,0,0,.35)';
    const a = (this.view[0] / D) * w, b = (this.view[1] / D) * w;
    if (a > 0) g.fillRect(0, 0, a, hgt);
    if (b < w) g.fillRect(b, 0, w - b, hgt);
    if (this.drag) {
      g.fillStyle = 'rgba(31,111,235,.25)';
      g.fillRect(Math.min(this.drag.x0, this.drag.x1), 0, Math.abs(this.drag.x1 - this.drag.x0), hgt);
    }
  }

  setupMinimap() {
    const c = this.minimap;
    const pos = (e) => { const r = c.getBoundingClientRect(); return [e.clientX - r.left, e.clientY - r.top, r.width, r.height]; };
    c.addEventListener('mousedown', (e) => {
      const [x] = pos(e);
      this.drag = { x0: x, x1: x };
      const move = (ev) => { this.drag.x1 = pos(ev)[0]; this.drawViewport(); };
      const up = (ev) => {
        window.removeEventListener('mousemove', move);
        window.removeEventListener('mouseup', up);
        const [x1, y, w, hgt] = pos(ev);
        const { x0 } = this.drag;
        this.drag = null;
        if (Math.abs(x1 - x0) > 4) {
          const D = this.t.duration || 1;
          this.setView((Math.max(0, Math.min(x0, x1)) / w) * D, (Math.min(w, Math.max(x0, x1)) / w) * D);
        } else {
          const row = Math.floor((Math.max(0, y) / hgt) * this.rows.length);
          this.scroller.scrollTop = Math.max(0, row * ROW - this.scroller.clientHeight / 2);
        }
        this.drawViewport();
      };
      window.addEventListener('mousemove', move);
      window.addEventListener('mouseup', up);
    });
    c.addEventListener('dblclick', () => this.setView(0, this.t.duration));
  }

  setView(lo, hi) {
    const D = Math.max(this.t.duration, 1e-3);
    this.view = hi - lo < D / 1e6 ? [0, D] : [lo, hi];
    const zoomed = this.view[0] > 0 || this.view[1] < D;
    this.zoomNote.innerHTML = zoomed
      ? `Zoomed to ${fmtDuration(this.view[0])} – ${fmtDuration(this.view[1])} <button type="button" class="link">show all</button>`
      : '';
    this.zoomNote.querySelector('button')?.addEventListener('click', () => this.setView(0, D));
    this.drawViewport();
    this.render();
  }

  // ---- tree and selection ------------------------------------------------------------------
  toggle(i, open) {
    if (!this.t.children[i].length) return;
    const fold = open === undefined ? !this.collapsed.has(i) : !open;
    if (fold) this.collapsed.add(i); else this.collapsed.delete(i);
    this.recompute();
  }

  expandAll() { this.collapsed.clear(); this.recompute(); }

  collapseToTop() {
    this.collapsed = new Set(this.t.tops.flatMap((i) => this.t.children[i]).filter((i) => this.t.children[i].length));
    this.recompute();
  }

  /** Unfolds the ancestors of `i` so it has a row. */
  reveal(i, ancestors) {
    let changed = false;
    for (const a of ancestors) if (this.collapsed.delete(a)) changed = true;
    if (changed) this.recompute();
  }

  select(i, { scroll = true } = {}) {
    this.selected = i;
    if (scroll && i >= 0 && this.rowOf[i] >= 0) {
      const y = this.rowOf[i] * ROW;
      const top = this.scroller.scrollTop, h = this.scroller.clientHeight;
      if (y < top + ROW || y > top + h - 2 * ROW) this.scroller.scrollTop = Math.max(0, y - h / 3);
    }
    this.render();
    this.onSelect?.(i);
  }

  /** The span `delta` rows away from the selection. */
  step(delta) {
    const r = this.selected >= 0 ? this.rowOf[this.selected] : -1;
    const next = Math.max(0, Math.min(this.rows.length - 1, r + delta));
    if (this.rows.length) this.select(this.rows[next]);
  }

  setMatches(list) {
    this.matches = new Set(list);
    this.render();
  }

  setCritical(on) {
    this.showCritical = on;
    this.render();
  }
}

/**
 * One reusable row: its nodes are made once; `set` writes a value only when it changed, so
 * reusing a slot for the same span again costs nothing. Text goes into kept Text nodes.
 */
class PooledRow {
  constructor() {
    const el = (tag, cls, parent) => { const e = document.createElement(tag); if (cls) e.className = cls; parent?.append(e); return e; };
    const text = (parent) => parent.appendChild(document.createTextNode(''));
    this.el = el('div', 'wf-row');
    this.el.setAttribute('role', 'treeitem');
    this.el.slot = this;
    const name = (this.name = el('div', 'wf-name', this.el));
    el('span', 'indent', name);
    const depth = el('span', 'depth', name);
    depth.title = 'depth in the tree';
    depth.setAttribute('aria-hidden', 'true'); // aria-level says it already
    this.depth = text(depth);
    const tog = el('button', 'tog', name);
    tog.type = 'button';
    tog.tabIndex = -1;
    tog.dataset.toggle = '';
    tog.setAttribute('aria-label', 'Collapse or expand');
    el('span', 'svc-mark', name);
    this.svc = text(el('span', 'svc', name));
    this.op = text(el('span', 'op', name));
    const errMark = el('span', 'err-mark', name);
    errMark.title = 'error status';
    errMark.textContent = '!';
    const folded = el('span', 'badge folded', name);
    folded.title = 'hidden descendants';
    this.folded = text(folded);
    const orphan = el('span', 'badge warn orphan-mark', name);
    orphan.title = 'its parent span is not in this trace';
    orphan.textContent = 'orphan';
    this.v = {};
  }

  set(key, value) {
    if (this.v[key] === value) return;
    this.v[key] = value;
    switch (key) {
      case 'top': this.el.style.top = value; break;
      case 'className': this.el.className = value; break;
      case 'i': this.el.dataset.i = value; break;
      case 'level': this.el.setAttribute('aria-level', value); break;
      case 'expanded': if (value) this.el.setAttribute('aria-expanded', value); else this.el.removeAttribute('aria-expanded'); break;
      case 'selected': this.el.setAttribute('aria-selected', value); break;
      case 'depth': this.depth.data = value; break;
      case 'svc': this.svc.data = value; break;
      case 'op': this.op.data = value; break;
      case 'folded': this.folded.data = value; break;
    }
  }
}
