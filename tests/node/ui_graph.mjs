// A synthetic dense service graph for the service-map test: 40 services in 6 tiers, 120 distinct
// call edges (mostly one or two tiers down, one in eight back up, so there are cycles), sent to skein over
// OTLP/HTTP as one two-span trace per edge (a client span in the caller, a server span in the
// callee), so the dependencies API reports exactly these edges. Deterministic (fixed seed).

export const DENSE_SERVICES = 40;
export const DENSE_EDGES = 120;

export function denseGraph() {
  let seed = 12345;
  // xorshift32: the low bits of a power-of-two LCG cycle too soon for `% n`
  const rand = (n) => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed % n; };
  const services = Array.from({ length: DENSE_SERVICES }, (_, k) => `dense-${String(k).padStart(2, '0')}`);
  const tier = (k) => Math.floor(k / 7); // 0..5
  const edges = new Map();
  while (edges.size < DENSE_EDGES) {
    const a = rand(DENSE_SERVICES);
    let b = rand(DENSE_SERVICES);
    const backEdge = edges.size % 8 === 7;
    if (backEdge && tier(b) >= tier(a)) continue; // back edges go up a tier or more
    if (!backEdge) {
      // calls go one or two tiers down
      const t = tier(a) + 1 + rand(2);
      if (t * 7 >= DENSE_SERVICES) continue;
      b = Math.min(DENSE_SERVICES - 1, t * 7 + rand(7));
    }
    if (a === b) continue;
    const key = `${services[a]}->${services[b]}`;
    if (!edges.has(key)) edges.set(key, { parent: services[a], child: services[b], calls: 1 + rand(5), errors: edges.size % 9 === 4 });
  }
  // every service appears in some edge, so it is on the map
  const seen = new Set([...edges.values()].flatMap((e) => [e.parent, e.child]));
  return { services: services.filter((s) => seen.has(s)), edges: [...edges.values()] };
}

const hex = (n, width) => n.toString(16).padStart(width, '0');

/** OTLP JSON requests for the graph: `calls` traces per edge, starting at `t0Ns` (a BigInt). */
export function denseOtlp(graph, t0Ns) {
  const byService = new Map();
  const add = (svc, span) => { if (!byService.has(svc)) byService.set(svc, []); byService.get(svc).push(span); };
  let n = 0;
  for (const e of graph.edges) {
    for (let c = 0; c < e.calls; c++, n++) {
      const traceId = `d0${hex(n, 30)}`;
      const start = t0Ns + BigInt(n) * 1_000_000n;
      const ns = (x) => (start + BigInt(x) * 1_000_000n).toString();
      add(e.parent, { traceId, spanId: hex(2 * n + 1, 16), name: `call ${e.child}`, kind: 3, startTimeUnixNano: ns(0), endTimeUnixNano: ns(20), status: {} });
      add(e.child, {
        traceId, spanId: hex(2 * n + 2, 16), parentSpanId: hex(2 * n + 1, 16), name: 'handle', kind: 2, startTimeUnixNano: ns(2), endTimeUnixNano: ns(18),
        status: e.errors && c === 0 ? { code: 2, message: 'synthetic failure' } : {},
      });
    }
  }
  return {
    resourceSpans: [...byService].map(([svc, spans]) => ({
      resource: { attributes: [{ key: 'service.name', value: { stringValue: svc } }] },
      scopeSpans: [{ scope: { name: 'dense-graph' }, spans }],
    })),
  };
}
