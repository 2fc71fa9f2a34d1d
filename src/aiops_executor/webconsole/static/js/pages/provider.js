// One provider's endpoints, credentials and models. Every change and every provider call (health check,
// validate, sync, test) is the admin's; other roles read. Keys are typed into password fields, sent once and
// never shown again: the API answers with a masked form only.

import { api, can, listAll } from '../api.js';
import { act, button, fill, fmtTime, h, instant, notify, statusBadge, table } from '../dom.js';

const CAPABILITIES = ['text_generation', 'chat', 'code_generation', 'function_calling', 'vision', 'embedding',
  'structured_output', 'streaming'];
const MODEL_TYPES = ['chat', 'completion', 'embedding', 'vision'];

function optional(value) {
  return value === '' ? undefined : value;
}

function numberOrUndefined(value) {
  return value === '' ? undefined : Number(value);
}


function form(testid, fields, submitText, onSubmit) {
  const submit = h('button', { type: 'submit' }, submitText);
  return h('form', {
    class: 'row panel', testid,
    onsubmit: (event) => {
      event.preventDefault();
      act(submit, () => onSubmit(event.target));
    },
  }, fields, submit);
}

// A circuit breaker's state as a badge's colour: closed is fine, half-open is probing, open skips the endpoint.
const CIRCUIT = { closed: 'ok', half_open: 'degraded', open: 'failed' };

async function endpointsSection(provider, reload) {
  const endpoints = await listAll(`/providers/${provider.id}/endpoints`);
  const admin = can.administer();
  const rows = endpoints.map((e) => {
    const check = button('Check health', () => act(check, async () => {
      const result = await api('POST', `/endpoints/${e.id}/health-check`);
      const details = result.details && Object.keys(result.details).length ? ` — ${JSON.stringify(result.details)}` : '';
      await reload();
      notify(`endpoint ${e.name}: ${result.status}, ${result.latency_ms ?? '—'} ms${details}`, result.status === 'healthy' ? 'info' : 'error');
    }), { class: 'secondary', testid: 'endpoint-health-check' });
    const remove = button('Delete', () => act(remove, async () => {
      if (!window.confirm(`Delete endpoint ${e.name}?`)) return;
      await api('DELETE', `/endpoints/${e.id}`);
      await reload();
    }), { class: 'secondary' });
    return h('tr', { testid: 'endpoint-row', dataset: { endpointName: e.name } },
      h('td', {}, e.name), h('td', {}, h('code', {}, e.base_url || '(provider default)')),
      h('td', {}, String(e.priority)), h('td', {}, e.is_default ? 'yes' : ''),
      h('td', {}, statusBadge(e.is_active ? 'active' : 'inactive')),
      h('td', {}, statusBadge(e.health_status, { testid: 'endpoint-health' }), ' ', h('span', { class: 'muted' }, fmtTime(e.last_health_check))),
      h('td', {}, h('span', { class: `status ${CIRCUIT[e.circuit_state] || 'unknown'}`, testid: 'endpoint-circuit', dataset: { state: e.circuit_state || '' } }, (e.circuit_state || 'unknown').replace('_', '-'))),
      h('td', { testid: 'endpoint-limits' }, [e.rpm ? `${e.rpm} rpm` : null, e.tpm ? `${e.tpm} tpm` : null].filter(Boolean).join(' · ') || '—'),
      h('td', {}, admin ? [check, ' ', remove] : null));
  });
  const add = admin ? form('endpoint-form', [
    h('label', {}, 'Name', h('input', { name: 'name', required: true })),
    h('label', { class: 'grow' }, 'Base URL', h('input', { name: 'base_url', type: 'url', placeholder: 'empty: the provider default' })),
    h('label', {}, 'API version', h('input', { name: 'api_version' })),
    h('label', {}, 'Region', h('input', { name: 'region' })),
    h('label', {}, 'Priority', h('input', { name: 'priority', type: 'number', min: 0, value: '100' })),
    h('label', {}, 'Requests / min', h('input', { name: 'rpm', type: 'number', min: 1, placeholder: 'no limit', testid: 'endpoint-rpm' })),
    h('label', {}, 'Tokens / min', h('input', { name: 'tpm', type: 'number', min: 1, placeholder: 'no limit', testid: 'endpoint-tpm' })),
    h('label', { class: 'inline' }, h('input', { name: 'is_default', type: 'checkbox' }), 'default'),
  ], 'Add endpoint', async (el) => {
    await api('POST', `/providers/${provider.id}/endpoints`, {
      name: el.name.value, base_url: optional(el.base_url.value), api_version: optional(el.api_version.value),
      region: optional(el.region.value), priority: numberOrUndefined(el.priority.value), is_default: el.is_default.checked,
      rpm: numberOrUndefined(el.rpm.value), tpm: numberOrUndefined(el.tpm.value),
    });
    notify('endpoint added');
    await reload();
  }) : null;
  return h('section', { testid: 'endpoints' }, h('h2', {}, 'Endpoints'),
    endpoints.length ? table(['Name', 'Base URL', 'Priority', 'Default', 'Active', 'Health', 'Circuit', 'Limits', ''], rows) : h('p', { class: 'muted' }, 'No endpoint.'),
    add);
}

async function credentialsSection(provider, reload) {
  const credentials = await listAll(`/providers/${provider.id}/credentials`);
  const admin = can.administer();
  const rows = credentials.map((c) => {
    const validate = button('Validate', () => act(validate, async () => {
      const result = await api('POST', `/credentials/${c.id}/validate`);
      await reload();
      notify(result.valid ? `credential ${c.alias} is valid` : `credential ${c.alias} is not valid: ${result.error_message || result.error_code || ''}`,
        result.valid ? 'info' : 'error');
    }), { class: 'secondary', testid: 'credential-validate' });
    const newKey = h('input', { type: 'password', autocomplete: 'off', 'aria-label': 'New API key', testid: 'credential-rotate-key', required: true });
    const rotateForm = h('form', {
      class: 'row', hidden: true,
      onsubmit: (event) => {
        event.preventDefault();
        act(null, async () => {
          await api('PUT', `/credentials/${c.id}`, { api_key: newKey.value });
          newKey.value = '';
          notify(`credential ${c.alias} rotated`);
          await reload();
        });
      },
    }, newKey, h('button', { type: 'submit', testid: 'credential-rotate-save' }, 'Save new key'));
    const rotate = button('Rotate', () => { rotateForm.hidden = !rotateForm.hidden; if (!rotateForm.hidden) newKey.focus(); },
      { class: 'secondary', testid: 'credential-rotate' });
    const revoke = button('Revoke', () => act(revoke, async () => {
      if (!window.confirm(`Revoke credential ${c.alias}?`)) return;
      await api('DELETE', `/credentials/${c.id}`);
      await reload();
    }), { class: 'secondary' });
    return h('tr', { testid: 'credential-row', dataset: { alias: c.alias } },
      h('td', {}, c.alias), h('td', {}, h('code', { testid: 'credential-masked' }, c.api_key_masked)),
      h('td', {}, c.has_secret_key ? 'yes' : ''),
      h('td', {}, statusBadge(c.validation_status, { testid: 'credential-status' }), ' ', h('span', { class: 'muted' }, fmtTime(c.last_validated_at))),
      h('td', {}, c.expires_at ? fmtTime(c.expires_at) : 'never'),
      h('td', {}, `${c.quota_used}${c.quota_limit !== null ? ` / ${c.quota_limit}` : ''}`),
      h('td', {}, statusBadge(c.is_active ? 'active' : 'inactive')),
      h('td', {}, admin ? [validate, ' ', rotate, ' ', revoke, rotateForm] : null));
  });
  const add = admin ? form('credential-form', [
    h('label', {}, 'Alias', h('input', { name: 'alias', required: true, testid: 'credential-alias' })),
    h('label', {}, 'API key', h('input', { name: 'api_key', type: 'password', autocomplete: 'off', required: true, testid: 'credential-key' })),
    h('label', {}, 'Secret key (optional)', h('input', { name: 'secret_key', type: 'password', autocomplete: 'off' })),
    h('label', {}, 'Expires (optional)', h('input', { name: 'expires_at', type: 'datetime-local' })),
    h('label', {}, 'Quota (optional)', h('input', { name: 'quota_limit', type: 'number', min: 0 })),
  ], 'Add credential', async (el) => {
    await api('POST', `/providers/${provider.id}/credentials`, {
      alias: el.alias.value, api_key: el.api_key.value, secret_key: optional(el.secret_key.value),
      expires_at: instant(el.expires_at.value), quota_limit: numberOrUndefined(el.quota_limit.value),
    });
    el.api_key.value = '';
    el.secret_key.value = '';
    notify('credential added');
    await reload();
  }) : null;
  return h('section', { testid: 'credentials' }, h('h2', {}, 'Credentials'),
    credentials.length ? table(['Alias', 'Key', 'Secret', 'Validation', 'Expires', 'Quota', 'Active', ''], rows) : h('p', { class: 'muted' }, 'No credential.'),
    add);
}

function capabilityChips(capabilities) {
  return Object.entries(capabilities || {}).map(([name, spec]) =>
    h('span', { class: 'chip', title: spec.supported ? `score ${spec.score} of 5` : 'not supported' },
      spec.supported ? `${name} ${spec.score}/5` : h('s', {}, name)));
}

async function modelsSection(provider, reload) {
  const models = await listAll('/models', { provider_id: provider.id });
  const admin = can.administer();
  const syncOutcome = h('div', { testid: 'model-sync-result' });
  const sync = button('Sync from provider', () => act(sync, async () => {
    const result = await api('POST', `/providers/${provider.id}/models/sync`);
    await reload();
    notify(`models synced: ${result.created.length} new, ${result.deprecated.length} deprecated, ${result.reactivated.length} back, ${result.unchanged} unchanged`);
  }), { class: 'secondary', testid: 'model-sync' });
  const rows = models.map((m) => {
    const outcome = h('span', { testid: 'model-test-result' });
    const test = button('Test', () => act(test, async () => {
      const result = await api('POST', `/models/${m.id}/test`);
      fill(outcome, statusBadge(result.ok ? 'success' : 'failed'), ` ${result.latency_ms ?? '—'} ms `,
        result.output ? h('code', {}, String(result.output).slice(0, 200)) : '', result.error_message || '');
    }), { class: 'secondary', testid: 'model-test' });
    const remove = button('Delete', () => act(remove, async () => {
      if (!window.confirm(`Delete model ${m.model_id}?`)) return;
      await api('DELETE', `/models/${m.id}`);
      await reload();
    }), { class: 'secondary' });
    return h('tr', { testid: 'model-row', dataset: { modelId: m.model_id } },
      h('td', {}, h('code', {}, m.model_id), h('div', { class: 'muted' }, m.name)),
      h('td', {}, m.type), h('td', {}, statusBadge(m.status)),
      h('td', {}, m.context_window ? String(m.context_window) : '—'),
      h('td', {}, `${m.input_price ?? '—'} / ${m.output_price ?? '—'}`),
      h('td', { testid: 'model-capabilities' }, capabilityChips(m.capabilities)),
      h('td', {}, admin ? [test, ' ', remove] : null, outcome));
  });
  const add = admin ? form('model-form', [
    h('label', {}, 'Model id', h('input', { name: 'model_id', required: true })),
    h('label', {}, 'Name', h('input', { name: 'name', required: true })),
    h('label', {}, 'Type', h('select', { name: 'type' }, MODEL_TYPES.map((t) => h('option', { value: t }, t)))),
    h('label', {}, 'Input price / 1K', h('input', { name: 'input_price', type: 'number', min: 0, step: 'any' })),
    h('label', {}, 'Output price / 1K', h('input', { name: 'output_price', type: 'number', min: 0, step: 'any' })),
    h('fieldset', {}, h('legend', {}, 'Capabilities (score 3)'),
      CAPABILITIES.map((c) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', name: `cap_${c}` }), c))),
  ], 'Add model', async (el) => {
    const capabilities = {};
    for (const c of CAPABILITIES) if (el[`cap_${c}`].checked) capabilities[c] = { supported: true, score: 3 };
    await api('POST', `/providers/${provider.id}/models`, {
      model_id: el.model_id.value, name: el.name.value, type: el.type.value,
      input_price: numberOrUndefined(el.input_price.value), output_price: numberOrUndefined(el.output_price.value), capabilities,
    });
    notify('model added');
    await reload();
  }) : null;
  return h('section', { testid: 'models' },
    h('div', { class: 'row' }, h('h2', { class: 'grow' }, 'Models'), admin ? sync : null),
    syncOutcome,
    models.length ? table(['Model', 'Type', 'Status', 'Context', 'Price in / out', 'Capabilities', ''], rows) : h('p', { class: 'muted' }, 'No model.'),
    add);
}

export async function renderProvider(main, [providerId], signal) {
  const reload = async () => {
    if (!signal.aborted) await renderProvider(main, [providerId], signal);
  };
  const provider = await api('GET', `/providers/${providerId}`);
  const admin = can.administer();
  const toggle = button(provider.is_active ? 'Deactivate' : 'Activate', () => act(toggle, async () => {
    await api('PATCH', `/providers/${provider.id}/status`, { is_active: !provider.is_active });
    await reload();
  }), { class: 'secondary', testid: 'provider-toggle' });
  const remove = button('Delete provider', () => act(remove, async () => {
    if (!window.confirm(`Delete provider ${provider.name}?`)) return;
    await api('DELETE', `/providers/${provider.id}`);
    notify(`provider ${provider.name} deleted`, 'info', { across: true });
    window.location.hash = '#/llm';
  }), { class: 'danger', testid: 'provider-delete' });
  const sections = await Promise.all([
    endpointsSection(provider, reload), credentialsSection(provider, reload), modelsSection(provider, reload),
  ]);
  fill(main,
    h('p', {}, h('a', { href: '#/llm' }, '← all providers')),
    h('div', { class: 'row' },
      h('h1', { class: 'grow', testid: 'provider-title' }, provider.name),
      h('span', { class: 'chip' }, provider.type),
      statusBadge(provider.is_active ? 'active' : 'inactive'),
      admin ? [toggle, remove] : null),
    provider.description ? h('p', {}, provider.description) : null,
    sections);
}
