// The waterfall: a collapsible span tree against a time axis, with a minimap and a ruler.
// Rows are virtualised (only the ~50 on screen exist in the DOM), so 100,000 spans scroll as
// smoothly as 100. The minimap draws every span on a canvas; drag on it to zoom into a time
// window, click to jump to a row, double-click to zoom out.
import { visibleRows } from './model.js';
import { esc } from './dom.js';
import { fmtDuration, serviceColor, serviceRgb } from './format.js';

const ROW = 26; // px, keep in step with .wf-row in app.css
const OVERSCAN = 8;
const MAX_INDENT = 40; // deeper levels stop indenting (the depth is in the row's title)
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

    this.minimap = document.createElement('canvas');
    this.minimap.className = 'minimap';
    this.minimap.setAttribute('aria-label', 'Minimap: drag to zoom into a time window, click to jump, double-click to zoom out');
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
    this.spacer.append(this.layer);
    this.scroller.append(this.spacer);
    const zoomNote = document.createElement('div');
    zoomNote.className = 'wf-zoom';
    this.zoomNote = zoomNote;
    container.append(this.minimap, zoomNote, this.ruler, this.scroller);

    this.scroller.addEventListener('scroll', () => this.schedule());
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
    this.resizeObserver = new ResizeObserver(() => {
      if (this.minimap.clientWidth === this.minimapWidth) return; // the first call, or height only
      this.drawMinimap();
      this.schedule();
    });
    this.resizeObserver.observe(this.scroller);
    this.setupMinimap();
    window.addEventListener('skein:theme', (this.onTheme = () => { this.readTheme(); this.drawMinimap(); }));
    this.readTheme();
    this.recompute();
  }

  destroy() {
    this.resizeObserver.disconnect();
    window.removeEventListener('skein:theme', this.onTheme);
  }

  recompute() {
    this.rows = visibleRows(this.t, this.collapsed);
    this.rowOf = new Int32Array(this.t.spans.length).fill(-1);
    this.rows.forEach((i, r) => (this.rowOf[i] = r));
    this.spacer.style.height = `${this.rows.length * ROW}px`;
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

  x(time) {
    return ((time - this.view[0]) / (this.view[1] - this.view[0])) * 100;
  }

  /** Rebuilds the rows on screen; a scroll that stays within the rendered rows only moves. */
  render({ scrollOnly = false } = {}) {
    const top = this.scroller.scrollTop;
    const height = this.scroller.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / ROW) + OVERSCAN);
    const needed = [Math.max(0, Math.floor(top / ROW)), Math.min(this.rows.length, Math.ceil((top + height) / ROW))];
    if (scrollOnly && this.rendered && needed[0] >= this.rendered[0] && needed[1] <= this.rendered[1]) {
      this.drawViewport();
      return;
    }
    this.rendered = [first, last];
    const S = this.t.spans;
    let html = '';
    for (let r = first; r < last; r++) {
      const i = this.rows[r];
      const s = S[i];
      const kids = this.t.children[i].length;
      const folded = this.collapsed.has(i);
      const depth = this.t.depth[i];
      const onPath = this.showCritical && this.critical.onPath[i];
      const cls = `wf-row${i === this.selected ? ' selected' : ''}${this.matches.has(i) ? ' match' : ''}${s.error ? ' err' : ''}${onPath ? ' crit' : ''}`;
      const color = serviceColor(s.service);
      const left = this.x(s.start);
      const width = Math.max(0.15, this.x(s.end) - left);
      let bars = `<div class="bar" style="left:${left}%;width:${width}%;background:${color}"></div>`;
      if (onPath) {
        for (const seg of this.critBySpan.get(i) || []) {
          const l = this.x(seg.start);
          bars += `<div class="crit-seg" style="left:${l}%;width:${Math.max(0.1, this.x(seg.end) - l)}%"></div>`;
        }
      }
      const end = left + width;
      const label = `${fmtDuration(s.duration)}${s.events ? ` · ${s.events} event${s.events > 1 ? 's' : ''}` : ''}`;
      // the label goes right of the bar, else left of it, else inside a bar that fills the row
      if (end < 82) bars += `<span class="dur" style="left:calc(${end}% + 6px)">${label}</span>`;
      else if (left > 18) bars += `<span class="dur" style="right:calc(${100 - left}% + 6px)">${label}</span>`;
      else bars += `<span class="dur dur-in" style="left:calc(${Math.max(left, 0)}% + 6px)">${label}</span>`;
      const toggle = kids
        ? `<button class="tog" data-toggle="${i}" aria-label="${folded ? 'Expand' : 'Collapse'}" tabindex="-1">${folded ? '▸' : '▾'}</button>`
        : '<span class="tog leaf"></span>';
      const hidden = folded ? `<span class="badge folded" title="hidden descendants">+${this.t.descendants[i]}</span>` : '';
      const orphan = s.parent === -2 ? '<span class="badge warn" title="its parent span is not in this trace">orphan</span>' : '';
      html += `<div class="${cls}" role="treeitem" aria-level="${depth + 1}" aria-expanded="${kids ? !folded : ''}" aria-selected="${i === this.selected}" data-i="${i}" style="top:${r * ROW}px">` +
        `<div class="wf-name" title="${esc(`${s.service}: ${s.name}`)} · depth ${depth}"><span class="indent" style="width:${Math.min(depth, MAX_INDENT) * 14}px"></span>${toggle}` +
        `<span class="svc-mark" style="background:${color}"></span><span class="svc">${esc(s.service)}</span><span class="op">${esc(s.name)}</span>` +
        `${s.error ? '<span class="err-mark" title="error status">!</span>' : ''}${hidden}${orphan}</div>` +
        `<div class="wf-bars">${bars}</div></div>`;
    }
    this.layer.innerHTML = html;
    if (this.rulerView !== this.view) {
      this.rulerView = this.view;
      this.drawRuler();
    }
    this.drawViewport();
    if (!this.painted) {
      this.painted = true;
      // Two frames later the first rows are on screen: the "first waterfall paint" mark.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        performance.mark('skein:waterfall-painted');
        document.body.dataset.waterfallPainted = 'true';
      }));
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
    this.colors = { shade: css.getPropertyValue('--shade').trim(), accent: css.getPropertyValue('--accent').trim() };
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
    // the rows on screen
    const rows = this.rows.length || 1;
    const y0 = (this.scroller.scrollTop / ROW / rows) * hgt;
    const y1 = ((this.scroller.scrollTop + this.scroller.clientHeight) / ROW / rows) * hgt;
    g.strokeStyle = this.colors.accent || '#1f6feb';
    g.lineWidth = 1.5;
    g.strokeRect(0.75, Math.max(0.75, y0), w - 1.5, Math.max(3, Math.min(hgt, y1) - y0 - 0.75));
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
