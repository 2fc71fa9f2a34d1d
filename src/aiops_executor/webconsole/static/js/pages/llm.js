import { api, can, listAll, providerTypes } from '../api.js';
import { act, fill, fmtTime, h, linkRow, notify, statusBadge } from '../dom.js';

function createForm(types) {
  const name = h('input', { required: true, maxlength: 100, testid: 'provider-name' });
  const type = h('select', { testid: 'provider-type' }, types.map((t) => h('option', { value: t }, t)));
  const description = h('input', { testid: 'provider-description' });
  const submit = h('button', { type: 'submit', testid: 'provider-create' }, 'Add provider');
  return h('form', {
    class: 'row panel',
    onsubmit: (event) => {
      event.preventDefault();
      act(submit, async () => {
        const created = await api('POST', '/providers', { name: name.value, type: type.value, description: description.value || null });
        notify(`provider ${created.name} added`, 'info', { across: true });
        window.location.hash = `#/llm/${created.id}`;
      });
    },
  }, h('label', {}, 'Name', name), h('label', {}, 'Type', type), h('label', { class: 'grow' }, 'Description', description), submit);
}

export async function renderProviders(main) {
  const [providers, types] = await Promise.all([listAll('/providers'), can.administer() ? providerTypes() : []]);
  fill(main,
    h('h1', {}, 'LLM configuration'),
    h('p', { class: 'muted' }, 'Providers, their endpoints (with health), credentials (masked) and models.'),
    can.administer() ? createForm(types) : null,
    h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Type', 'Active', 'Description', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, providers.map((p) => linkRow(`#/llm/${p.id}`, { testid: 'provider-row', dataset: { providerName: p.name } },
        h('td', {}, h('a', { href: `#/llm/${p.id}` }, p.name)),
        h('td', {}, p.type),
        h('td', {}, statusBadge(p.is_active ? 'active' : 'inactive')),
        h('td', {}, p.description || ''),
        h('td', {}, fmtTime(p.created_at)))))),
  );
}

