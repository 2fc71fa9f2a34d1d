// Spend (operators read, admins change): the budgets with what their period has spent, what is left and when
// they reset; and the usage report -- tokens, cost and runs by team, model, provider, API key or day, with a bar
// chart of the cost by day.

import { api, can, listAll } from '../api.js';
import { act, button, fill, fmtCost, fmtNumber, fmtTime, h, instant, notify, statusBadge, table } from '../dom.js';

const SCOPES = ['team', 'api_key', 'provider', 'global'];
const PERIODS = ['day', 'week', 'month', 'total'];
const GROUPS = ['day', 'team', 'model', 'provider', 'api_key'];
const DAY_MS = 86_400_000;
const MAX_CHART_DAYS = 400;

// Names for the ids budgets and reports carry: teams, providers, and (admins) API keys.
async function loadNames() {
  const lists = await Promise.all([
    listAll('/teams'),
    listAll('/providers'),
    can.administer() ? listAll('/api-keys') : Promise.resolve([]),
  ]);
  return {
    team: new Map(lists[0].map((t) => [t.team_id, t.team_name])),
    provider: new Map(lists[1].map((p) => [p.id, p.name])),
    api_key: new Map(lists[2].map((k) => [k.id, k.name])),
  };
}

function scopeLabel(names, scope, id) {
  if (scope === 'global') return 'everything';
  const name = names[scope] && names[scope].get(id);
  return `${scope.replace('_', ' ')} ${name || id}`;
}

function limitText(b) {
  return [b.limit_usd !== null ? fmtCost(b.limit_usd) : null, b.limit_tokens !== null ? `${b.limit_tokens} tokens` : null]
    .filter(Boolean).join(' · ');
}

function spentText(b) {
  const parts = [];
  if (b.limit_usd !== null) parts.push(`${fmtCost(b.spent_usd)} (${Math.floor((100 * b.spent_usd) / b.limit_usd)} %)`);
  if (b.limit_tokens !== null) parts.push(`${b.spent_tokens} tokens (${Math.floor((100 * b.spent_tokens) / b.limit_tokens)} %)`);
  return parts.join(' · ');
}

function budgetState(b) {
  if (b.exhausted) return statusBadge('failed', { testid: 'budget-state' });
  const share = Math.max(
    b.limit_usd ? b.spent_usd / b.limit_usd : 0,
    b.limit_tokens ? b.spent_tokens / b.limit_tokens : 0,
  );
  return statusBadge(share * 100 >= b.soft_limit_percent ? 'degraded' : 'ok', { testid: 'budget-state' });
}

// The form for a new budget, or (``budget`` given) for a budget's limits.
function budgetForm(names, reload, budget = null) {
  const scope = h('select', { name: 'scope', testid: 'budget-scope', disabled: Boolean(budget) },
    SCOPES.map((s) => h('option', { value: s, selected: budget ? budget.scope === s : s === 'team' }, s.replace('_', ' '))));
  const target = h('select', { name: 'scope_id', testid: 'budget-target', disabled: Boolean(budget) });
  const targetLabel = h('label', {}, 'Of', target);
  const fillTargets = () => {
    const known = names[scope.value];
    fill(target, known ? [...known].map(([id, name]) => h('option', { value: id, selected: budget && budget.scope_id === id }, name)) : []);
    targetLabel.hidden = scope.value === 'global';
  };
  scope.addEventListener('change', fillTargets);
  fillTargets();
  const usd = h('input', { name: 'limit_usd', type: 'number', min: '0', step: 'any', testid: 'budget-limit-usd', value: budget && budget.limit_usd !== null ? String(budget.limit_usd) : '' });
  const tokens = h('input', { name: 'limit_tokens', type: 'number', min: '1', step: '1', testid: 'budget-limit-tokens', value: budget && budget.limit_tokens !== null ? String(budget.limit_tokens) : '' });
  const period = h('select', { name: 'period', testid: 'budget-period' },
    PERIODS.map((p) => h('option', { value: p, selected: budget ? budget.period === p : p === 'month' }, p)));
  const soft = h('input', { name: 'soft_limit_percent', type: 'number', min: '1', max: '100', testid: 'budget-soft', value: String(budget ? budget.soft_limit_percent : 80) });
  const submit = h('button', { type: 'submit', testid: 'budget-save' }, budget ? 'Save limits' : 'Create budget');
  return h('form', {
    class: 'row panel', testid: 'budget-form',
    onsubmit: (event) => {
      event.preventDefault();
      act(submit, async () => {
        const body = { period: period.value, soft_limit_percent: Number(soft.value) };
        if (usd.value !== '') body.limit_usd = usd.value;
        if (tokens.value !== '') body.limit_tokens = Number(tokens.value);
        if (budget) {
          await api('PUT', `/budgets/${budget.id}`, body);
          notify('budget saved');
        } else {
          body.scope = scope.value;
          if (scope.value !== 'global') body.scope_id = target.value;
          await api('POST', '/budgets', body);
          notify('budget created');
        }
        await reload();
      });
    },
  }, h('label', {}, 'Scope', scope), targetLabel,
  h('label', {}, 'Limit (USD)', usd), h('label', {}, 'Limit (tokens)', tokens), h('label', {}, 'Period', period),
  h('label', {}, 'Warn at (%)', soft), submit);
}

async function budgetsSection(names, reload) {
  const budgets = await listAll('/budgets');
  const editor = h('div', {});
  const rows = budgets.map((b) => {
    const actions = can.administer() ? [
      button('Edit', () => fill(editor, h('h3', {}, `Limits of the budget of ${scopeLabel(names, b.scope, b.scope_id)}`), budgetForm(names, reload, b)),
        { class: 'secondary', testid: 'budget-edit' }),
      ' ',
      button('Delete', (event) => act(event.currentTarget, async () => {
        if (!window.confirm('Delete this budget? Its limits stop applying at once.')) return;
        await api('DELETE', `/budgets/${b.id}`);
        notify('budget deleted');
        await reload();
      }), { class: 'danger', testid: 'budget-delete' }),
    ] : null;
    return h('tr', { testid: 'budget-row', dataset: { id: b.id, scope: b.scope, exhausted: String(b.exhausted) } },
      h('td', {}, scopeLabel(names, b.scope, b.scope_id)), h('td', {}, b.period),
      h('td', {}, limitText(b)), h('td', { testid: 'budget-spent' }, spentText(b)),
      h('td', {}, budgetState(b)), h('td', {}, b.period_ends_at ? fmtTime(b.period_ends_at) : 'never'),
      h('td', {}, actions));
  });
  return h('section', { testid: 'budgets' }, h('h2', {}, 'Budgets'),
    h('p', { class: 'muted' }, 'A run a spent budget would stop is refused at start; a run whose next model call a budget cannot cover ends BUDGET_EXCEEDED, its partial result kept.'),
    budgets.length ? table(['Scope', 'Period', 'Limit', 'Spent', 'State', 'Resets', ''], rows) : h('p', { class: 'muted' }, 'No budget.'),
    can.administer() ? [editor, h('h3', {}, 'New budget'), budgetForm(names, reload)] : null);
}

// Cost by day as bars (heights set through the CSSOM, which the page's Content-Security-Policy allows); the
// table beside it carries the same figures for screen readers.
function dayChart(rows, from, to) {
  // Every UTC day of the range, those without a call at 0; over a longer range, the days with calls only.
  const byDay = new Map(rows.map((d) => [d.key, d]));
  let days = rows;
  if (to.getTime() - from.getTime() <= MAX_CHART_DAYS * DAY_MS) {
    days = [];
    for (let t = Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), from.getUTCDate()); t < to.getTime(); t += DAY_MS) {
      const key = new Date(t).toISOString().slice(0, 10);
      days.push(byDay.get(key) || { key, cost: 0 });
    }
  }
  const known = days.filter((d) => d.cost !== null);
  const top = Math.max(...known.map((d) => d.cost), 0);
  const bars = days.map((d) => {
    const bar = h('div', { class: 'bar', testid: 'usage-bar', dataset: { day: d.key }, title: `${d.key}: ${fmtCost(d.cost)}` });
    bar.style.height = d.cost === null ? '100%' : `${top > 0 ? Math.max(1, (100 * d.cost) / top) : 1}%`;
    if (d.cost === null) bar.classList.add('unknown');
    return h('div', { class: 'bar-slot' }, bar, h('span', { class: 'bar-label' }, d.key.slice(5)));
  });
  return h('div', { class: 'chart', testid: 'usage-chart', role: 'img', 'aria-label': `Cost by day, highest ${fmtCost(top)}`, dataset: { days: String(days.length) } }, bars);
}

function usageSection(names) {
  const now = new Date();
  const local = (date) => new Date(date.getTime() - date.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
  const from = h('input', { type: 'datetime-local', name: 'from', testid: 'usage-from', value: local(new Date(now.getTime() - 30 * DAY_MS)) });
  const to = h('input', { type: 'datetime-local', name: 'to', testid: 'usage-to', value: '' });
  const group = h('select', { name: 'group_by', testid: 'usage-group' }, GROUPS.map((g) => h('option', { value: g }, g.replace('_', ' '))));
  const chart = h('div', {});
  const body = h('div', {});
  const keyLabel = (groupBy, key) => {
    if (key === null) return groupBy === 'team' ? 'outside runs' : groupBy === 'api_key' ? 'signed-in users' : '—';
    return names[groupBy] ? names[groupBy].get(key) || key : key;
  };
  const load = async () => {
    const until = instant(to.value) || new Date().toISOString();
    const since = instant(from.value) || new Date(Date.parse(until) - 30 * DAY_MS).toISOString();
    const query = { from: since, to: until };
    const [rows, days] = await Promise.all([
      api('GET', '/usage', undefined, { query: { ...query, group_by: group.value } }),
      api('GET', '/usage', undefined, { query: { ...query, group_by: 'day' } }),
    ]);
    fill(chart, days.length ? dayChart(days, new Date(since), new Date(until)) : null);
    fill(body, rows.length
      ? table([group.value.replace('_', ' '), 'Input tokens', 'Output tokens', 'Cost', 'Runs', 'Calls'],
        rows.map((r) => h('tr', { testid: 'usage-row', dataset: { key: r.key === null ? '' : r.key } },
          h('td', {}, keyLabel(group.value, r.key)), h('td', {}, fmtNumber(r.input_tokens)),
          h('td', {}, fmtNumber(r.output_tokens)), h('td', {}, fmtCost(r.cost)), h('td', {}, String(r.runs)),
          h('td', {}, String(r.calls)))))
      : h('p', { class: 'muted' }, 'No model call in this time.'));
  };
  const submit = h('button', { type: 'submit', testid: 'usage-submit' }, 'Show');
  const section = h('section', { testid: 'usage-report' }, h('h2', {}, 'Usage'),
    h('form', {
      class: 'row panel',
      onsubmit: (event) => { event.preventDefault(); act(submit, load); },
    }, h('label', {}, 'From', from), h('label', {}, 'To (empty: now)', to), h('label', {}, 'Group by', group), submit),
    chart, body);
  section.load = load;
  return section;
}

export async function renderSpend(main) {
  const names = await loadNames();
  const usage = usageSection(names);
  const budgets = h('div', {});
  const reload = async () => {
    fill(budgets, await budgetsSection(names, reload));
    await usage.load();
  };
  fill(main, h('h1', {}, 'Spend'), budgets, usage);
  await reload();
}
