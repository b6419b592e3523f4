// Layered ("Sugiyama") layout for the service map, pure so node can test it:
//   1. break cycles: order the services by call depth from the entry points (breadth-first), ties
//      by a greedy order with few backward edges (Eades–Lin–Smyth); edges pointing backwards in
//      that order are back edges, laid out reversed and drawn dashed;
//   2. layers by longest path: a service sits one column right of its furthest caller;
//   3. edges longer than one column get a dummy point per column they cross, so they route
//      between boxes instead of through them;
//   4. order within columns by barycentre sweeps (left→right, right→left), keeping the order with
//      the fewest crossings;
//   5. y positions: each column stacked in order and centred, then pulled (two passes) towards
//      its neighbours' mean without reordering or overlapping; edges passing a column pack tight.
// Columns run left to right because boxes are wider than tall and names read left to right.

/**
 * services: names; edges: [{ parent, child, ... }]. Returns { nodes: Map(name → { x, y, layer }),
 * edges: [{ edge, back, self, points: [[x, y], …] }] (points from the caller's side to the
 * callee's), width, height, crossings }. Sizes in px: box `nodeW`×`nodeH`.
 */
const PULL_PASSES = 2; // more passes straighten edges but let the drawing grow tall

export function layoutGraph(services, edges, { nodeW = 180, nodeH = 56, gapX = 110, gapY = 22, dummyH = 2, dummyGap = 5, pad = 24 } = {}) {
  const names = [...new Set(services)].sort();
  const index = new Map(names.map((s, k) => [s, k]));
  const out = names.map(() => []);
  const inn = names.map(() => []);
  const real = [];
  for (const e of edges) {
    const a = index.get(e.parent), b = index.get(e.child);
    if (a === undefined || b === undefined) continue;
    real.push({ edge: e, a, b, self: a === b });
    if (a !== b) { out[a].push(b); inn[b].push(a); }
  }

  // 1. cycles (Eades–Lin–Smyth): peel off sinks to the end and sources to the front; when
  // neither is left, the service with most more calls out than in goes to the front. Edges that
  // point backwards in that order are the back edges: few, and they are the "returning" calls.
  const alive = new Set(names.keys());
  const outLeft = out.map((l) => l.length), inLeft = inn.map((l) => l.length);
  const front = [], back = [];
  const drop = (v) => {
    alive.delete(v);
    for (const w of out[v]) inLeft[w]--;
    for (const u of inn[v]) outLeft[u]--;
  };
  while (alive.size) {
    let changed = true;
    while (changed) {
      changed = false;
      for (const v of [...alive]) {
        if (outLeft[v] === 0) { back.push(v); drop(v); changed = true; }
        else if (inLeft[v] === 0) { front.push(v); drop(v); changed = true; }
      }
    }
    if (!alive.size) break;
    let pick = -1;
    for (const v of alive) if (pick < 0 || outLeft[v] - inLeft[v] > outLeft[pick] - inLeft[pick]) pick = v;
    front.push(pick);
    drop(pick);
  }
  const els = new Int32Array(names.length);
  [...front, ...back.reverse()].forEach((v, k) => (els[v] = k));
  // Call depth first: breadth-first from the services nobody calls (then from the first
  // unreached one in that order), so an edge back to a shallower service is a back edge and the
  // columns stay as few as the call depth; within one depth the greedy order decides.
  const depth = new Int32Array(names.length).fill(-1);
  const byEls = names.map((_, k) => k).sort((p, q) => els[p] - els[q]);
  let reach = byEls.filter((v) => inn[v].length === 0);
  for (;;) {
    for (const v of reach) if (depth[v] < 0) depth[v] = 0;
    for (let q = 0; q < reach.length; q++) {
      for (const w of out[reach[q]]) if (depth[w] < 0) { depth[w] = depth[reach[q]] + 1; reach.push(w); }
    }
    const next = byEls.find((v) => depth[v] < 0);
    if (next === undefined) break;
    reach = [next];
  }
  const before = (p, q) => depth[p] < depth[q] || (depth[p] === depth[q] && els[p] < els[q]);
  const backSet = new Set();
  for (const r of real) if (!r.self && before(r.b, r.a)) backSet.add(`${r.a}>${r.b}`);
  // the acyclic graph used for layout: back edges reversed (each edge keeps its own route, so
  // a→b and a reversed b→a do not share one)
  const dagOut = names.map(() => []);
  for (const r of real) {
    if (r.self) continue;
    r.back = backSet.has(`${r.a}>${r.b}`);
    [r.from, r.to] = r.back ? [r.b, r.a] : [r.a, r.b];
    dagOut[r.from].push(r);
  }

  // 2. longest-path layers (Kahn's order over the DAG)
  const indeg = new Int32Array(names.length);
  for (const list of dagOut) for (const r of list) indeg[r.to]++;
  const layer = new Int32Array(names.length);
  const queue = names.map((_, k) => k).filter((k) => indeg[k] === 0);
  for (let q = 0; q < queue.length; q++) {
    const v = queue[q];
    for (const { to: w } of dagOut[v]) {
      layer[w] = Math.max(layer[w], layer[v] + 1);
      if (--indeg[w] === 0) queue.push(w);
    }
  }
  const layerCount = Math.max(0, ...layer) + 1;

  // 3. dummy points for long edges: vertices 0..n-1 are services, then dummies
  const vLayer = [...layer];
  const succ = names.map(() => []);
  const pred = names.map(() => []);
  for (let v = 0; v < names.length; v++) {
    for (const r of dagOut[v]) {
      const w = r.to;
      const chain = [v];
      let prev = v;
      for (let l = layer[v] + 1; l < layer[w]; l++) {
        const d = vLayer.length;
        vLayer.push(l);
        succ.push([]);
        pred.push([]);
        succ[prev].push(d);
        pred[d].push(prev);
        chain.push(d);
        prev = d;
      }
      succ[prev].push(w);
      pred[w].push(prev);
      chain.push(w);
      r.chain = chain; // [from, dummies…, to]
    }
  }
  const isDummy = (v) => v >= names.length;

  // 4. ordering: start in DFS order from the first column, then barycentre sweeps
  let order = Array.from({ length: layerCount }, () => []);
  const placed = new Uint8Array(vLayer.length);
  const visit = (v0) => {
    const stack = [v0];
    while (stack.length) {
      const v = stack.pop();
      if (placed[v]) continue;
      placed[v] = 1;
      order[vLayer[v]].push(v);
      for (let k = succ[v].length - 1; k >= 0; k--) stack.push(succ[v][k]);
    }
  };
  for (let v = 0; v < names.length; v++) if (vLayer[v] === 0) visit(v);
  for (let v = 0; v < vLayer.length; v++) visit(v);
  const posOf = new Float64Array(vLayer.length);
  const setPositions = (ord) => ord.forEach((col) => col.forEach((v, k) => (posOf[v] = k)));
  const crossings = (ord) => {
    setPositions(ord);
    let n = 0;
    for (let l = 0; l + 1 < ord.length; l++) {
      const pairs = [];
      for (const v of ord[l]) for (const w of succ[v]) pairs.push([posOf[v], posOf[w]]);
      pairs.sort((p, q) => p[0] - q[0] || p[1] - q[1]);
      // count inversions of the second coordinate (quadratic is fine: columns are small)
      for (let i = 0; i < pairs.length; i++) for (let j = i + 1; j < pairs.length; j++) if (pairs[j][1] < pairs[i][1] && pairs[j][0] > pairs[i][0]) n++;
    }
    return n;
  };
  let best = order.map((c) => [...c]);
  let bestCross = crossings(best);
  for (let iter = 0; iter < 12 && bestCross > 0; iter++) {
    const down = iter % 2 === 0;
    setPositions(order);
    const ls = down ? [...Array(layerCount).keys()].slice(1) : [...Array(layerCount).keys()].reverse().slice(1);
    for (const l of ls) {
      const col = order[l];
      const bary = new Map();
      for (const v of col) {
        const nb = down ? pred[v] : succ[v];
        bary.set(v, nb.length ? nb.reduce((s, w) => s + posOf[w], 0) / nb.length : posOf[v]);
      }
      col.sort((x, y) => bary.get(x) - bary.get(y) || posOf[x] - posOf[y]);
      col.forEach((v, k) => (posOf[v] = k));
    }
    const c = crossings(order);
    if (c < bestCross) { bestCross = c; best = order.map((col) => [...col]); }
  }
  order = best;

  // 5. coordinates: x by column; y stacked in order, then pulled towards neighbours
  const height = (v) => (isDummy(v) ? dummyH : nodeH);
  // edges passing a column pack tightly; boxes keep their distance
  const gap = (v, w) => (isDummy(v) && isDummy(w) ? dummyGap : gapY);
  const y = new Float64Array(vLayer.length);
  // each column stacked in order and centred on the same line
  for (const col of order) {
    let at = 0;
    col.forEach((v, k) => { y[v] = at; at += height(v) + (k + 1 < col.length ? gap(v, col[k + 1]) : 0); });
    for (const v of col) y[v] -= at / 2;
  }
  for (let pass = 0; pass < PULL_PASSES; pass++) {
    const ls = pass % 2 === 0 ? [...Array(layerCount).keys()] : [...Array(layerCount).keys()].reverse();
    for (const l of ls) {
      const col = order[l];
      // wanted centre: mean of neighbours' centres
      const want = col.map((v) => {
        const nb = [...pred[v], ...succ[v]];
        return nb.length ? nb.reduce((s, w) => s + y[w] + height(w) / 2, 0) / nb.length - height(v) / 2 : y[v];
      });
      // place in order, each as close to its wish as the one above allows…
      for (let k = 0; k < col.length; k++) {
        const min = k ? y[col[k - 1]] + height(col[k - 1]) + gap(col[k - 1], col[k]) : -Infinity;
        y[col[k]] = Math.max(min, want[k]);
      }
      // …then push back up where the bottom ones were shoved too far down
      for (let k = col.length - 2; k >= 0; k--) {
        const max = y[col[k + 1]] - height(col[k]) - gap(col[k], col[k + 1]);
        if (y[col[k]] > max) y[col[k]] = max;
      }
    }
  }
  const minY = Math.min(...y);
  const x = (v) => pad + vLayer[v] * (nodeW + gapX);
  const top = (v) => pad + y[v] - minY;
  const nodes = new Map();
  for (let v = 0; v < names.length; v++) nodes.set(names[v], { x: x(v), y: top(v), layer: vLayer[v], order: order[vLayer[v]].indexOf(v) });
  let maxBottom = 0;
  for (let v = 0; v < vLayer.length; v++) maxBottom = Math.max(maxBottom, top(v) + height(v));

  const routed = real.map((r) => {
    if (r.self) {
      const n = nodes.get(names[r.a]);
      return { edge: r.edge, self: true, back: false, points: [[n.x + nodeW - 30, n.y], [n.x + nodeW - 30, n.y - 16], [n.x + nodeW - 10, n.y - 16], [n.x + nodeW - 10, n.y]] };
    }
    const chain = r.back ? [...r.chain].reverse() : r.chain;
    // a dummy is a straight run across its column, between the boxes
    const points = chain.flatMap((v, k) => {
      const cy = top(v) + height(v) / 2;
      if (!isDummy(v)) return [[x(v) + ((k === 0) !== r.back ? nodeW : 0), cy]];
      return r.back ? [[x(v) + nodeW, cy], [x(v), cy]] : [[x(v), cy], [x(v) + nodeW, cy]];
    });
    return { edge: r.edge, self: false, back: r.back, points, ends: [chain[0], chain[chain.length - 1]] };
  });
  // ports: the edges meeting one side of a box spread over its height, in the order of where
  // they come from, so they neither overlap nor cross at the box
  const sides = new Map();
  for (const e of routed) {
    if (e.self) continue;
    const n = e.points.length;
    for (const [end, at, toward] of [[e.ends[0], 0, 1], [e.ends[1], n - 1, n - 2]]) {
      const key = `${end}:${e.points[at][0]}`;
      if (!sides.has(key)) sides.set(key, []);
      sides.get(key).push({ point: e.points[at], from: e.points[toward][1], back: e.back });
    }
  }
  for (const [key, list] of sides) {
    const v = Number(key.split(':')[0]);
    list.sort((p, q) => p.from - q.from || p.back - q.back);
    list.forEach((p, k) => (p.point[1] = top(v) + 8 + ((nodeH - 16) * (k + 1)) / (list.length + 1)));
  }
  for (const e of routed) delete e.ends;
  return {
    nodes,
    edges: routed,
    width: pad * 2 + layerCount * nodeW + Math.max(0, layerCount - 1) * gapX,
    height: maxBottom + pad,
    crossings: bestCross,
  };
}

/** An SVG path through the points: horizontal-tangent cubic curves between successive points. */
export function curvePath(points) {
  let d = `M${points[0][0].toFixed(1)},${points[0][1].toFixed(1)}`;
  for (let k = 1; k < points.length; k++) {
    const [x0, y0] = points[k - 1], [x1, y1] = points[k];
    if (y0 === y1) { d += ` L${x1.toFixed(1)},${y1.toFixed(1)}`; continue; }
    const mx = (x0 + x1) / 2;
    d += ` C${mx.toFixed(1)},${y0.toFixed(1)} ${mx.toFixed(1)},${y1.toFixed(1)} ${x1.toFixed(1)},${y1.toFixed(1)}`;
  }
  return d;
}
