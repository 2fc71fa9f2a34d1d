// Administration (admins only): users -- create, change role, disable or enable --, API keys -- create (the key
// is shown this once), list, revoke --, and the audit log, filtered by actor, action, resource and time, a page at
// a time. Refusals (the last admin, a taken name) come in the API's words.

import { api, currentUser, listAll } from '../api.js';
import { act, button, fill, fmtTime, h, instant, json, notify, statusBadge, table } from '../dom.js';

const ROLES = ['viewer', 'operator', 'admin'];
const AUDIT_PAGE = 25;

function roleSelect(attrs, selected) {
  return h('select', attrs, ROLES.map((r) => h('option', { value: r, selected: r === selected }, r)));
}

async function usersSection(reload) {
  const users = await listAll('/users');
  const me = currentUser();
  const rows = users.map((u) => {
    const role = roleSelect({ 'aria-label': `Role of ${u.username}`, testid: 'user-role' }, u.role);
    role.addEventListener('change', () => act(role, async () => {
      try {
        await api('PATCH', `/users/${u.id}`, { role: role.value });
      } catch (error) {
        role.value = u.role; // refused (the last admin): the menu shows what is stored
        throw error;
      }
      notify(`${u.username} is now ${role.value}`);
      await reload();
    }));
    const toggle = button(u.is_active ? 'Disable' : 'Enable', () => act(toggle, async () => {
      await api('PATCH', `/users/${u.id}`, { is_active: !u.is_active });
      notify(`${u.username} ${u.is_active ? 'disabled: their sessions end now' : 'enabled'}`);
      await reload();
    }), { class: 'secondary', testid: 'user-toggle' });
    return h('tr', { testid: 'user-row', dataset: { username: u.username } },
      h('td', {}, u.username, me && me.id === u.id ? h('span', { class: 'muted' }, ' (you)') : null),
      h('td', {}, role),
      h('td', {}, statusBadge(u.is_active ? 'active' : 'inactive', { testid: 'user-status' })),
      h('td', {}, fmtTime(u.created_at)),
      h('td', {}, toggle));
  });
  const username = h('input', { name: 'username', required: true, autocomplete: 'off', testid: 'user-username' });
  const password = h('input', { name: 'password', type: 'password', required: true, minlength: 8, autocomplete: 'new-password', testid: 'user-password' });
  const role = roleSelect({ name: 'role', testid: 'user-new-role' }, 'viewer');
  const submit = h('button', { type: 'submit', testid: 'user-create' }, 'Create user');
  const create = h('form', {
    class: 'row panel', testid: 'user-form',
    onsubmit: (event) => {
      event.preventDefault();
      act(submit, async () => {
        const created = await api('POST', '/users', { username: username.value, password: password.value, role: role.value });
        notify(`user ${created.username} created`);
        await reload();
      });
    },
  }, h('label', {}, 'Username', username), h('label', {}, 'Password', password), h('label', {}, 'Role', role), submit);
  return h('section', { testid: 'users' }, h('h2', {}, 'Users'),
    table(['Username', 'Role', 'Status', 'Created', ''], rows), create);
}

async function keysSection(reload) {
  const keys = await listAll('/api-keys');
  const rows = keys.map((k) => {
    const revoke = button('Revoke', () => act(revoke, async () => {
      if (!window.confirm(`Revoke API key ${k.name}? Whatever uses it is refused from now on.`)) return;
      await api('DELETE', `/api-keys/${k.id}`);
      notify(`API key ${k.name} revoked`);
      await reload();
    }), { class: 'secondary', testid: 'api-key-revoke' });
    return h('tr', { testid: 'api-key-row', dataset: { name: k.name } },
      h('td', {}, k.name), h('td', {}, k.role), h('td', {}, h('code', {}, `${k.key_prefix}…`)),
      h('td', {}, fmtTime(k.created_at)), h('td', {}, revoke));
  });
  const shown = h('div', { testid: 'api-key-shown' });
  const name = h('input', { name: 'name', required: true, maxlength: 100, testid: 'api-key-name' });
  const role = roleSelect({ name: 'role', testid: 'api-key-role' }, 'operator');
  const submit = h('button', { type: 'submit', testid: 'api-key-create' }, 'Create API key');
  const create = h('form', {
    class: 'row panel', testid: 'api-key-form',
    onsubmit: (event) => {
      event.preventDefault();
      act(submit, async () => {
        const created = await api('POST', '/api-keys', { name: name.value, role: role.value });
        await reload();
        // Shown once: the API keeps only a hash. Left on the page until the user moves on.
        fill(document.querySelector('[data-testid="api-key-shown"]'),
          h('div', { class: 'notice info' },
            h('p', {}, `The key of ${created.name} (${created.role}). Copy it now: it is not shown again.`),
            h('code', { testid: 'api-key-value' }, created.key)));
      });
    },
  }, h('label', {}, 'Name', name), h('label', {}, 'Role', role), submit);
  return h('section', { testid: 'api-keys' }, h('h2', {}, 'API keys'),
    h('p', { class: 'muted' }, 'For machines (Alertmanager, CI): sent as Authorization: Bearer <key>.'),
    keys.length ? table(['Name', 'Role', 'Key', 'Created', ''], rows) : h('p', { class: 'muted' }, 'No API key.'),
    create, shown);
}

function auditSection() {
  const actor = h('input', { name: 'actor', placeholder: 'user:alice or api_key:…', testid: 'audit-actor' });
  const action = h('input', { name: 'action', placeholder: 'create, update, delete, start…', testid: 'audit-action' });
  const resource = h('input', { name: 'resource_type', placeholder: 'user, provider, team…', testid: 'audit-resource' });
  const after = h('input', { name: 'created_after', type: 'datetime-local', testid: 'audit-after' });
  const before = h('input', { name: 'created_before', type: 'datetime-local', testid: 'audit-before' });
  const body = h('tbody', {});
  const pager = h('div', { class: 'row' });
  let page = 1;
  const load = async () => {
    const result = await api('GET', '/audit-logs', undefined, {
      query: {
        actor: actor.value.trim(), action: action.value.trim(), resource_type: resource.value.trim(),
        created_after: instant(after.value), created_before: instant(before.value), page, size: AUDIT_PAGE,
      },
    });
    fill(body, result.items.map((e) => h('tr', { testid: 'audit-row', dataset: { action: e.action, resourceType: e.resource_type } },
      h('td', {}, fmtTime(e.created_at)), h('td', {}, e.actor), h('td', {}, e.action),
      h('td', {}, `${e.resource_type}${e.resource_id ? ` ${e.resource_id}` : ''}`),
      h('td', {}, json(e.details || {})))));
    const previous = button('Previous', () => { page -= 1; act(previous, load); }, { class: 'secondary', disabled: page <= 1 });
    const next = button('Next', () => { page += 1; act(next, load); }, { class: 'secondary', disabled: page >= result.pages });
    fill(pager, previous, h('span', { class: 'muted', testid: 'audit-page' }, `page ${result.pages ? page : 0} of ${result.pages} (${result.total})`), next);
  };
  const submit = h('button', { type: 'submit' }, 'Filter');
  const filters = h('form', {
    class: 'row panel', testid: 'audit-filters',
    onsubmit: (event) => {
      event.preventDefault();
      page = 1;
      act(submit, load);
    },
  }, h('label', {}, 'Actor', actor), h('label', {}, 'Action', action), h('label', {}, 'Resource', resource),
  h('label', {}, 'From', after), h('label', {}, 'To', before), submit);
  const section = h('section', { testid: 'audit' }, h('h2', {}, 'Audit log'), filters,
    table(['When', 'Actor', 'Action', 'Resource', 'Details'], body), pager);
  section.load = load;
  return section;
}

export async function renderAdmin(main) {
  document.title = 'Administration — aiops-agent-executor';
  const audit = auditSection();
  const users = h('div', {});
  const keys = h('div', {});
  const reload = async () => {
    fill(users, await usersSection(reload));
    const shown = keys.querySelector('[data-testid="api-key-shown"]');
    fill(keys, await keysSection(reload));
    if (shown) keys.querySelector('[data-testid="api-key-shown"]').replaceWith(shown);
    await audit.load();
  };
  fill(main, h('h1', {}, 'Administration'), users, keys, audit);
  await reload();
}
