// Talking to skein's query port. Errors carry the server's message so views can show it.
import { fromCompact, detailFromOtlp } from './model.js';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function getJson(url) {
  let res;
  try {
    res = await fetch(url, { headers: { Accept: 'application/json' } });
  } catch (e) {
    throw new ApiError(0, `Cannot reach skein (${e.message}). Is the server running?`);
  }
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* a plain-text answer */
  }
  if (!res.ok) {
    const msg = body?.error?.message || body?.error || body?.errors?.[0]?.msg || text.trim() || res.statusText;
    throw new ApiError(res.status, `${res.status}: ${msg}`);
  }
  return body;
}

export const services = async () => (await getJson('/api/services')).data || [];

// The query-string form: in a path, a service named "." or ".." (even as %2E%2E) is a dot
// segment that the browser resolves away before sending.
export const operations = async (service) =>
  [...new Set(((await getJson(`/api/operations?${new URLSearchParams({ service })}`)).data || []).map((o) => o.name))];

/** Search rows from /api/ui/search; `params` are Jaeger's search parameters. */
export const search = async (params) => (await getJson(`/api/ui/search?${params}`)).traces;

// Traces loaded from files live here (by trace id) so /trace/{id} can show them.
export const localTraces = new Map();

export async function trace(id) {
  if (localTraces.has(id)) return localTraces.get(id);
  return fromCompact(await getJson(`/api/ui/traces/${encodeURIComponent(id)}`));
}

/** Fills `span.detail` for a server trace (its attributes, events, links, resource). */
export async function spanDetail(t, span) {
  if (span.detail) return span.detail;
  const d = await getJson(`/api/ui/traces/${t.traceId}/spans/${span.id}`);
  span.detail = detailFromOtlp(d.span, d.resource, d.scope, t.startUs);
  return span.detail;
}

export const dependencies = (lookbackMs, endTsMs) => getJson(`/api/ui/dependencies?lookback=${lookbackMs}${endTsMs ? `&endTs=${endTsMs}` : ''}`);

// Attribute autocomplete is optional: older servers lack the endpoints; then there are no hints.
let autocompleteMissing = false;
export async function attributeKeys(service) {
  if (autocompleteMissing) return [];
  try {
    const q = service ? `?service=${encodeURIComponent(service)}` : '';
    const body = await getJson(`/api/ui/attributes/keys${q}`);
    return body.keys || body.data || [];
  } catch (e) {
    if (e.status === 404) autocompleteMissing = true;
    return [];
  }
}

export async function attributeValues(key, service) {
  if (autocompleteMissing) return [];
  try {
    const q = new URLSearchParams({ key, limit: '50' });
    if (service) q.set('service', service);
    const body = await getJson(`/api/ui/attributes/values?${q}`);
    return body.values || body.data || [];
  } catch {
    return [];
  }
}
