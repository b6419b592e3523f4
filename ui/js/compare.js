// Compare page: two traces side by side as a structural diff. Spans merge by their path of
// `service: operation` names, so every node shows count and time in A and in B and the
// difference — "why was this one slower" is read off the red bars.
import * as api from './api.js';
import { h, statePanel, bdi } from './dom.js';
import { fmtDuration, fmtTime, serviceColor, fmtCount } from './format.js';
import { buildTree, diffTraces } from './model.js';
import { navigate } from './main.js';

const MAX_ROWS = 3000;

export function mount(root, url, { a, b }) {
  const inA = h('input', { id: 'cmp-a', value: a, placeholder: 'trace id A (baseline)', spellcheck: 'false', size: 34 });
  const inB = h('input', { id: 'cmp-b', value: b, placeholder: 'trace id B', spellcheck: 'false', size: 34 });
  const form = h('form', { class: 'compare-form' }, h('label', {}, 'A ', inA), h('label', {}, 'B ', inB), h('button', { type: 'submit', class: 'primary' }, 'Compare'),
    h('button', { type: 'button', title: 'swap A and B', onclick: () => { [inA.value, inB.value] = [inB.value, inA.value]; form.requestSubmit(); } }, '⇄ swap'));
  form.addEventListener('submit', (e) => { e.preventDefault(); navigate(`/compare?a=${encodeURIComponent(inA.value.trim())}&b=${encodeURIComponent(inB.value.trim())}`); });
  const out = h('section', { class: 'compare-out' });
  root.append(h('div', { class: 'compare-page' }, h('h1', {}, 'Compare two traces'), form, out));
  if (!a || !b) {
    out.append(statePanel('empty', 'Pick two traces', 'Enter two trace ids above, or tick two results on the search page and press “Compare picked”.'));
    return null;
  }
  out.append(statePanel('loading', 'Loading both traces…'));
  let gone = false;
  Promise.all([api.trace(a), api.trace(b)]).then(([ta, tb]) => {
    if (!gone) render(out, buildTree(ta), buildTree(tb));
  }, (e) => {
    if (!gone) out.replaceChildren(statePanel('error', 'Could not load both traces', e.message, 'Check both ids; an unknown trace gives 404.'));
  });
  return { destroy: () => (gone = true) };
}

function summary(label, t) {
  const errors = t.spans.filter((s) => s.error).length;
  const root = t.spans[t.tops[0]];
  return h('div', { class: 'cmp-card' },
    h('div', { class: 'cmp-label' }, label),
    h('a', { href: `/trace/${t.traceId}` }, h('span', { class: 'swatch', style: { background: serviceColor(root.service) } }), bdi(root.service), ': ', bdi(root.name)),
    h('div', { class: 'cmp-nums' }, h('b', {}, fmtDuration(t.duration)), ` · ${fmtCount(t.spans.length)} spans · ${errors} errors`),
    h('div', { class: 'muted' }, fmtTime(t.startUs), ' · ', h('code', {}, t.traceId.slice(0, 16))));
}

function render(out, ta, tb) {
  const rows = diffTraces(ta, tb);
  const delta = tb.duration - ta.duration;
  const pct = ta.duration ? (delta / ta.duration) * 100 : 0;
  const verdict = Math.abs(delta) < 1 ? 'B took as long as A.' : `B is ${fmtDuration(Math.abs(delta))} ${delta > 0 ? 'slower' : 'faster'} than A (${delta > 0 ? '+' : '−'}${Math.abs(pct).toFixed(1)}%).`;
  const maxAbs = Math.max(...rows.map((r) => Math.abs(r.delta)), 1);
  // where the extra time was spent: the node whose own (not its children's) time grew most
  const biggest = rows.reduce((m, r) => (r.selfDelta > (m?.selfDelta ?? 0) ? r : m), null);
  const shown = rows.slice(0, MAX_ROWS);
  const table = h('table', { class: 'diff', id: 'diff-table' },
    h('thead', {}, h('tr', {}, h('th', {}, 'Service: operation (merged by path)'), h('th', { class: 'num' }, 'A'), h('th', { class: 'num' }, 'B'), h('th', { class: 'num' }, 'B − A'), h('th', {}, ''))),
    h('tbody', {}, ...shown.map((r) => {
      const status = !r.a ? 'only-b' : !r.b ? 'only-a' : '';
      const cell = (x) => (x ? `${fmtDuration(x.total)}${x.count > 1 ? ` ×${x.count}` : ''}` : '—');
      const w = (Math.abs(r.delta) / maxAbs) * 100;
      return h('tr', { class: `diff-row ${status}${r === biggest ? ' biggest' : ''}`, dataset: { key: r.key } },
        h('td', {}, h('span', { class: 'indent', style: { width: `${Math.min(r.depth, 30) * 14}px` } }), h('span', { class: 'swatch', style: { background: serviceColor(r.service) } }),
          h('span', { class: 'svc' }, r.service), ' ', h('span', { class: 'op' }, r.name),
          status === 'only-a' ? h('span', { class: 'badge' }, 'only in A') : null, status === 'only-b' ? h('span', { class: 'badge warn' }, 'only in B') : null,
          (r.a?.errors || 0) + (r.b?.errors || 0) ? h('span', { class: 'badge error' }, `errors ${r.a?.errors || 0} → ${r.b?.errors || 0}`) : null),
        h('td', { class: 'num' }, cell(r.a)), h('td', { class: 'num' }, cell(r.b)),
        h('td', { class: `num delta ${r.delta > 0 ? 'slower' : r.delta < 0 ? 'faster' : ''}` }, `${r.delta > 0 ? '+' : ''}${fmtDuration(r.delta)}`),
        h('td', { class: 'delta-bar-cell' }, h('div', { class: `delta-bar ${r.delta > 0 ? 'slower' : 'faster'}`, style: { width: `${w}%` } })));
    })));
  out.replaceChildren(
    h('div', { class: 'cmp-cards' }, summary('A', ta), summary('B', tb)),
    h('p', { class: `verdict ${delta > 0 ? 'slower' : 'faster'}`, id: 'verdict' }, verdict,
      biggest ? h('span', {}, ' Most of it is in ', h('b', {}, bdi(biggest.service), ': ', bdi(biggest.name)), ` (+${fmtDuration(biggest.selfDelta)} of its own time).`) : null),
    rows.length > MAX_ROWS ? h('p', { class: 'muted' }, `Showing the first ${MAX_ROWS} of ${rows.length} nodes.`) : '',
    table);
}
