// The single page: routes Jaeger-shaped URLs to views, the theme, global keys and help.
import { h, statePanel } from './dom.js';
import { registerServices } from './format.js';
import { services } from './api.js';
import * as searchView from './search.js';
import * as traceView from './trace.js';
import * as compareView from './compare.js';
import * as mapView from './map.js';
import * as uploadView from './upload.js';

const main = document.getElementById('main');
let current = null; // the mounted view's handle: { onKey?, destroy? }

function route(url) {
  const path = url.pathname.replace(/\/+$/, '') || '/';
  const m = path.match(/^\/trace\/([^/]+)$/);
  if (m) {
    // a hand-edited or truncated link can hold broken percent-encoding (`/trace/%E0%A4%A`)
    let id;
    try { id = decodeURIComponent(m[1]); } catch { return [null, '', { problem: `${JSON.stringify(m[1])} is not a trace id: its percent-encoding is broken. A trace id is up to 32 hex characters.` }]; }
    // Jaeger's compare URL: /trace/{a}...{b}
    if (id.includes('...')) {
      const [a, b] = id.split('...');
      return [compareView, 'compare', { a, b }];
    }
    return [traceView, 'trace', { id }];
  }
  if (path === '/' || path === '/search') return [searchView, 'search', {}];
  if (path === '/compare') return [compareView, 'compare', { a: url.searchParams.get('a') || '', b: url.searchParams.get('b') || '' }];
  if (path === '/map' || path === '/dependencies') return [mapView, 'map', {}];
  if (path === '/upload') return [uploadView, 'upload', {}];
  return [null, '', {}];
}

export function navigate(href, { replace = false } = {}) {
  const url = new URL(href, location.href);
  if (url.href !== location.href) history[replace ? 'replaceState' : 'pushState'](null, '', url);
  render();
}

/** Updates the address bar without re-rendering (a view reflecting its own state). */
export function setUrl(href) {
  const url = new URL(href, location.href);
  if (url.href !== location.href) history.replaceState(null, '', url);
}

function render() {
  current?.destroy?.();
  current = null;
  const url = new URL(location.href);
  const [view, name, params] = route(url);
  for (const a of document.querySelectorAll('nav.top a[data-nav]')) a.classList.toggle('active', a.dataset.nav === name);
  main.replaceChildren();
  main.dataset.view = name || 'missing';
  if (!view) {
    main.append(h('div', { class: 'state state-empty' }, h('h2', {}, 'No such page'),
      params.problem ? h('p', {}, params.problem) : null,
      h('p', {}, 'Try ', h('a', { href: '/search' }, 'search'), ', or open a trace at /trace/<trace id>.')));
    return;
  }
  try {
    current = view.mount(main, url, params) || null;
  } catch (e) {
    // a view that breaks on odd input says so, instead of leaving a blank page
    console.error(e);
    main.replaceChildren(statePanel('error', 'This page failed to open', String(e.message || e), h('p', {}, 'Go to ', h('a', { href: '/search' }, 'search'), '.')));
  }
}

// ---- theme ------------------------------------------------------------------------------
const THEME_KEY = 'skein.theme';
function applyTheme(theme) {
  const dark = theme === 'dark' || (theme !== 'light' && matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  document.getElementById('theme').textContent = dark ? '☀ light' : '☾ dark';
  window.dispatchEvent(new Event('skein:theme'));
}
function toggleTheme() {
  const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
  localStorage.setItem(THEME_KEY, next);
  applyTheme(next);
}
applyTheme(localStorage.getItem(THEME_KEY));
matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => applyTheme(localStorage.getItem(THEME_KEY)));
document.getElementById('theme').addEventListener('click', toggleTheme);

// ---- help -------------------------------------------------------------------------------
const KEYS = [
  ['Everywhere', [['?', 'this help'], ['t', 'toggle light/dark theme'], ['g s / g m / g u', 'go to search / service map / upload'], ['Esc', 'close a panel or dialog']]],
  ['Search', [['/', 'focus the service field'], ['j / k, ↓ / ↑', 'move through results'], ['Enter / o', 'open the selected trace'], ['x', 'pick the selected trace for compare'], ['c', 'compare the two picked traces']]],
  ['Trace', [['j / k, ↓ / ↑', 'move through spans'], ['← / h, → / l', 'collapse / expand (← on a leaf goes to its parent)'], ['Enter / o', 'open or close the span detail'], ['/', 'find in trace'], ['n / N', 'next / previous match'], ['p', 'jump along the critical path'], ['1 2 3', 'timeline / flame graph / statistics'], ['e / E', 'expand all / collapse to the top level']]],
];
function toggleHelp() {
  const open = document.getElementById('help');
  if (open) return open.remove();
  const dialog = h('div', { id: 'help', class: 'dialog', role: 'dialog', 'aria-label': 'Keyboard shortcuts' },
    h('div', { class: 'dialog-box' },
      h('h2', {}, 'Keyboard shortcuts'),
      ...KEYS.map(([section, keys]) => h('section', {}, h('h3', {}, section),
        h('table', {}, ...keys.map(([k, what]) => h('tr', {}, h('td', {}, ...k.split(' ').map((p) => (p.length <= 2 || p === 'Enter' || p === 'Esc' ? h('kbd', {}, p) : ` ${p} `))), h('td', {}, what)))))),
      h('button', { type: 'button', onclick: () => dialog.remove() }, 'Close')));
  dialog.addEventListener('click', (e) => e.target === dialog && dialog.remove());
  document.body.append(dialog);
}
document.getElementById('help-button').addEventListener('click', toggleHelp);

let pendingG = false;
document.addEventListener('keydown', (e) => {
  const typing = e.target.closest?.('input, textarea, select, [contenteditable]');
  if (e.key === 'Escape' && document.getElementById('help')) return document.getElementById('help').remove();
  if (typing || e.ctrlKey || e.metaKey || e.altKey) {
    if (e.key === 'Escape' && typing) e.target.blur();
    return;
  }
  if (pendingG) {
    pendingG = false;
    const to = { s: '/search', m: '/map', u: '/upload' }[e.key];
    if (to) return navigate(to);
  }
  if (current?.onKey?.(e)) return e.preventDefault();
  if (e.key === '?') toggleHelp();
  else if (e.key === 't') toggleTheme();
  else if (e.key === 'g') pendingG = true;
});

// ---- links ------------------------------------------------------------------------------
document.addEventListener('click', (e) => {
  const a = e.target.closest('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/')) return;
  e.preventDefault();
  navigate(url.href);
});
window.addEventListener('popstate', render);

// Colours are handed out in service-name order; a failure here only costs colour stability.
services().then(registerServices, () => {}).finally(render);
