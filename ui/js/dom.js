// Small DOM helpers: element building, escaping, copy to clipboard, state panels.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style' && typeof v === 'object') for (const [p, x] of Object.entries(v)) el.style.setProperty(p.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), x);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A user-supplied name (service, operation) isolated from the text around it: a right-to-left override inside it must not reorder what follows. */
export const bdi = (name) => h('bdi', {}, name);

/** A service chip: colour, name, count (one inline box inside the flex chip, so the space stays). */
export const chip = (name, count, color) => h('span', { class: 'chip', style: { '--c': color } }, h('span', {}, bdi(name), ` ${count}`));

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = h('textarea', { style: { position: 'fixed', opacity: '0' } }, text);
    document.body.append(ta);
    ta.select();
    document.execCommand('copy');
    ta.remove();
  }
  if (button) {
    const old = button.textContent;
    button.textContent = 'copied';
    setTimeout(() => (button.textContent = old), 1200);
  }
}

export const copyButton = (text, label = 'copy') =>
  h('button', { class: 'copy', type: 'button', title: 'Copy to clipboard', onclick: (e) => copyText(typeof text === 'function' ? text() : text, e.currentTarget) }, label);

/** A panel for loading / empty / error states: what happened and what to do. */
export function statePanel(kind, title, ...body) {
  return h('div', { class: `state state-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    kind === 'loading' ? h('div', { class: 'spinner', 'aria-hidden': 'true' }) : null,
    h('h2', {}, title), ...body.map((b) => (typeof b === 'string' ? h('p', {}, b) : b)));
}

export function download(filename, text, type = 'application/json') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
