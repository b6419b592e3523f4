// Unit tests of the UI's pure logic (ui/js/model.js, ui/js/format.js, ui/js/graph.js) under node's test runner.
// Run: node tests/node/ui_unit.mjs  (crates/skein/tests/ui.rs runs it too).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTree, visibleRows, criticalPath, selfTimes, statistics, diffTraces, findSpans, parseTraceFile, fromCompact, ancestors } from '../../ui/js/model.js';
import { fmtDuration, toLogfmt, readLogfmt, tagsFromParams, timeParamMs, utcOffset, fmtTime } from '../../ui/js/format.js';
import { layoutGraph } from '../../ui/js/graph.js';
import { denseGraph } from './ui_graph.mjs';

/** A trace from [id, parentIndex, start, end, service?, name?] rows (µs). */
function trace(rows) {
  const spans = rows.map(([id, parent, start, end, service = 'svc', name = id, error = false]) => ({
    id, parent, start, end, duration: end - start, service, name, error, kind: 2, events: 0, links: 0, attributes: `k=${id}\n`, detail: null,
  }));
  const t = { traceId: 't', startUs: 0, spans, duration: Math.max(...spans.map((s) => s.end)) };
  return buildTree(t);
}

test('tree: children by start, depth, preorder, descendants', () => {
  const t = trace([['a', -1, 0, 100], ['b', 0, 10, 50], ['c', 1, 20, 30], ['d', 0, 60, 90], ['o', -2, 5, 8]]);
  assert.deepEqual(t.order, [0, 1, 2, 3, 4]);
  assert.deepEqual([...t.depth], [0, 1, 2, 1, 0]);
  assert.deepEqual(t.tops, [0, 4], 'roots first, then orphans');
  assert.equal(t.descendants[0], 3);
  assert.equal(t.maxDepth, 3);
  assert.deepEqual(visibleRows(t, new Set([1])), [0, 1, 3, 4]);
  assert.deepEqual(ancestors(t, 2), [1, 0]);
});

test('tree: a parent cycle is cut, not looped on', () => {
  const t = trace([['a', 1, 0, 10], ['b', 0, 1, 9]]);
  assert.equal(t.order.length, 2);
  assert.equal(visibleRows(t, new Set()).length, 2);
});

test('tree: a 100,000-deep chain does not overflow the stack', () => {
  const rows = Array.from({ length: 100000 }, (_, i) => [`s${i}`, i - 1, i, 200000 - i]);
  const t = trace(rows);
  assert.equal(t.maxDepth, 100000);
  const cp = criticalPath(t);
  assert.equal(cp.onPath.reduce((a, b) => a + b, 0), 100000);
});

test('critical path: last-finishing child before the cursor, parent gaps included', () => {
  // root 0..100; A 10..40; B 30..80 (overlaps A); C 85..95
  const t = trace([['root', -1, 0, 100], ['A', 0, 10, 40], ['B', 0, 30, 80], ['C', 0, 85, 95]]);
  const { segments, onPath } = criticalPath(t);
  // C ends last → on path; then cursor 85 → B (ends 80) → cursor 30 → A ends 40 > 30: skipped.
  assert.deepEqual([...onPath], [1, 0, 1, 1]);
  const bySpan = (i) => segments.filter((s) => s.span === i).map((s) => [s.start, s.end]);
  assert.deepEqual(bySpan(3), [[85, 95]]);
  assert.deepEqual(bySpan(2), [[30, 80]]);
  assert.deepEqual(bySpan(0).sort((a, b) => a[0] - b[0]), [[0, 30], [80, 85], [95, 100]]);
  const total = segments.reduce((n, s) => n + s.end - s.start, 0);
  assert.equal(total, 100, 'the path covers the root exactly once');
});

test('critical path: children outliving the parent are clipped', () => {
  const t = trace([['root', -1, 0, 50], ['late', 0, 40, 70]]);
  const { segments } = criticalPath(t);
  assert.deepEqual(segments.find((s) => s.span === 1), { span: 1, start: 40, end: 50 });
});

test('self time subtracts the union of children', () => {
  const t = trace([['root', -1, 0, 100], ['a', 0, 10, 40], ['b', 0, 30, 60], ['c', 0, 90, 120]]);
  assert.deepEqual([...selfTimes(t)], [100 - 50 - 10, 30, 30, 30]);
  const stats = statistics(t);
  assert.equal(stats.find((r) => r.name === 'root').self, 40);
});

test('diff merges by service/operation path and reports B − A', () => {
  const a = trace([['r', -1, 0, 100, 'fe', 'GET'], ['p', 0, 10, 60, 'pay', 'Charge'], ['q', 0, 60, 90, 'db', 'Q']]);
  const b = trace([['r', -1, 0, 300, 'fe', 'GET'], ['p', 0, 10, 260, 'pay', 'Charge'], ['p2', 0, 260, 280, 'pay', 'Charge'], ['n', 0, 280, 290, 'mail', 'Send']]);
  const rows = diffTraces(a, b);
  const row = (k) => rows.find((r) => r.key === k);
  assert.equal(row('fe: GET').delta, 200);
  assert.deepEqual(row('pay: Charge').b, { count: 2, total: 270, errors: 0 });
  assert.equal(row('pay: Charge').delta, 220);
  assert.equal(row('db: Q').b, null);
  assert.equal(row('mail: Send').a, null);
  assert.equal(row('pay: Charge').depth, 1);
  assert.equal(row('fe: GET').selfDelta, 0, 'the root grew by exactly its children: +220 −30 +10');
  assert.equal(row('pay: Charge').selfDelta, 220);
});

test('find matches every word in name, service, id or attributes', () => {
  const t = trace([['aa', -1, 0, 10, 'front', 'GET /x'], ['bb', 0, 1, 5, 'pay', 'Charge']]);
  assert.deepEqual(findSpans(t, 'charge'), [1]);
  assert.deepEqual(findSpans(t, 'k=aa'), [0]);
  assert.deepEqual(findSpans(t, 'pay charge'), [1]);
  assert.deepEqual(findSpans(t, 'pay get'), []);
});

test('OTLP JSON files: base64 or hex ids, typed values, events relative to the trace', () => {
  const doc = { resourceSpans: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'api' } }] }, scopeSpans: [{ scope: { name: 'lib' }, spans: [
    { traceId: 'AAECAwQFBgcICQoLDA0ODw==', spanId: 'AQIDBAUGBwg=', name: 'root', kind: 'SPAN_KIND_SERVER', startTimeUnixNano: '1700000000000000000', endTimeUnixNano: '1700000000002000000',
      attributes: [{ key: 'n', value: { intValue: '7' } }], status: { code: 'STATUS_CODE_ERROR', message: 'bad' }, events: [{ timeUnixNano: '1700000000001000000', name: 'ev' }] },
    { traceId: '000102030405060708090a0b0c0d0e0f', spanId: '1111111111111111', parentSpanId: '0102030405060708', name: 'child', startTimeUnixNano: '1700000000000500000', endTimeUnixNano: '1700000000001500000' },
  ] }] }] };
  const [t] = parseTraceFile(JSON.stringify(doc));
  assert.equal(t.traceId, '000102030405060708090a0b0c0d0e0f');
  assert.equal(t.spans.length, 2);
  assert.equal(t.spans[1].parent, 0);
  assert.equal(t.spans[0].error, true);
  assert.equal(t.spans[0].detail.attributes[0].value, 7);
  assert.equal(t.spans[0].detail.kind, 2);
  assert.equal(t.spans[0].detail.events[0].at, 1000);
  assert.equal(t.duration, 2000);
});

test('Jaeger JSON files: CHILD_OF parent, other references become links, logs become events', () => {
  const doc = { data: [{ traceID: 'abc', processes: { p1: { serviceName: 'web', tags: [{ key: 'host', type: 'string', value: 'h1' }] } }, spans: [
    { traceID: 'abc', spanID: '1', operationName: 'root', references: [], startTime: 1000, duration: 500, processID: 'p1', tags: [{ key: 'span.kind', value: 'server' }, { key: 'error', value: true }], logs: [{ timestamp: 1100, fields: [{ key: 'event', value: 'retry' }] }] },
    { traceID: 'abc', spanID: '2', operationName: 'kid', references: [{ refType: 'CHILD_OF', traceID: 'abc', spanID: '1' }, { refType: 'FOLLOWS_FROM', traceID: 'def', spanID: '9' }], startTime: 1200, duration: 100, processID: 'p1', tags: [] },
  ] }] };
  const [t] = parseTraceFile(JSON.stringify(doc));
  assert.equal(t.traceId, '00000000000000000000000000000abc');
  assert.equal(t.spans[1].parent, 0);
  assert.equal(t.spans[0].error, true);
  assert.equal(t.spans[0].detail.events[0].name, 'retry');
  assert.equal(t.spans[0].detail.events[0].at, 100);
  assert.equal(t.spans[1].detail.links[0].spanId, '0000000000000009');
  assert.equal(t.spans[0].detail.resource.find((a) => a.key === 'host').value, 'h1');
});

test('files that are not traces get an error that says what was expected', () => {
  assert.throws(() => parseTraceFile('nope'), /not JSON/);
  assert.throws(() => parseTraceFile('{"foo": 1}'), /neither Jaeger JSON .* nor OTLP JSON/);
  assert.throws(() => parseTraceFile('{"resourceSpans": []}'), /no spans/);
});

test('compact server format', () => {
  const t = buildTree(fromCompact({ traceId: 'x', startUs: 5, services: ['a', 'b'], names: ['r', 'c'], spanId: ['01', '02'], parent: [-1, 0], start: [0, 1.5], duration: [10, 2], service: [0, 1], name: [0, 1], kind: [2, 3], error: [0, 1], events: [0, 2], links: [0, 0], attributes: null }));
  assert.equal(t.spans[1].service, 'b');
  assert.equal(t.spans[1].end, 3.5);
  assert.equal(t.spans[1].error, true);
  assert.deepEqual(t.services, ['a', 'b']);
});

test('formatting: durations, logfmt, UTC offsets', () => {
  assert.equal(fmtDuration(0.5), '500ns');
  assert.equal(fmtDuration(12.345), '12.3µs');
  assert.equal(fmtDuration(1500), '1.5ms');
  assert.equal(fmtDuration(250000), '250ms');
  assert.equal(fmtDuration(1830000), '1.83s');
  assert.equal(fmtDuration(125e6), '2m 5s');
  assert.equal(fmtDuration(-2000), '-2ms');
  assert.deepEqual(readLogfmt('a=1 b="x y" error=true').tags, { a: '1', b: 'x y', error: 'true' });
  assert.equal(toLogfmt({ a: '1', b: 'x y' }), 'a=1 b="x y"');
  assert.match(utcOffset(new Date()), /^UTC[+-]\d\d:\d\d$/);
  assert.match(fmtTime(1_700_000_000_000_000), /^2023-11-1\d \d\d:\d\d:\d\d\.000 UTC[+-]\d\d:\d\d$/);
});

test('durations: a value that rounds up carries into the next unit', () => {
  const cases = [
    [0, '0ns'], [0.9996, '1µs'], [9.9996, '10µs'], [99.96, '100µs'], [999.6, '1ms'], [999.9996, '1ms'],
    [9999.6, '10ms'], [999999.6, '1s'], [59.994e6, '59.99s'], [59.9995e6, '1m 0s'], [60e6, '1m 0s'],
    [119.4e6, '1m 59s'], [119.7e6, '2m 0s'], [3599.4e6, '59m 59s'], [3599.6e6, '1h 0m'],
    [7199.99e6, '2h 0m'], [365 * 86400e6, '8760h 0m'], [365 * 86400e6 - 1e6, '8760h 0m'], [-119.7e6, '-2m 0s'],
  ];
  for (const [us, want] of cases) assert.equal(fmtDuration(us), want, `${us}µs`);
});

test('search links: tags as JSON or key=value text, or an error that keeps them', () => {
  assert.deepEqual(tagsFromParams('{"http.response.status_code":"500","retry":false}'), { text: 'http.response.status_code=500 retry=false' });
  assert.deepEqual(tagsFromParams('k0<img=1'), { text: 'k0<img=1' }, 'the form\'s key=value text');
  assert.deepEqual(tagsFromParams('a=1 b="x y"', ['c:d']), { text: 'a=1 b="x y" c=d' });
  assert.deepEqual(tagsFromParams(null), { text: '' });
  for (const bad of ['[1,2]', '123', 'null', '{"a":{"b":1}}', 'a=1 junk', '{"a":']) {
    const r = tagsFromParams(bad);
    assert.match(r.error ?? '', /^parameter tags: /, bad);
    assert.equal(r.text, bad, 'the field shows the parameter as given');
  }
  assert.match(tagsFromParams('', ['nocolon']).error, /^parameter tag: /);
  assert.deepEqual(readLogfmt(' a=1  b="x \\"y\\"" c= '), { tags: { a: '1', b: 'x "y"', c: '' } });
  assert.match(readLogfmt('a="x y').error, /cannot read/);
  const odd = { q: 'say "hi" \\ bye', p: 'a\\"b', e: '', 'key with spaces': '1', 'x=y': '2', '"q"': '3' };
  assert.deepEqual(readLogfmt(toLogfmt(odd)).tags, odd, 'toLogfmt reads back');
  assert.match(readLogfmt('a=1 [1,2]').error, /cannot read "\[1,2\]"/);
});

test('search links: start/end must be unix µs a Date can hold', () => {
  assert.equal(timeParamMs('1700000000000000'), 1700000000000);
  assert.equal(timeParamMs('0'), 0);
  for (const bad of ['garbage', '99999999999999999999', '-5', '1e15', '', null, undefined]) assert.equal(timeParamMs(bad), null, String(bad));
});

test('OTLP JSON: dropped attribute, event and link counts reach the detail', () => {
  const doc = { resourceSpans: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 's' } }], droppedAttributesCount: 5 }, scopeSpans: [{ spans: [
    { traceId: '01', spanId: '02', name: 'n', startTimeUnixNano: '1000', endTimeUnixNano: '2000', droppedAttributesCount: 172, droppedEventsCount: 3, droppedLinksCount: 2,
      events: [{ timeUnixNano: '1500', name: 'e', droppedAttributesCount: 4 }], links: [{ traceId: '03', spanId: '04', droppedAttributesCount: 1 }] },
    { traceId: '01', spanId: '05', parentSpanId: '02', name: 'm', startTimeUnixNano: '1100', endTimeUnixNano: '1200' },
  ] }] }] };
  const [t] = parseTraceFile(JSON.stringify(doc));
  const [a, b] = t.spans.map((s) => s.detail);
  assert.deepEqual(a.dropped, { attributes: 172, events: 3, links: 2, resource: 5 });
  assert.equal(a.events[0].dropped, 4);
  assert.equal(a.links[0].dropped, 1);
  assert.deepEqual(b.dropped, { attributes: 0, events: 0, links: 0, resource: 5 }, 'absent counts are zero');
});

const edge = (parent, child, callCount = 1) => ({ parent, child, callCount });
const column = (layout, s) => layout.nodes.get(s).layer;

test('service map layout: columns by call depth, a cycle becomes one back edge', () => {
  const edges = [edge('web', 'api'), edge('api', 'db'), edge('api', 'cache'), edge('db', 'api'), edge('web', 'db'), edge('api', 'api')];
  const l = layoutGraph(['web', 'api', 'db', 'cache'], edges);
  assert.deepEqual(['web', 'api', 'db', 'cache'].map((s) => column(l, s)), [0, 1, 2, 2]);
  assert.deepEqual(l.edges.filter((e) => e.back).map((e) => `${e.edge.parent}->${e.edge.child}`), ['db->api']);
  assert.equal(l.edges.filter((e) => e.self).length, 1);
  assert.equal(l.edges.length, edges.length, 'every edge is routed');
  // web→db skips a column: it is routed around api's column through a dummy run (2 extra points)
  assert.equal(l.edges.find((e) => e.edge.parent === 'web' && e.edge.child === 'db').points.length, 4);
  // the back edge leaves db on its left and enters api on its right
  const back = l.edges.find((e) => e.back).points;
  assert.ok(back[0][0] > back[back.length - 1][0]);
});

test('service map layout: barycentre ordering removes avoidable crossings', () => {
  // a1→b2, a2→b1 drawn in name order would cross; the sweeps swap one column
  const l = layoutGraph(['a1', 'a2', 'b1', 'b2'], [edge('a1', 'b2'), edge('a2', 'b1')]);
  assert.equal(l.crossings, 0);
});

test('service map layout: a dense graph with cycles (40 services, 120 edges) has no overlapping boxes', () => {
  const g = denseGraph();
  assert.equal(g.services.length, 40);
  assert.equal(g.edges.length, 120);
  const l = layoutGraph(g.services, g.edges);
  assert.equal(l.nodes.size, 40);
  const boxes = [...l.nodes.values()];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i], b = boxes[j];
      assert.ok(Math.abs(a.x - b.x) >= 180 || Math.abs(a.y - b.y) >= 56, 'boxes do not overlap');
    }
    assert.ok(boxes[i].x >= 0 && boxes[i].y >= 0 && boxes[i].x + 180 <= l.width && boxes[i].y + 56 <= l.height, 'inside the drawing');
  }
  for (const e of l.edges.filter((x) => !x.self)) {
    const [a, b] = [l.nodes.get(e.edge.parent), l.nodes.get(e.edge.child)];
    assert.ok(e.back ? a.layer > b.layer : a.layer < b.layer, 'forward edges go right, back edges left');
  }
  assert.ok(l.edges.some((e) => e.back), 'the cycles are broken somewhere');
});
