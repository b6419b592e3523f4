// Flame graph of one trace: x is time, y is depth (root on top), each span a box in its
// service colour; critical-path spans outlined. Canvas, redrawn for the rows on screen only,
// so a 100,000-span trace stays light. Click a box to select its span.
import { fmtDuration, serviceColor, serviceRgb, isolate } from './format.js';

/** Dark text on light boxes, white on dark ones. */
function textOn([r, g, b]) {
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? '#111' : '#fff';
}

const ROW = 20;

export class FlameGraph {
  constructor(container, trace, critical, { onSelect }) {
    this.t = trace;
    this.critical = critical;
    this.onSelect = onSelect;
    this.selected = -1;
    this.scroller = document.createElement('div');
    this.scroller.className = 'flame-scroll';
    this.spacer = document.createElement('div');
    this.spacer.style.height = `${trace.maxDepth * ROW + 4}px`;
    this.canvas = document.createElement('canvas');
    this.canvas.className = 'flame';
    this.canvas.setAttribute('aria-label', 'Flame graph: time across, depth down; click a box to select its span');
    this.spacer.append(this.canvas);
    this.scroller.append(this.spacer);
    container.append(this.scroller);
    // spans bucketed by depth, for drawing and hit-testing only the visible levels
    this.byDepth = Array.from({ length: trace.maxDepth }, () => []);
    trace.spans.forEach((_, i) => this.byDepth[trace.depth[i]].push(i));
    this.scroller.addEventListener('scroll', () => this.draw());
    this.canvas.addEventListener('click', (e) => {
      const r = this.canvas.getBoundingClientRect();
      const i = this.hit(e.clientX - r.left, e.clientY - r.top + this.scroller.scrollTop);
      if (i >= 0) { this.selected = i; this.draw(); this.onSelect?.(i); }
    });
    this.canvas.addEventListener('mousemove', (e) => {
      const r = this.canvas.getBoundingClientRect();
      const i = this.hit(e.clientX - r.left, e.clientY - r.top + this.scroller.scrollTop);
      const s = trace.spans[i];
      this.canvas.title = s ? `${isolate(s.service)}: ${isolate(s.name)}\n${fmtDuration(s.duration)} at +${fmtDuration(s.start)}` : '';
    });
    this.ro = new ResizeObserver(() => this.draw());
    this.ro.observe(this.scroller);
  }

  destroy() { this.ro.disconnect(); }

  hit(x, y) {
    const d = Math.floor(y / ROW);
    const w = this.scroller.clientWidth;
    const D = this.t.duration || 1;
    const time = (x / w) * D;
    const slack = (2 / w) * D; // thin spans are hard to hit: allow two pixels
    for (const i of this.byDepth[d] || []) {
      const s = this.t.spans[i];
      if (s.start - slack <= time && time <= s.end + slack) return i;
    }
    return -1;
  }

  draw() {
    const w = this.scroller.clientWidth || 800;
    const hgt = this.scroller.clientHeight || 400;
    const top = this.scroller.scrollTop;
    const dpr = window.devicePixelRatio || 1;
    const c = this.canvas;
    c.style.transform = `translateY(${top}px)`;
    c.style.width = `${w}px`;
    c.style.height = `${hgt}px`;
    c.width = w * dpr;
    c.height = hgt * dpr;
    const g = c.getContext('2d');
    g.scale(dpr, dpr);
    const D = this.t.duration || 1;
    const styles = getComputedStyle(document.documentElement);
    g.font = '12px system-ui, sans-serif';
    g.textBaseline = 'middle';
    const d0 = Math.floor(top / ROW), d1 = Math.min(this.t.maxDepth, Math.ceil((top + hgt) / ROW));
    for (let d = d0; d < d1; d++) {
      const y = d * ROW - top;
      for (const i of this.byDepth[d]) {
        const s = this.t.spans[i];
        const x = (s.start / D) * w;
        const bw = Math.max(1, (s.duration / D) * w);
        g.fillStyle = s.error ? '#e5484d' : serviceColor(s.service);
        g.fillRect(x, y + 1, bw - (bw > 3 ? 1 : 0), ROW - 2);
        if (this.critical.onPath[i] && bw > 3) {
          g.strokeStyle = styles.getPropertyValue('--crit').trim() || '#000';
          g.lineWidth = 2;
          g.strokeRect(x + 1, y + 2, bw - 3, ROW - 4);
        }
        if (i === this.selected) {
          g.strokeStyle = styles.getPropertyValue('--accent').trim();
          g.lineWidth = 3;
          g.strokeRect(x + 1.5, y + 1.5, Math.max(2, bw - 3), ROW - 3);
        }
        if (bw > 40) {
          g.fillStyle = s.error ? '#fff' : textOn(serviceRgb(s.service));
          g.save();
          g.beginPath();
          g.rect(x, y, bw - 4, ROW);
          g.clip();
          g.fillText(`${isolate(s.name)} (${fmtDuration(s.duration)})`, x + 4, y + ROW / 2);
          g.restore();
        }
      }
    }
  }

  select(i) { this.selected = i; this.draw(); }
}
