// Formatting shared by every view: durations, local times with their UTC offset, service colours.

/** A duration given in microseconds, in the unit a person reads fastest. */
export function fmtDuration(us) {
  if (!Number.isFinite(us)) return '–';
  return `${us < 0 ? '-' : ''}${fmtAbsDuration(Math.abs(us))}`;
}

// Each unit rounds first at the precision it shows and hands a value that rounded up to the
// next unit over to that unit, so a carry is never shown as "1000µs", "60s" or "1m 60s".
const SMALL_UNITS = [[1e-3, 'ns', 1000], [1, 'µs', 1000], [1e3, 'ms', 1000], [1e6, 's', 60]];

function fmtAbsDuration(a) {
  for (const [scale, unit, next] of SMALL_UNITS) {
    const x = a / scale;
    const r = Number(x.toFixed(unit === 'ns' ? 0 : unit === 's' ? 2 : x < 10 ? 2 : x < 100 ? 1 : 0));
    if (r < next) return `${r}${unit}`;
  }
  const s = Math.round(a / 1e6);
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  const m = Math.round(a / 60e6);
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

/**
 * A name inside First Strong Isolate … Pop Directional Isolate, for text that cannot hold a
 * <bdi> (tooltips, canvas): a right-to-left override in a name must not reorder what follows.
 */
export const isolate = (name) => `\u2068${name}\u2069`;

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

/** {"http.status_code":"500",…} → `http.status_code=500 error=true` (Jaeger's logfmt; readLogfmt reads it back). */
export const toLogfmt = (obj) => Object.entries(obj).map(([k, v]) => `${logfmtPart(k, /[\s="]|^$/)}=${logfmtPart(String(v), /[\s"]/)}`).join(' ');
const logfmtPart = (s, needsQuotes) => (needsQuotes.test(s) ? `"${s.replace(/[\\"]/g, '\\$&')}"` : s);
const unquote = (s) => s.replace(/\\(.)/g, '$1');

/**
 * `http.status_code=500 error=true` → `{ tags: {…} }`. It must read whole: else `{ error }`
 * names the first piece that is not a key=value pair (a filter is never silently dropped).
 */
export function readLogfmt(text) {
  const re = /\s*(?:"(?<qk>(?:[^"\\]|\\.)*)"|(?<k>[^\s="][^\s=]*))=(?:"(?<qv>(?:[^"\\]|\\.)*)"(?=\s|$)|(?<v>(?!")\S*))\s*/y;
  const tags = {};
  let at = text.search(/\S|$/);
  while (at < text.length) {
    re.lastIndex = at;
    const m = re.exec(text);
    if (!m) return { error: `cannot read ${JSON.stringify(text.slice(at).split(/\s/)[0])}: attributes are key=value pairs separated by spaces (quote values with spaces: key="a b")` };
    const { qk, k, qv, v } = m.groups;
    tags[qk !== undefined ? unquote(qk) : k] = qv !== undefined ? unquote(qv) : v;
    at = re.lastIndex;
  }
  return { tags };
}

/**
 * The search URL's attribute filter as the form's text: Jaeger's `tags` (a JSON object of
 * strings; the form's key=value text is accepted too) and `tag=key:value` parameters.
 * `{ text }`, or `{ text, error }` with the parameter as given when it cannot be read.
 */
export function tagsFromParams(tagsParam, tagList = []) {
  const out = {};
  const raw = (tagsParam ?? '').trim();
  if (raw) {
    let json;
    try { json = JSON.parse(raw); } catch { /* not JSON: maybe key=value text */ }
    const scalar = (v) => ['string', 'number', 'boolean'].includes(typeof v);
    if (json !== undefined && !(json && typeof json === 'object' && !Array.isArray(json) && Object.values(json).every(scalar))) {
      return { text: raw, error: `parameter tags: ${JSON.stringify(raw)} is not a JSON object of key: value strings (like {"http.response.status_code":"500"})` };
    }
    const read = json !== undefined ? { tags: json } : readLogfmt(raw);
    if (read.error) return { text: raw, error: `parameter tags: ${read.error}` };
    for (const [k, v] of Object.entries(read.tags)) out[k] = String(v);
  }
  for (const t of tagList) {
    const i = t.indexOf(':');
    if (i <= 0) return { text: toLogfmt(out), error: `parameter tag: ${JSON.stringify(t)} is not key:value` };
    out[t.slice(0, i)] = t.slice(i + 1);
  }
  return { text: toLogfmt(out) };
}

/**
 * A search URL's `start`/`end` (unix µs) as ms for a Date, or null when it is not a whole
 * number a Date can hold (±8.64e15 ms): then the page reports the parameter, not a blank page.
 */
export function timeParamMs(text) {
  if (!/^\d{1,17}$/.test(String(text ?? '').trim())) return null;
  const ms = Number(text) / 1000;
  return Number.isFinite(new Date(ms).getTime()) ? ms : null;
}
