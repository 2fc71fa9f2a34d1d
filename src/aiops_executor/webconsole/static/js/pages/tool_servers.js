// MCP tool servers: the list, registering one (stdio or streamable HTTP), and one server's page -- its settings,
// its tools as its last refresh listed them, why the last refresh failed, refresh, edit and delete. Changes are
// the admin's; other roles read. Values of `env` and `headers` are secrets: typed into password fields, sent
// once, and shown masked by the API ever after. A refused action says why, in the API's words and code (e.g. a
// stdio server in production).

import { api, can, listAll } from '../api.js';
import { act, button, fill, fmtTime, h, linkRow, notify, statusBadge } from '../dom.js';

const TRANSPORTS = ['streamable_http', 'stdio'];

function health(server) {
  if (!server.is_active) return statusBadge('inactive', { testid: 'tool-server-health' });
  if (server.last_error) return statusBadge('unhealthy', { testid: 'tool-server-health', title: server.last_error });
  if (!server.tools_refreshed_at) return statusBadge('unknown', { testid: 'tool-server-health' });
  return statusBadge('healthy', { testid: 'tool-server-health' });
}

// Name/value pairs whose values are secrets: one row each, the value in a password field, rows added on demand.
function secretPairs(testid, nameLabel, existing = {}) {
  const rows = h('div', { class: 'pairs' });
  const add = (name = '', masked = '') => {
    const row = h('div', { class: 'row', testid: `${testid}-pair` },
      h('label', {}, nameLabel, h('input', { value: name, testid: `${testid}-name`, autocomplete: 'off' })),
      h('label', { class: 'grow' }, 'Value',
        h('input', { type: 'password', testid: `${testid}-value`, autocomplete: 'new-password', placeholder: masked ? `unchanged (${masked})` : '' })),
      button('Remove', () => row.remove(), { class: 'secondary' }));
    rows.append(row);
  };
  for (const [name, masked] of Object.entries(existing)) add(name, masked);
  const el = h('fieldset', { testid },
    h('legend', {}, testid === 'tool-server-env' ? 'Environment (secret values)' : 'Headers (secret values)'),
    rows, button(`Add ${nameLabel.toLowerCase()}`, () => add(), { class: 'secondary', testid: `${testid}-add` }));
  // The pairs as the API takes them. Untouched (the stored names, no value typed): undefined, the stored values
  // stay. A row without a value among changed ones: null (a stored value cannot be read back to resend it).
  const stored = Object.keys(existing);
  el.values = () => {
    const pairs = [...rows.querySelectorAll('[data-testid$="-pair"]')]
      .map((row) => [row.querySelector('input').value.trim(), row.querySelector('input[type=password]').value])
      .filter(([name]) => name);
    const untouched = pairs.every(([, value]) => !value)
      && pairs.length === stored.length && pairs.every(([name], i) => name === stored[i]);
    if (untouched) return undefined;
    if (pairs.some(([, value]) => !value)) return null;
    return Object.fromEntries(pairs);
  };
  return el;
}

function serverFields(server = null) {
  const transport = h('select', { name: 'transport', testid: 'tool-server-transport' },
    TRANSPORTS.map((t) => h('option', { value: t, selected: server && server.transport === t }, t)));
  const url = h('label', { class: 'grow' }, 'URL (streamable HTTP)',
    h('input', { name: 'url', type: 'url', value: server?.url || '', testid: 'tool-server-url', placeholder: 'the server\'s MCP endpoint (…/mcp)' }));
  const command = h('label', {}, 'Command (stdio)', h('input', { name: 'command', value: server?.command || '', testid: 'tool-server-command' }));
  const args = h('label', { class: 'grow' }, 'Arguments (stdio, one per line)',
    h('textarea', { name: 'args', rows: 2, testid: 'tool-server-args' }, (server?.args || []).join('\n')));
  const env = secretPairs('tool-server-env', 'Variable', server?.env);
  const headers = secretPairs('tool-server-headers', 'Header', server?.headers);
  const shown = () => {
    const stdio = transport.value === 'stdio';
    url.hidden = stdio;
    headers.hidden = stdio;
    command.hidden = !stdio;
    args.hidden = !stdio;
    env.hidden = !stdio;
  };
  transport.addEventListener('change', shown);
  shown();
  return { transport, url, command, args, env, headers };
}

// The body of a create or an update from the form; secrets only when every kept pair was given a value.
function serverBody(form, fields, { creating }) {
  const stdio = fields.transport.value === 'stdio';
  const body = { transport: fields.transport.value, approval_required: form.approval_required.checked };
  if (creating || form.name.value) body.name = form.name.value;
  if (stdio) {
    body.command = form.command.value || null;
    body.args = form.args.value.split('\n').map((a) => a.trim()).filter(Boolean);
    const env = fields.env.values();
    if (env === null) throw new Error('give every environment variable its value again, or remove it');
    if (env !== undefined) body.env = env;
  } else {
    body.url = form.url.value || null;
    const headers = fields.headers.values();
    if (headers === null) throw new Error('give every header its value again, or remove it');
    if (headers !== undefined) body.headers = headers;
  }
  return body;
}

function serverForm(server, onSaved) {
  const fields = serverFields(server);
  const submit = h('button', { type: 'submit', testid: 'tool-server-save' }, server ? 'Save' : 'Register');
  return h('form', {
    class: 'panel', testid: 'tool-server-form',
    onsubmit: (event) => {
      event.preventDefault();
      act(submit, async () => {
        const body = serverBody(event.target, fields, { creating: !server });
        const saved = server
          ? await api('PUT', `/tool-servers/${server.id}`, body)
          : await api('POST', '/tool-servers', body);
        await onSaved(saved);
      });
    },
  },
  h('div', { class: 'row' },
    h('label', {}, 'Name', h('input', { name: 'name', required: !server, value: server?.name || '', maxlength: 64, testid: 'tool-server-name' })),
    h('label', {}, 'Transport', fields.transport),
    h('label', { class: 'inline' }, h('input', { name: 'approval_required', type: 'checkbox', checked: server?.approval_required }), 'every tool needs approval')),
  h('div', { class: 'row' }, fields.url, fields.command, fields.args),
  fields.env, fields.headers, submit);
}

export async function renderToolServers(main) {
  document.title = 'Tool servers — aiops-agent-executor';
  const servers = await listAll('/tool-servers');
  const register = can.administer()
    ? serverForm(null, async (created) => {
      notify(`tool server ${created.name} registered; listing its tools`, 'info', { across: true });
      window.location.hash = `#/tool-servers/${created.id}?refresh`;
    })
    : null;
  fill(main,
    h('h1', {}, 'Tool servers'),
    h('p', { class: 'muted' }, 'MCP servers whose tools agents may use, named <server>.<tool>.'),
    h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Transport', 'Tools', 'Health', 'Approval', 'Refreshed'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, servers.map((s) => linkRow(
        `#/tool-servers/${s.id}`, { testid: 'tool-server-row', dataset: { name: s.name } },
        h('td', {}, h('a', { href: `#/tool-servers/${s.id}` }, s.name)),
        h('td', {}, s.transport),
        h('td', {}, String(s.tools.length)),
        h('td', {}, health(s)),
        h('td', {}, s.approval_required ? 'every tool' : ''),
        h('td', {}, fmtTime(s.tools_refreshed_at)))))),
    servers.length ? null : h('p', { class: 'muted' }, 'No tool server registered.'),
    register ? [h('h2', {}, 'Register a tool server'), register] : null);
}

export async function renderToolServer(main, [id, query]) {
  const load = () => api('GET', `/tool-servers/${id}`);
  let server = await load();
  document.title = `${server.name} — tool servers — aiops-agent-executor`;
  const admin = can.administer();
  const draw = () => {
    const refresh = button('Refresh tools', () => act(refresh, async () => {
      try {
        const listed = await api('POST', `/tool-servers/${id}/refresh`);
        notify(`${server.name}: ${listed.tools.length} tool(s)`);
      } finally {
        server = await load();
        draw();
      }
    }), { testid: 'tool-server-refresh' });
    const toggle = button(server.is_active ? 'Switch off' : 'Switch on', () => act(toggle, async () => {
      server = await api('PUT', `/tool-servers/${id}`, { is_active: !server.is_active });
      draw();
    }), { class: 'secondary', testid: 'tool-server-toggle' });
    const remove = button('Delete', () => act(remove, async () => {
      if (!window.confirm(`Delete tool server ${server.name}? Teams that use its tools stop validating.`)) return;
      await api('DELETE', `/tool-servers/${id}`);
      notify(`tool server ${server.name} deleted`, 'info', { across: true });
      window.location.hash = '#/tool-servers';
    }), { class: 'secondary', testid: 'tool-server-delete' });
    fill(main,
      h('p', {}, h('a', { href: '#/tool-servers' }, '← Tool servers')),
      h('h1', { testid: 'tool-server-title' }, server.name),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Transport'), h('dd', {}, server.transport),
        h('dt', {}, server.transport === 'stdio' ? 'Command' : 'URL'),
        h('dd', {}, h('code', {}, server.transport === 'stdio' ? [server.command, ...server.args].join(' ') : server.url)),
        h('dt', {}, 'Health'), h('dd', {}, health(server)),
        h('dt', {}, 'Tools listed'), h('dd', {}, fmtTime(server.tools_refreshed_at)),
        server.last_error ? [h('dt', {}, 'Last error'), h('dd', { testid: 'tool-server-error' }, server.last_error)] : null),
      admin ? h('p', { class: 'row' }, refresh, toggle, remove) : null,
      h('h2', {}, 'Tools'),
      server.tools.length
        ? h('table', {},
          h('thead', {}, h('tr', {}, ['Name', 'Description', 'Arguments'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, server.tools.map((t) => h('tr', { testid: 'tool-server-tool', dataset: { tool: t.name } },
            h('td', {}, h('code', {}, `${server.name}.${t.name}`)),
            h('td', {}, t.description),
            h('td', {}, Object.keys(t.input_schema?.properties || {}).join(', '))))))
        : h('p', { class: 'muted' }, 'No tool listed yet: refresh to connect and list them.'),
      admin ? [h('h2', {}, 'Edit'), serverForm(server, async (saved) => {
        server = saved;
        notify(`tool server ${saved.name} saved`);
        draw();
      })] : null);
  };
  draw();
  if (query === 'refresh' && admin) {
    // Just registered: list its tools at once (and forget the request, so that a reload does not repeat it).
    window.history.replaceState(null, '', `#/tool-servers/${id}`);
    main.querySelector('[data-testid="tool-server-refresh"]')?.click();
  }
}
