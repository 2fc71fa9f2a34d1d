import { api, listAll } from '../api.js';
import { button, fill, fmtCost, fmtDuration, fmtNumber, fmtTime, h, instant, linkRow, statusBadge } from '../dom.js';

const STATUSES = ['pending', 'running', 'awaiting_approval', 'success', 'failed', 'timeout', 'cancelled'];
const SIZE = 20;

// A datetime-local value (the browser's time zone) as an ISO instant for the API.

export async function renderHistory(main) {
  const teams = await listAll('/teams');
  const names = new Map(teams.map((t) => [t.team_id, t.team_name]));
  const params = new URLSearchParams(window.location.hash.split('?')[1] || '');
  const team = h('select', { testid: 'filter-team' }, h('option', { value: '' }, 'all teams'),
    teams.map((t) => h('option', { value: t.team_id }, t.team_name)));
  const status = h('select', { testid: 'filter-status' }, h('option', { value: '' }, 'any status'),
    STATUSES.map((s) => h('option', { value: s }, s)));
  const after = h('input', { type: 'datetime-local', step: 1, testid: 'filter-after' });
  const before = h('input', { type: 'datetime-local', step: 1, testid: 'filter-before' });
  team.value = params.get('team_id') || '';
  status.value = params.get('status') || '';
  const body = h('tbody', {});
  const pager = h('div', { class: 'pager' });
  let page = 1;

  async function load() {
    const result = await api('GET', '/executions', undefined, {
      query: {
        team_id: team.value, status: status.value, created_after: instant(after.value), created_before: instant(before.value),
        page, size: SIZE,
      },
    });
    fill(body, result.items.map((run) => linkRow(`#/executions/${run.execution_id}`, { testid: 'execution-row', dataset: { executionId: run.execution_id, status: run.status } },
      h('td', {}, h('a', { href: `#/executions/${run.execution_id}` }, fmtTime(run.started_at || run.created_at))),
      h('td', {}, names.get(run.team_id) || h('span', { class: 'muted' }, 'deleted team')),
      h('td', {}, statusBadge(run.status)),
      h('td', {}, fmtDuration(run.duration_ms)),
      h('td', {}, `${fmtNumber(run.usage && run.usage.input_tokens)} / ${fmtNumber(run.usage && run.usage.output_tokens)}`),
      h('td', {}, fmtCost(run.usage && run.usage.cost)),
      h('td', {}, String((run.input && run.input.task) || '').slice(0, 100)))));
    fill(pager,
      button('Previous', () => { page -= 1; load(); }, { class: 'secondary', disabled: page <= 1 }),
      h('span', { testid: 'history-total' }, `page ${result.page} of ${Math.max(1, result.pages)} · ${result.total} executions`),
      button('Next', () => { page += 1; load(); }, { class: 'secondary', disabled: page >= result.pages }));
  }
  const apply = () => { page = 1; load(); };
  for (const input of [team, status, after, before]) input.addEventListener('change', apply);

  fill(main,
    h('h1', {}, 'Executions'),
    h('div', { class: 'row panel', role: 'search' },
      h('label', {}, 'Team', team), h('label', {}, 'Status', status),
      h('label', {}, 'Created after', after), h('label', {}, 'Created before', before),
      button('Refresh', apply, { class: 'secondary', testid: 'filter-apply' })),
    h('table', {},
      h('thead', {}, h('tr', {}, ['Started', 'Team', 'Status', 'Duration', 'Tokens in / out', 'Cost', 'Task'].map((t) => h('th', { scope: 'col' }, t)))),
      body),
    pager);
  await load();
}
