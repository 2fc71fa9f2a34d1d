// One execution, live: the graph with each node team's status, what its agents say and which tools they call,
// tokens as they stream, usage and cost, then the result. A finished execution replays the same way (its stream
// replays every stored event), so history and the live view are one page.

import { api, can, listAll } from '../api.js';
import { act, button, fill, fmtCost, fmtDuration, fmtNumber, fmtTime, h, json, notify, statusBadge, table } from '../dom.js';
import { followExecution } from '../sse.js';
import { short, text, Timeline } from '../timeline.js';

const UNFINISHED = new Set(['pending', 'running', 'awaiting_approval']);

// The run's usage so far: the node teams' usages added up; a count any of them does not know is unknown.
function addUp(usages) {
  const total = { input_tokens: 0, output_tokens: 0, cost: 0 };
  for (const u of usages) {
    for (const key of Object.keys(total)) {
      const value = u ? u[key] : null;
      total[key] = total[key] === null || value === null || value === undefined ? null : total[key] + Number(value);
    }
  }
  return total;
}

function usageLine(usage) {
  const u = usage || {};
  return `${fmtNumber(u.input_tokens)} in / ${fmtNumber(u.output_tokens)} out tokens · ${fmtCost(u.cost)}`;
}

// The Alertmanager notification that started a run (its ``input.context``): status, group key, labels and
// annotations, each alert with a link to where it came from.
function alertPanel(context) {
  if (!context || context.source !== 'alertmanager') return null;
  const pairs = (map) => h('ul', { class: 'pairs' }, Object.entries(map || {}).map(([k, v]) => h('li', {}, h('code', {}, k), ' = ', String(v))));
  const link = (url, label) => (typeof url === 'string' && /^https?:\/\//.test(url)
    ? h('a', { href: url, rel: 'noreferrer noopener', target: '_blank' }, label) : null);
  return h('section', { class: 'panel', testid: 'run-alert' },
    h('h2', {}, 'Alert ', statusBadge(context.status === 'firing' ? 'failed' : 'success', { testid: 'run-alert-status' }), ' ', String(context.status || '')),
    h('p', {}, h('strong', {}, 'Group: '), h('code', { testid: 'run-alert-group' }, String(context.group_key || '')), ' ',
      link(context.external_url, 'Alertmanager')),
    h('div', { class: 'cols' },
      h('div', {}, h('h3', {}, 'Labels'), pairs(context.labels)),
      h('div', {}, h('h3', {}, 'Annotations'), pairs(context.annotations))),
    (context.alerts || []).length
      ? h('details', {}, h('summary', {}, `${context.alerts.length} alert(s)`),
        h('ul', {}, context.alerts.map((a) => h('li', {}, `${a.status} since ${fmtTime(a.starts_at)} `,
          h('code', {}, Object.entries(a.labels || {}).map(([k, v]) => `${k}=${v}`).join(' ')), ' ', link(a.generator_url, 'source')))))
      : null);
}

export async function renderExecution(main, [executionId], signal) {
  let execution = await api('GET', `/executions/${executionId}`);
  let team = null;
  try {
    team = await api('GET', `/teams/${execution.team_id}`);
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  let graph = null;
  const nodeList = h('ul', { class: 'node-list', testid: 'node-list', 'aria-label': 'Node teams' });
  const timeline = new Timeline({
    live: UNFINISHED.has(execution.status),
    onStatus: (nodeId, status) => { if (graph) graph.setStatus(nodeId, status); },
  });
  const topology = team ? team.topology : { nodes: [], edges: [] };
  // A few nodes need less room than a hundred.
  const graphBox = h('div', { class: topology.nodes.length <= 8 ? 'graph small' : 'graph', testid: 'run-graph', role: 'img', 'aria-label': 'Topology graph coloured by node status' });
  const runStatus = h('span', { class: `status ${execution.status}`, testid: 'run-status', role: 'status' }, execution.status);
  const streamState = h('span', { class: 'muted', testid: 'stream-state' }, '');
  const meta = h('p', { class: 'muted' });
  const usage = h('p', { testid: 'usage' }, usageLine(execution.usage));
  const resultBox = h('div', { testid: 'result' });
  const liveUsage = new Map();
  const approvalsBox = h('div', { testid: 'approvals' });
  const approvalsSection = h('section', { hidden: true }, h('h2', {}, 'Approvals'), approvalsBox);
  const approvals = new Map();

  // A tool call waiting for a person: who asked for what, and (operators) the decision.
  function approval(item) {
    approvalsSection.hidden = false;
    let entry = approvals.get(item.approval_id);
    if (!entry) {
      const badge = statusBadge('pending');
      const outcome = h('p', { class: 'muted', testid: 'approval-outcome' });
      const comment = h('input', { 'aria-label': 'Comment (handed to the agent with a rejection)', placeholder: 'comment (optional)', testid: 'approval-comment' });
      const decide = (decision) => act(null, async () => {
        const body = { decision };
        if (comment.value.trim()) body.comment = comment.value.trim();
        const decided = await api('POST', `/executions/${executionId}/approvals/${item.approval_id}`, body);
        approval(decided);
      });
      const controls = h('div', { class: 'row' }, comment,
        button('Approve', () => decide('approve'), { testid: 'approval-approve' }),
        button('Reject', () => decide('reject'), { class: 'danger', testid: 'approval-reject' }));
      const card = h('div', { class: 'panel', testid: 'approval', dataset: { approvalId: item.approval_id, status: 'pending' } },
        h('strong', {}, String(item.tool)), ' ', badge, ' ',
        h('span', { class: 'muted' }, [item.node_id, item.agent_id].filter(Boolean).join(' / ')),
        json(item.input || {}), outcome, controls);
      approvalsBox.append(card);
      entry = { card, badge, outcome, controls };
      approvals.set(item.approval_id, entry);
    }
    // Replayed from the start, the stream repeats a request after the list has shown its decision.
    if ((item.status || 'pending') === 'pending' && entry.card.dataset.status !== 'pending') return;
    const status = item.status || 'pending';
    entry.card.dataset.status = status;
    entry.badge.className = `status ${status === 'approved' ? 'success' : status === 'pending' ? 'running' : 'failed'}`;
    entry.badge.textContent = status;
    entry.controls.hidden = status !== 'pending' || !can.operate() || !UNFINISHED.has(execution.status);
    if (status !== 'pending') {
      entry.outcome.textContent = `${status} by ${item.decided_by || 'unknown'}${item.decided_at ? ` at ${fmtTime(item.decided_at)}` : ''}${item.comment ? `: ${item.comment}` : ''}`;
    } else if (item.expires_at) {
      entry.outcome.textContent = `rejected automatically if undecided by ${fmtTime(item.expires_at)}`;
    }
  }

  function node(nodeId, name) {
    const known = timeline.nodes.has(nodeId);
    const view = timeline.node(nodeId, name);
    if (!known) nodeList.append(view.item);
    return view;
  }
  for (const n of topology.nodes) node(n.node_id, n.node_name);

  function setRunStatus(status) {
    execution.status = status;
    runStatus.className = `status ${status}`;
    runStatus.textContent = status;
    cancel.hidden = !(can.operate() && UNFINISHED.has(status));
    // A finished run decides nothing any more.
    if (!UNFINISHED.has(status)) for (const entry of approvals.values()) entry.controls.hidden = true;
  }

  function showMeta() {
    fill(meta,
      `started ${fmtTime(execution.started_at || execution.created_at)} · `,
      execution.completed_at ? `finished ${fmtTime(execution.completed_at)} · ${fmtDuration(execution.duration_ms)} · ` : '',
      `attempt ${execution.attempt}`,
      execution.worker_id ? ` · worker ${execution.worker_id}` : '');
  }

  function showResult(run) {
    const rows = ((run.result && run.result.node_results) || []).map((r) => h('tr', { testid: 'node-result', dataset: { nodeId: r.node_id, status: r.status } },
      h('td', {}, r.node_id), h('td', {}, statusBadge(r.status)),
      h('td', { testid: 'node-verdict' }, h('span', { class: `status ${r.verdict || 'unknown'}` }, r.verdict || 'unknown')),
      h('td', { testid: 'node-usage' }, usageLine(r.usage)),
      h('td', {}, h('details', {}, h('summary', {}, short(r.output, 90) || '—'), h('pre', {}, text(r.output))))));
    fill(resultBox,
      run.error_message ? h('p', { class: 'error', testid: 'run-error' }, run.error_message) : null,
      run.result && run.result.summary ? h('div', {}, h('h3', {}, 'Summary'), h('pre', { testid: 'result-summary' }, text(run.result.summary))) : null,
      suspectsTable(run.result && run.result.suspects),
      rows.length ? table(['Node', 'Status', 'Verdict', 'Usage', 'Output'], rows) : null,
      run.structured_output !== undefined && run.structured_output !== null
        // The summary above says it in words; the document the schema asked for is a click away.
        ? h('details', {}, h('summary', {}, h('h3', { class: 'inline' }, 'Structured output')),
          h('pre', { testid: 'structured-output' }, JSON.stringify(run.structured_output, null, 2)))
        : null);
    for (const r of (run.result && run.result.node_results) || []) node(r.node_id).setStatus(r.status);
    fill(usage, usageLine(run.usage));
  }

  // The suspects the engine ranked from the tools' verdicts and the topology, causes first; each evidence
  // number is the seq of the tool call in the timeline below.
  function suspectsTable(suspects) {
    if (!suspects || !suspects.length) return null;
    const rows = suspects.map((s) => h('tr', { testid: 'suspect', dataset: { nodeId: s.node_id, rank: String(s.rank) } },
      h('td', {}, String(s.rank)), h('td', {}, s.node_id),
      h('td', {}, h('span', { class: `status ${s.verdict}` }, s.verdict)),
      h('td', {}, h('ul', {}, (s.reasons || []).map((reason) => h('li', {}, reason)))),
      h('td', {}, (s.evidence_seqs || []).map((seq) => [
        h('a', { href: `#/executions/${executionId}`, testid: 'suspect-evidence', onclick: (event) => { event.preventDefault(); timeline.show(seq); } }, `#${seq}`), ' ',
      ]))));
    return h('div', {}, h('h3', {}, 'Suspects'), table(['Rank', 'Node', 'Verdict', 'Reasons', 'Evidence'], rows));
  }

  function onEvent(type, data) {
    const view = data.node_id ? node(data.node_id) : null;
    // Token deltas are live only (no seq): they build the agent's message in its group, never a timeline row.
    if (type === 'agent_token' || type === 'agent_tokens_discarded') {
      timeline.token(type, data);
      return;
    }
    timeline.add(type, data);
    if (view && type !== 'node_complete') view.setStatus('running');
    switch (type) {
      case 'execution_start':
      case 'execution_resumed':
        setRunStatus('running');
        break;
      case 'agent_message':
        timeline.messageDone(data.node_id, data.agent_id);
        break;
      case 'node_complete':
        view.setStatus(data.status);
        liveUsage.set(data.node_id, data.usage);
        view.usage.textContent = usageLine(data.usage);
        fill(usage, usageLine(addUp([...liveUsage.values()])));
        break;
      case 'approval_requested':
        approval({ ...data, status: 'pending' });
        setRunStatus('awaiting_approval');
        break;
      case 'approval_resolved':
        approval({ ...data, status: data.decision === 'approve' ? 'approved' : 'rejected' });
        break;
      case 'execution_complete':
      case 'execution_error':
      case 'execution_cancelled':
        setRunStatus(data.status || (type === 'execution_cancelled' ? 'cancelled' : 'failed'));
        if (data.usage) fill(usage, usageLine(data.usage));
        break;
      default:
        break;
    }
  }

  const cancel = button('Cancel', () => act(cancel, async () => {
    await api('POST', `/executions/${executionId}/cancel`);
    notify('cancel requested');
  }), { class: 'danger', testid: 'execution-cancel' });
  setRunStatus(execution.status);
  showMeta();

  fill(main,
    h('div', { class: 'row' },
      h('h1', { class: 'grow' }, 'Execution ', h('code', {}, executionId.slice(0, 8)),
        team ? [' of ', h('a', { href: `#/teams/${team.team_id}`, testid: 'execution-team' }, team.team_name)] : ' (team deleted)'),
      runStatus, streamState, cancel),
    meta,
    h('p', {}, h('strong', {}, 'Task: '), text(execution.input && execution.input.task)),
    alertPanel(execution.input && execution.input.context),
    // The result first: what the run found, then how it went.
    h('section', { testid: 'run-result' }, h('h2', {}, 'Result'), resultBox),
    h('div', { class: 'cols' },
      h('div', {}, graphBox, h('div', { class: 'legend', 'aria-hidden': 'true' },
        ['pending', 'running', 'success', 'failed', 'skipped', 'timeout', 'cancelled'].map((s) => statusBadge(s)))),
      h('div', {}, h('h2', {}, 'Usage'), usage, h('h2', {}, 'Node teams'), nodeList)),
    approvalsSection,
    // Every stored event, grouped by node team and agent; closed once the run has finished (the result says it).
    timeline.element);

  try {
    for (const item of await listAll(`/executions/${executionId}/approvals`)) approval(item);
  } catch (error) {
    // A service without approvals (404) has none to show; anything else is worth saying.
    if (error.status !== 404) notify(`approvals could not be read: ${error.message}`, 'error');
  }
  const { drawTopology } = await import('../graph.js');
  if (signal.aborted) return;
  graph = drawTopology(graphBox, topology, {
    // A click on a node brings up its team's messages and tool calls.
    onSelect: (nodeId) => timeline.showNode(nodeId),
  });
  signal.addEventListener('abort', () => graph.destroy());
  for (const view of timeline.nodes.values()) graph.setStatus(view.nodeId, view.status);

  const refresh = async () => {
    execution = await api('GET', `/executions/${executionId}`);
    setRunStatus(execution.status);
    showMeta();
    if (!UNFINISHED.has(execution.status)) showResult(execution);
    return execution;
  };
  try {
    await followExecution(executionId, {
      signal,
      onEvent,
      onConnection: (state) => { streamState.textContent = state === 'open' ? 'live' : state; streamState.dataset.state = state; },
      isFinished: async () => !UNFINISHED.has((await refresh()).status),
    });
  } catch (error) {
    if (!signal.aborted) notify(`the event stream failed: ${error.message}`, 'error');
  }
  if (!signal.aborted) await refresh();
}
