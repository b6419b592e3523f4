// Formatting shared by every view: durations, local times with their UTC offset, service colours.

/** A duration given in microseconds, in the unit a person reads fastest. */
export function fmtDuration(us) {
  if (!Number.isFinite(us)) return '–';
  const a = Math.abs(us);
  const sign = us < 0 ? '-' : '';
  if (a < 1) return `${sign}${Math.round(a * 1000)}ns`;
  if (a < 1000) return `${sign}${trim(a, a < 10 ? 2 : a < 100 ? 1 : 0)}µs`;
  if (a < 1e6) return `${sign}${trim(a / 1e3, a < 1e4 ? 2 : a < 1e5 ? 1 : 0)}ms`;
  if (a < 60e6) return `${sign}${trim(a / 1e6, 2)}s`;
  if (a < 3600e6) return `${sign}${Math.floor(a / 60e6)}m ${Math.round((a % 60e6) / 1e6)}s`;
  return `${sign}${Math.floor(a / 3600e6)}h ${Math.round((a % 3600e6) / 60e6)}m`;
}

function trim(x, digits) {
  return String(Number(x.toFixed(digits)));
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** "UTC+01:00" for the browser's offset at that moment. */
export function utcOffset(date) {
  const m = -date.getTimezoneOffset();
  const s = m >= 0 ? '+' : '-';
  return `UTC${s}${pad(Math.floor(Math.abs(m) / 60))}:${pad(Math.abs(m) % 60)}`;
}

/** Unix µs as local "2026-11-22 04:45:13.123 UTC+01:00". */
export function fmtTime(unixUs, { offset = true, millis = true } = {}) {
  const d = new Date(unixUs / 1000);
  const date = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  let time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (millis) time += `.${pad(d.getMilliseconds(), 3)}`;
  return offset ? `${date} ${time} ${utcOffset(d)}` : `${date} ${time}`;
}

/** "3 min ago", for search rows. */
export function fmtAgo(unixUs, nowMs = Date.now()) {
  const s = Math.round((nowMs - unixUs / 1000) / 1000);
  if (s < 0) return 'in the future';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

// Service colours: a palette of distinct mid-tone colours (red is kept for errors), handed out
// in name order of the services the server knows (registered at start-up), so a service keeps
// its colour on every page; services seen later (uploaded files) take the next free colour.
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#b07aa1', '#76b7b2', '#edc948', '#9c755f', '#ff9da7', '#bab0ac', '#8cd17d', '#d37295', '#a0cbe8', '#f1ce63', '#499894', '#86bcb6', '#d4a6c8'];
const assigned = new Map();

export function registerServices(names) {
  for (const n of [...names].sort()) if (!assigned.has(n)) assigned.set(n, assigned.size);
}

export function serviceColor(name) {
  if (!assigned.has(name)) assigned.set(name, assigned.size);
  return PALETTE[assigned.get(name) % PALETTE.length];
}

/** [r, g, b] of a service's colour, for canvas pixel work. */
export function serviceRgb(name) {
  const hex = serviceColor(name);
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

export const KINDS = ['unspecified', 'internal', 'server', 'client', 'producer', 'consumer'];

export function fmtCount(n) {
  return n.toLocaleString('en-US');
}

/** `http.status_code=500 error=true` (Jaeger's logfmt) ⇄ {"http.status_code":"500",…}. */
export function parseLogfmt(text) {
  const out = {};
  const re = /([^\s=]+)=("((?:[^"\\]|\\.)*)"|\S*)/g;
  let m;
  while ((m = re.exec(text))) out[m[1]] = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[2];
  return out;
}
export const toLogfmt = (obj) => Object.entries(obj).map(([k, v]) => (/[\s"]/.test(v) ? `${k}="${String(v).replace(/"/g, '\\"')}"` : `${k}=${v}`)).join(' ');
