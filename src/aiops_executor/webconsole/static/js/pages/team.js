import { api, can } from '../api.js';
import { act, button, fill, fmtDuration, fmtTime, h, notify, statusBadge } from '../dom.js';
import { editableTeam, parseDocument } from '../topology.js';
import { teamEditor } from './teams.js';

function runForm(team) {
  const task = h('textarea', { rows: 3, testid: 'execute-task', 'aria-label': 'Task', placeholder: 'What should the team find out?' });
  const context = h('textarea', { rows: 3, testid: 'execute-context', 'aria-label': 'Context (JSON object, optional)', placeholder: '{"alert": "..."} (optional)' });
  const schema = h('textarea', { rows: 5, testid: 'execute-output-schema', 'aria-label': 'Output schema (JSON Schema, optional)', placeholder: '{"type": "object", "properties": {...}} (optional)' });
  const timeout = h('input', { type: 'number', min: 1, max: 1800, value: String(team.timeout_seconds), testid: 'execute-timeout' });
  const problem = h('p', { class: 'error', role: 'alert', testid: 'execute-error' });
  const submit = button('Run', () => act(submit, async () => {
    problem.textContent = '';
    if (!task.value.trim()) {
      problem.textContent = 'Enter a task.';
      return;
    }
    const body = { input: { task: task.value }, timeout_seconds: Number(timeout.value) };
    for (const [name, area] of [['context', context], ['output_schema', schema]]) {
      if (!area.value.trim()) continue;
      const parsed = parseDocument(area.value);
      if (parsed.error || typeof parsed.value !== 'object' || parsed.value === null || Array.isArray(parsed.value)) {
        problem.textContent = `${name === 'context' ? 'Context' : 'Output schema'}: ${parsed.error || 'must be a JSON object'}`;
        return;
      }
      if (name === 'context') body.input.context = parsed.value;
      else body.output_schema = parsed.value;
    }
    try {
      const execution = await api('POST', `/teams/${team.team_id}/executions`, body);
      window.location.hash = `#/executions/${execution.execution_id}`;
    } catch (error) {
      const details = error.details && Array.isArray(error.details.errors)
        ? ` — ${error.details.errors.map((e) => `${e.path || (e.loc || []).join('.')}: ${e.message}`).join('; ')}`
        : '';
      problem.textContent = `${error.message}${details}`;
    }
  }), { testid: 'execute-submit' });
  return h('section', { class: 'panel', 'aria-labelledby': 'run-heading' },
    h('h2', { id: 'run-heading' }, 'Run'),
    h('label', {}, 'Task', task),
    h('details', {}, h('summary', {}, 'Context, output schema, timeout'),
      h('label', {}, 'Context (JSON object)', context),
      h('label', {}, 'Output schema (JSON Schema)', schema),
      h('label', {}, 'Timeout (seconds)', timeout)),
    h('div', { class: 'row' }, submit),
    problem);
}

async function recentRuns(teamId) {
  const page = await api('GET', `/teams/${teamId}/executions`, undefined, { query: { size: 10 } });
  if (page.items.length === 0) return h('p', { class: 'muted' }, 'No execution yet.');
  return h('table', {},
    h('thead', {}, h('tr', {}, ['Started', 'Status', 'Duration', 'Task'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, page.items.map((run) => h('tr', { testid: 'team-execution-row' },
      h('td', {}, h('a', { href: `#/executions/${run.execution_id}` }, fmtTime(run.started_at || run.created_at))),
      h('td', {}, statusBadge(run.status)),
      h('td', {}, fmtDuration(run.duration_ms)),
      h('td', {}, String((run.input && run.input.task) || '').slice(0, 120))))));
}

export async function renderTeam(main, [teamId], signal) {
  const team = await api('GET', `/teams/${teamId}`);
  const validate = button('Validate', () => act(validate, async () => {
    const report = await api('POST', `/teams/${teamId}/validate`);
    const problems = [
      ...report.errors.map((p) => ({ ...p, severity: 'error' })),
      ...report.warnings.map((p) => ({ ...p, severity: 'warning' })),
    ];
    notify(report.valid ? `the team is valid (status ${report.status})` : 'the team has problems', report.valid ? 'info' : 'error');
    await editor.show(editableTeam(team), problems);
  }), { class: 'secondary', testid: 'team-validate' });
  const remove = button('Delete team', () => act(remove, async () => {
    if (!window.confirm(`Delete team ${team.team_name}?`)) return;
    await api('DELETE', `/teams/${teamId}`);
    notify(`team ${team.team_name} deleted`, 'info', { across: true });
    window.location.hash = '#/teams';
  }), { class: 'danger', testid: 'team-delete' });

  const editor = teamEditor({
    initialText: JSON.stringify(editableTeam(team), null, 2),
    submitLabel: 'Save changes',
    submit: async (document) => {
      const saved = await api('PUT', `/teams/${teamId}`, document);
      Object.assign(team, saved);
      notify(`team saved (status ${saved.status})`);
      await editor.show(editableTeam(saved), []);
      fill(header, headerContent());
    },
    extraButtons: can.operate() ? [validate] : [],
  });
  signal.addEventListener('abort', editor.destroy);
  const header = h('div', {});
  const headerContent = () => [
    h('div', { class: 'row' },
      h('h1', { class: 'grow', testid: 'team-title' }, team.team_name),
      statusBadge(team.status, { testid: 'team-status' }),
      can.operate() ? remove : null),
    team.description ? h('p', {}, team.description) : null,
    h('p', { class: 'muted' },
      `${team.topology_summary.node_count} nodes · ${team.topology_summary.agent_count} agents · `,
      `${team.topology_summary.edge_count} edges · depth ${team.topology_summary.depth} · timeout ${team.timeout_seconds} s`),
  ];
  fill(header, headerContent());
  fill(main,
    header,
    can.operate() ? runForm(team) : null,
    h('h2', {}, 'Topology'),
    editor.element,
    h('div', { class: 'row' }, h('h2', { class: 'grow' }, 'Recent executions'),
      h('a', { href: `#/executions?team_id=${teamId}`, testid: 'team-history' }, 'all executions of this team')),
    await recentRuns(teamId));
  await editor.show(editableTeam(team), []);
}
