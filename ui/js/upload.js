// Upload page: open a Jaeger JSON or OTLP JSON file in the browser (nothing is sent to the
// server); the traces open in the normal trace view at /trace/{id}.
import { h, statePanel } from './dom.js';
import { parseTraceFile } from './model.js';
import { localTraces } from './api.js';
import { fmtDuration, fmtCount } from './format.js';
import { navigate } from './main.js';

export function mount(root) {
  const input = h('input', { type: 'file', id: 'upload-file', accept: '.json,application/json', multiple: true });
  const out = h('div', { class: 'upload-out', id: 'upload-out' });
  const drop = h('label', { class: 'drop', for: 'upload-file' },
    h('b', {}, 'Drop trace files here or click to choose'),
    h('span', {}, 'Jaeger JSON (from /api/traces/{id} or the Jaeger UI’s download) or OTLP JSON ({"resourceSpans": …}, also api_v3’s {"result": …}).'),
    h('span', { class: 'muted' }, 'The file stays in this browser tab; nothing is uploaded to the server.'), input);
  root.append(h('div', { class: 'upload-page' }, h('h1', {}, 'View a trace file'), drop, out));

  const load = async (files) => {
    const found = [];
    const problems = [];
    for (const f of files) {
      try {
        const text = await f.text();
        for (const t of parseTraceFile(text)) {
          t.fileDoc = JSON.parse(text);
          localTraces.set(t.traceId, t);
          found.push(t);
        }
      } catch (e) {
        problems.push(h('p', {}, h('b', {}, f.name), `: ${e.message}`));
      }
    }
    if (found.length === 1 && !problems.length) return navigate(`/trace/${found[0].traceId}`);
    out.replaceChildren(
      problems.length ? statePanel('error', 'Some files could not be read', ...problems) : '',
      found.length ? h('ul', { class: 'upload-list' }, ...found.map((t) => h('li', {}, h('a', { href: `/trace/${t.traceId}` }, t.traceId), ` — ${fmtCount(t.spans.length)} spans, ${fmtDuration(t.duration)}`))) : '');
  };
  input.addEventListener('change', () => load([...input.files]));
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); load([...e.dataTransfer.files]); });
  return null;
}
