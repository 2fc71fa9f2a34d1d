// Building the page from data: text goes in through text nodes only, never as markup, so nothing a topology,
// a model or a tool returns can become HTML or script.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = value;
    else if (key === 'checked' || key === 'disabled' || key === 'selected' || key === 'hidden') el[key] = Boolean(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

export function fill(el, ...children) {
  clear(el);
  return append(el, children);
}

// Dates are shown in the browser's time zone, with the zone's name so that nobody misreads them.
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
export function fmtTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateFormat.format(date);
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function fmtNumber(value) {
  return value === null || value === undefined ? 'unknown' : String(value);
}

export function fmtCost(value) {
  if (value === null || value === undefined) return 'unknown';
  const number = Number(value);
  return Number.isFinite(number) ? `$${number.toFixed(6)}` : String(value);
}

// A table row that is a link as a whole, where it highlights: a click anywhere on it, or Enter when it has the
// focus (Tab reaches it), opens ``href``; links and buttons inside keep their own action.
export function linkRow(href, attrs, ...cells) {
  const open = (event) => {
    if (event.target.closest('a, button, input, select, textarea')) return;
    window.location.hash = href;
  };
  return h('tr', {
    ...attrs,
    class: 'clickable',
    tabindex: 0,
    onclick: open,
    onkeydown: (event) => { if (event.key === 'Enter') open(event); },
  }, ...cells);
}

// A table with a header row of ``headers`` and the given body rows. An empty header (the column of a row's
// buttons) is named for screen readers only.
export function table(headers, rows) {
  return h('table', {},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t === '' ? h('span', { class: 'sr-only' }, 'Actions') : t)))),
    h('tbody', {}, rows));
}

// A ``datetime-local`` input's value as the API takes it (UTC, ISO 8601); undefined when empty or not a date.
export function instant(value) {
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

export function statusBadge(status, attrs = {}) {
  return h('span', { class: `status ${status}`, ...attrs }, status);
}

export function json(value) {
  return h('pre', {}, JSON.stringify(value, null, 2));
}

export function field(labelText, input, hint) {
  return h('label', {}, labelText, input, hint ? h('span', { class: 'muted' }, hint) : null);
}

export function button(text, onclick, attrs = {}) {
  return h('button', { type: 'button', onclick, ...attrs }, text);
}

// Shows an error (or a confirmation) at the top of the page, where a screen reader announces it. A page change
// clears it, except a message given with ``{ across: true }`` just before the change (e.g. "deleted", then the
// list): it stays for the page the user is sent to.
let keepAcross = false;
export function notify(message, kind = 'info', { across = false } = {}) {
  keepAcross = across;
  const box = document.getElementById('notice');
  fill(box, message ? h('div', { class: `notice ${kind}`, testid: 'notice' }, message) : null);
}

export function clearNoticeForNewPage() {
  if (keepAcross) keepAcross = false;
  else notify('');
}

export function errorText(error) {
  if (error && error.code) return `${error.message} (${error.code})`;
  return error && error.message ? error.message : String(error);
}

// Runs an action from a button: disables it meanwhile and reports a failure in the user's terms.
export async function act(buttonEl, action) {
  if (buttonEl) buttonEl.disabled = true;
  try {
    return await action();
  } catch (error) {
    notify(errorText(error), 'error');
    return undefined;
  } finally {
    if (buttonEl) buttonEl.disabled = false;
  }
}
