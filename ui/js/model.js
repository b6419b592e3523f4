// The UI's trace model and the pure logic on it (tree, critical path, statistics, diff, find,
// file parsing). No DOM here: tests/node/ui_unit.mjs runs these functions under node.
//
// A trace: { traceId, startUs (unix µs of the earliest span), duration (µs), services [names],
//   spans [{ id, parent (index, -1 root, -2 parent missing), start, duration, end (µs after
//   startUs), service, name, kind, error, events, links, attributes (find text or null),
//   detail (full span, or null until fetched) }] } — spans ordered by start.

/** From GET /api/ui/traces/{id} (parallel arrays). */
export function fromCompact(c) {
  const n = c.spanId.length;
  const spans = new Array(n);
  for (let i = 0; i < n; i++) {
    spans[i] = {
      id: c.spanId[i],
      parent: c.parent[i],
      start: c.start[i],
      duration: c.duration[i],
      end: c.start[i] + c.duration[i],
      service: c.services[c.service[i]],
      name: c.names[c.name[i]],
      kind: c.kind[i],
      error: c.error[i] === 1,
      events: c.events[i],
      links: c.links[i],
      attributes: c.attributes ? c.attributes[i] : null,
      detail: null,
    };
  }
  return finish({ traceId: c.traceId, startUs: c.startUs, spans, source: 'server' });
}

/** Fills duration/services and sorts out parents from span ids when they are not indices yet. */
function finish(t) {
  let end = 0;
  const services = new Set();
  for (const s of t.spans) {
    end = Math.max(end, s.end);
    services.add(s.service);
  }
  t.duration = end;
  t.services = [...services].sort();
  return t;
}

/** Builds a trace from spans with absolute µs times and parent span ids. */
function assemble(traceId, raw, source) {
  raw.sort((a, b) => a.startAbs - b.startAbs || (a.id < b.id ? -1 : 1));
  const startUs = raw.length ? raw[0].startAbs : 0;
  const index = new Map(raw.map((s, i) => [s.id, i]));
  const spans = raw.map((s) => {
    const start = s.startAbs - startUs;
    const p = s.parentId ? index.get(s.parentId) : undefined;
    return {
      id: s.id,
      parent: !s.parentId ? -1 : p === undefined ? -2 : p,
      start,
      duration: s.duration,
      end: start + s.duration,
      service: s.service,
      name: s.name,
      kind: s.kind,
      error: s.error,
      events: s.detail.events.length,
      links: s.detail.links.length,
      attributes: [...s.detail.attributes, ...s.detail.resource].map((a) => `${a.key}=${valueText(a.value)}\n`).join(''),
      detail: s.detail,
    };
  });
  return finish({ traceId, startUs, spans, source });
}

export function valueText(v) {
  if (v === null || v === undefined) return '';
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

// ---- OTLP JSON -------------------------------------------------------------------------

/** An OTLP JSON AnyValue as a plain JS value. */
export function otlpValue(v) {
  if (!v || typeof v !== 'object') return v ?? null;
  if ('stringValue' in v) return v.stringValue;
  if ('boolValue' in v) return v.boolValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return Number(v.doubleValue);
  if ('bytesValue' in v) return v.bytesValue;
  if ('arrayValue' in v) return (v.arrayValue.values || []).map(otlpValue);
  if ('kvlistValue' in v) return Object.fromEntries((v.kvlistValue.values || []).map((kv) => [kv.key, otlpValue(kv.value)]));
  return null;
}

const otlpAttrs = (list) => (list || []).map((kv) => ({ key: kv.key, value: otlpValue(kv.value) }));

/** base64 (OTLP/JSON from some SDKs) or hex ids, as lowercase hex. */
export function normalizeId(id, bytes) {
  if (!id) return '';
  if (new RegExp(`^[0-9a-fA-F]{1,${bytes * 2}}$`).test(id)) return id.toLowerCase().padStart(bytes * 2, '0');
  try {
    const bin = atob(id);
    if (bin.length === bytes) return [...bin].map((c) => c.charCodeAt(0).toString(16).padStart(2, '0')).join('');
  } catch {
    /* not base64 either: keep as is */
  }
  return id;
}

const STATUS = ['UNSET', 'OK', 'ERROR'];
const KIND_NAMES = { SPAN_KIND_UNSPECIFIED: 0, SPAN_KIND_INTERNAL: 1, SPAN_KIND_SERVER: 2, SPAN_KIND_CLIENT: 3, SPAN_KIND_PRODUCER: 4, SPAN_KIND_CONSUMER: 5 };
const count = (n) => Math.max(0, Number(n) || 0); // OTLP JSON leaves zero counts out
const nano = (s) => Number(BigInt(s ?? 0) / 1000n) + Number(BigInt(s ?? 0) % 1000n) / 1000;

/**
 * One OTLP JSON span (plus its resource `{attributes, droppedAttributesCount}` and scope) as the
 * detail shape the panel shows. `dropped` counts what the sender (or skein's limits) left out.
 */
export function detailFromOtlp(span, resource, scope, traceStartUs) {
  const resourceAttrs = resource?.attributes || [];
  const code = typeof span.status?.code === 'string' ? STATUS.indexOf(span.status.code.replace('STATUS_CODE_', '')) : span.status?.code ?? 0;
  const kind = typeof span.kind === 'string' ? KIND_NAMES[span.kind] ?? 0 : span.kind ?? 0;
  return {
    kind,
    status: { code: STATUS[code] || 'UNSET', message: span.status?.message || '' },
    attributes: otlpAttrs(span.attributes),
    resource: otlpAttrs(resourceAttrs),
    scope: { name: scope?.name || '', version: scope?.version || '' },
    events: (span.events || []).map((e) => ({ at: nano(e.timeUnixNano) - (traceStartUs ?? 0), name: e.name, attributes: otlpAttrs(e.attributes), dropped: count(e.droppedAttributesCount) })),
    links: (span.links || []).map((l) => ({ traceId: normalizeId(l.traceId, 16), spanId: normalizeId(l.spanId, 8), attributes: otlpAttrs(l.attributes), dropped: count(l.droppedAttributesCount) })),
    dropped: { attributes: count(span.droppedAttributesCount), events: count(span.droppedEventsCount), links: count(span.droppedLinksCount), resource: count(resource?.droppedAttributesCount) },
    traceState: span.traceState || '',
    raw: { span, resource: resource || { attributes: [] }, scope },
  };
}

/** `{resourceSpans:[…]}` (or api_v3's `{result:{resourceSpans}}`) → traces, one per trace id. */
export function fromOtlp(doc) {
  const root = doc.result || doc;
  const byTrace = new Map();
  for (const rs of root.resourceSpans || []) {
    const resAttrs = rs.resource?.attributes || [];
    const resource = { attributes: resAttrs, droppedAttributesCount: rs.resource?.droppedAttributesCount };
    const service = otlpValue(resAttrs.find((a) => a.key === 'service.name')?.value) || 'unknown_service';
    for (const ss of rs.scopeSpans || rs.instrumentationLibrarySpans || []) {
      for (const sp of ss.spans || []) {
        const traceId = normalizeId(sp.traceId, 16);
        const startAbs = nano(sp.startTimeUnixNano);
        const detail = detailFromOtlp(sp, resource, ss.scope || ss.instrumentationLibrary, 0);
        const list = byTrace.get(traceId) || [];
        list.push({
          id: normalizeId(sp.spanId, 8),
          parentId: sp.parentSpanId ? normalizeId(sp.parentSpanId, 8) : '',
          startAbs,
          duration: Math.max(0, nano(sp.endTimeUnixNano) - startAbs),
          service,
          name: sp.name || '',
          kind: detail.kind,
          error: detail.status.code === 'ERROR',
          detail,
        });
        byTrace.set(traceId, list);
      }
    }
  }
  return [...byTrace].map(([id, raw]) => rebaseEvents(assemble(id, raw, 'file')));
}

function rebaseEvents(t) {
  for (const s of t.spans) for (const e of s.detail.events) e.at -= t.startUs;
  return t;
}

// ---- Jaeger JSON -----------------------------------------------------------------------

const jaegerTags = (tags) => (tags || []).map((t) => ({ key: t.key, value: t.value }));

/** Jaeger's `{data:[trace…]}`, one trace, or an array of traces → traces. */
export function fromJaeger(doc) {
  const list = Array.isArray(doc) ? doc : Array.isArray(doc.data) ? doc.data : [doc];
  return list.map((jt) => {
    const processes = jt.processes || {};
    const raw = (jt.spans || []).map((sp) => {
      const proc = processes[sp.processID] || sp.process || { serviceName: 'unknown_service', tags: [] };
      const tags = jaegerTags(sp.tags);
      const tag = (k) => tags.find((t) => t.key === k)?.value;
      const parentRef = (sp.references || []).find((r) => r.refType === 'CHILD_OF' && r.traceID === jt.traceID) ||
        (sp.references || []).find((r) => r.refType === 'CHILD_OF');
      const links = (sp.references || []).filter((r) => r !== parentRef);
      const kindName = String(tag('span.kind') || '').toUpperCase();
      const kind = KIND_NAMES[`SPAN_KIND_${kindName}`] ?? 0;
      const error = tag('error') === true || tag('error') === 'true' || tag('otel.status_code') === 'ERROR';
      const hidden = new Set(['span.kind', 'otel.status_code', 'otel.status_description', 'error']);
      return {
        id: normalizeId(sp.spanID, 8),
        parentId: parentRef ? normalizeId(parentRef.spanID, 8) : sp.parentSpanID && sp.parentSpanID !== '0' ? normalizeId(sp.parentSpanID, 8) : '',
        startAbs: sp.startTime,
        duration: sp.duration,
        service: proc.serviceName,
        name: sp.operationName,
        kind,
        error,
        detail: {
          kind,
          status: { code: error ? 'ERROR' : tag('otel.status_code') || 'UNSET', message: tag('otel.status_description') || '' },
          attributes: tags.filter((t) => !hidden.has(t.key)),
          resource: [{ key: 'service.name', value: proc.serviceName }, ...jaegerTags(proc.tags)],
          scope: { name: tag('otel.scope.name') || '', version: tag('otel.scope.version') || '' },
          events: (sp.logs || []).map((l) => {
            const fields = jaegerTags(l.fields);
            return { at: l.timestamp, name: fields.find((f) => f.key === 'event')?.value || 'log', attributes: fields.filter((f) => f.key !== 'event') };
          }),
          links: links.map((r) => ({ traceId: normalizeId(r.traceID, 16), spanId: normalizeId(r.spanID, 8), attributes: [{ key: 'jaeger.ref_type', value: r.refType }] })),
          traceState: '',
          raw: sp,
        },
      };
    });
    const t = assemble(normalizeId(jt.traceID, 16), raw, 'file');
    for (const s of t.spans) for (const e of s.detail.events) e.at -= t.startUs;
    return t;
  });
}

/** Text of an uploaded file → traces, or an Error saying what the file is not. */
export function parseTraceFile(text) {
  let doc;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`The file is not JSON (${e.message}). Upload Jaeger JSON (as from /api/traces/{id}) or OTLP JSON ({"resourceSpans": …}).`);
  }
  const isOtlp = doc && (doc.resourceSpans || doc.result?.resourceSpans);
  const isJaeger = doc && (Array.isArray(doc.data) || doc.spans || (Array.isArray(doc) && doc[0]?.spans));
  const traces = isOtlp ? fromOtlp(doc) : isJaeger ? fromJaeger(doc) : null;
  if (!traces) {
    throw new Error('The file is JSON but neither Jaeger JSON ({"data": [{"traceID", "spans", "processes"}]}) nor OTLP JSON ({"resourceSpans": […]}).');
  }
  const nonEmpty = traces.filter((t) => t.spans.length > 0);
  if (!nonEmpty.length) throw new Error('The file holds no spans.');
  return nonEmpty;
}

// ---- tree ------------------------------------------------------------------------------

/**
 * Children lists (ordered by start), top-level spans (roots, then orphans whose parent is
 * missing), depth per span and the preorder. Iterative: a 100,000-deep chain must not
 * overflow the stack.
 */
export function buildTree(t) {
  const S = t.spans;
  const n = S.length;
  const children = new Array(n);
  for (let i = 0; i < n; i++) children[i] = [];
  const tops = [];
  for (let i = 0; i < n; i++) {
    const p = S[i].parent;
    if (p >= 0 && p !== i) children[p].push(i); // spans are ordered by start, so children are too
    else tops.push(i);
  }
  const rootsFirst = (a, b) => (S[a].parent === -1 ? 0 : 1) - (S[b].parent === -1 ? 0 : 1) || S[a].start - S[b].start;
  tops.sort(rootsFirst);
  const depth = new Int32Array(n);
  const seen = new Uint8Array(n);
  const order = [];
  const walk = (from) => {
    const stack = from.slice().reverse();
    while (stack.length) {
      const i = stack.pop();
      seen[i] = 1;
      order.push(i);
      const kids = children[i];
      for (let k = kids.length - 1; k >= 0; k--) {
        depth[kids[k]] = depth[i] + 1;
        stack.push(kids[k]);
      }
    }
  };
  walk(tops);
  // Spans in a parent cycle (bad data) are unreachable: cut each cycle and show it at the top.
  for (let i = 0; i < n; i++) {
    if (seen[i]) continue;
    const p = S[i].parent;
    children[p] = children[p].filter((c) => c !== i);
    S[i].parent = -2;
    tops.push(i);
    depth[i] = 0;
    walk([i]);
  }
  const descendants = new Int32Array(n);
  for (let k = order.length - 1; k >= 0; k--) {
    const p = S[order[k]].parent;
    if (p >= 0) descendants[p] += descendants[order[k]] + 1;
  }
  let maxDepth = 0;
  for (let i = 0; i < n; i++) maxDepth = Math.max(maxDepth, depth[i]);
  Object.assign(t, { children, tops, depth, descendants, order, maxDepth: n ? maxDepth + 1 : 0 });
  return t;
}

/** Preorder of the spans shown when `collapsed` (a Set of indices) are folded. */
export function visibleRows(t, collapsed) {
  if (!collapsed.size) return t.order;
  const out = [];
  const stack = [];
  for (let r = t.tops.length - 1; r >= 0; r--) stack.push(t.tops[r]);
  while (stack.length) {
    const i = stack.pop();
    out.push(i);
    if (collapsed.has(i)) continue;
    const kids = t.children[i];
    for (let k = kids.length - 1; k >= 0; k--) stack.push(kids[k]);
  }
  return out;
}

// ---- critical path ---------------------------------------------------------------------

/**
 * The critical path: the chain of work that determined the trace's end. Start at the top-level
 * span that ends last, with a cursor at its end; repeatedly take the child that finishes last
 * before the cursor (children clipped to the parent), walk into it, and move the cursor to that
 * child's start; the parent's own time between children is on the path. Returns segments
 * [{ span, start, end }] (µs, newest first) and `onPath`, a per-span flag.
 */
export function criticalPath(t) {
  const segments = [];
  const onPath = new Uint8Array(t.spans.length);
  if (!t.spans.length) return { segments, onPath };
  const S = t.spans;
  let top = t.tops[0];
  for (const i of t.tops) if (S[i].end > S[top].end) top = i;
  const byEndDesc = (i) => t.children[i].slice().sort((a, b) => S[b].end - S[a].end);
  const stack = [{ span: top, lo: S[top].start, hi: S[top].end, cursor: S[top].end, kids: byEndDesc(top), k: 0 }];
  while (stack.length) {
    const f = stack[stack.length - 1];
    onPath[f.span] = 1;
    let next = -1;
    while (f.k < f.kids.length) {
      const c = f.kids[f.k++];
      const cEnd = Math.min(S[c].end, f.hi);
      const cStart = Math.max(S[c].start, f.lo);
      if (cStart >= f.cursor || cEnd <= f.lo) continue; // outside the remaining window
      if (cEnd > f.cursor) continue; // overlaps the child already on the path
      next = c;
      break;
    }
    if (next < 0) {
      if (f.cursor > f.lo) segments.push({ span: f.span, start: f.lo, end: f.cursor });
      stack.pop();
      continue;
    }
    const cEnd = Math.min(S[next].end, f.hi);
    const cStart = Math.max(S[next].start, f.lo);
    if (cEnd < f.cursor) segments.push({ span: f.span, start: cEnd, end: f.cursor });
    f.cursor = cStart;
    stack.push({ span: next, lo: cStart, hi: cEnd, cursor: cEnd, kids: byEndDesc(next), k: 0 });
  }
  return { segments, onPath };
}

// ---- statistics ------------------------------------------------------------------------

/** Time a span spent not covered by any of its children (children clipped to it). */
export function selfTimes(t) {
  const S = t.spans;
  const self = new Float64Array(S.length);
  for (let i = 0; i < S.length; i++) {
    const kids = t.children[i];
    let covered = 0;
    let curStart = 0;
    let curEnd = -Infinity;
    for (const c of kids) { // ordered by start
      const a = Math.max(S[c].start, S[i].start);
      const b = Math.min(S[c].end, S[i].end);
      if (b <= a) continue;
      if (a > curEnd) {
        if (curEnd > curStart) covered += curEnd - curStart;
        curStart = a;
        curEnd = b;
      } else curEnd = Math.max(curEnd, b);
    }
    if (curEnd > curStart) covered += curEnd - curStart;
    self[i] = Math.max(0, S[i].duration - covered);
  }
  return self;
}

/** Per service and operation: count, errors, total, self, mean, max (µs). */
export function statistics(t) {
  const self = selfTimes(t);
  const groups = new Map();
  t.spans.forEach((s, i) => {
    const key = `${s.service}\u0000${s.name}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { service: s.service, name: s.name, count: 0, errors: 0, total: 0, self: 0, max: 0 }));
    g.count++;
    g.errors += s.error ? 1 : 0;
    g.total += s.duration;
    g.self += self[i];
    g.max = Math.max(g.max, s.duration);
  });
  const rows = [...groups.values()];
  for (const g of rows) g.mean = g.total / g.count;
  return rows.sort((a, b) => b.self - a.self);
}

// ---- diff ------------------------------------------------------------------------------

/**
 * Structural diff of two traces: spans are merged by their path of `service: operation`
 * names from the root, so repeated calls aggregate (count, total duration) and the tree is
 * comparable even when span ids differ. Returns the merged tree's rows in preorder:
 * [{ key, service, name, depth, a: {count, total}|null, b: …|null, delta (µs, b − a),
 * selfDelta (the part of delta not explained by the node's children: where time was added) }].
 */
export function diffTraces(ta, tb) {
  const root = { key: '', children: new Map(), a: null, b: null };
  const add = (t, side) => {
    if (!t.children) buildTree(t);
    const stack = t.tops.slice().reverse().map((i) => [i, root]);
    while (stack.length) {
      const [i, parentNode] = stack.pop();
      const s = t.spans[i];
      const key = `${s.service}: ${s.name}`;
      let node = parentNode.children.get(key);
      if (!node) parentNode.children.set(key, (node = { key, service: s.service, name: s.name, children: new Map(), a: null, b: null }));
      const agg = node[side] || (node[side] = { count: 0, total: 0, errors: 0 });
      agg.count++;
      agg.total += s.duration;
      agg.errors += s.error ? 1 : 0;
      const kids = t.children[i];
      for (let k = kids.length - 1; k >= 0; k--) stack.push([kids[k], node]);
    }
  };
  add(ta, 'a');
  add(tb, 'b');
  const rows = [];
  const stack = [...root.children.values()].reverse().map((n) => [n, 0]);
  while (stack.length) {
    const [n, depth] = stack.pop();
    const delta = (n.b?.total ?? 0) - (n.a?.total ?? 0);
    let childDelta = 0;
    for (const c of n.children.values()) childDelta += (c.b?.total ?? 0) - (c.a?.total ?? 0);
    rows.push({ key: n.key, service: n.service, name: n.name, depth, a: n.a, b: n.b, delta, selfDelta: delta - childDelta });
    const kids = [...n.children.values()];
    for (let k = kids.length - 1; k >= 0; k--) stack.push([kids[k], depth + 1]);
  }
  return rows;
}

// ---- find ------------------------------------------------------------------------------

/** Indices of spans whose name, service, span id or attribute text contains every word. */
export function findSpans(t, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return [];
  const out = [];
  t.spans.forEach((s, i) => {
    const hay = `${s.service}\n${s.name}\n${s.id}\n${s.attributes || ''}`.toLowerCase();
    if (words.every((w) => hay.includes(w))) out.push(i);
  });
  return out;
}

/** Ancestors of a span, nearest first. */
export function ancestors(t, i) {
  const out = [];
  const seen = new Set();
  for (let p = t.spans[i].parent; p >= 0 && !seen.has(p); p = t.spans[p].parent) {
    seen.add(p);
    out.push(p);
  }
  return out;
}
