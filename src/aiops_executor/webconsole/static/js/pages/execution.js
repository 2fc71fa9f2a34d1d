// One execution, live: the graph with each node team's status, what its agents say and which tools they call,
// tokens as they stream, usage and cost, then the result. A finished execution replays the same way (its stream
// replays every stored event), so history and the live view are one page.

import { api, can, listAll } from '../api.js';
import { act, append, button, fill, fmtCost, fmtDuration, fmtNumber, fmtTime, h, json, notify, statusBadge } from '../dom.js';
import { followExecution } from '../sse.js';

const UNFINISHED = new Set(['pending', 'running', 'awaiting_approval']);
const FINAL_NODE = new Set(['success', 'failed', 'skipped', 'timeout', 'cancelled']);

function text(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

function short(value, limit = 160) {
  const s = text(value).replace(/\s+/g, ' ');
  return s.length > limit ? `${s.slice(0, limit - 1)}…` : s;
}

function summaryOf(type, data) {
  switch (type) {
    case 'execution_start': return short(data.input && data.input.task);
    case 'global_supervisor_message': case 'node_supervisor_message': case 'agent_message': return short(data.message);
    case 'global_supervisor_decision': return `${short(data.decision, 80)} → ${(data.next_nodes || []).join(', ')}`;
    case 'node_supervisor_decision': return `${short(data.decision, 80)} → ${(data.next_agents || []).join(', ')}`;
    case 'tool_call': return `${data.tool} ${data.status} in ${fmtDuration(data.duration_ms)}`;
    case 'node_complete': return data.status;
    case 'execution_complete': case 'execution_cancelled': return `${data.status || ''} ${data.duration_ms !== undefined ? fmtDuration(data.duration_ms) : ''}`;
    case 'execution_error': return `${data.error_code || ''}: ${short(data.error_message)}`;
    case 'execution_resumed': return `attempt ${data.attempt} on ${data.worker_id} after seq ${data.resumed_after_seq}`;
    case 'approval_requested': return `${data.tool} waits for approval`;
    case 'approval_resolved': return `${data.tool || ''} ${data.decision} by ${data.decided_by}${data.comment ? `: ${short(data.comment, 80)}` : ''}`;
    default: return '';
  }
}

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

class NodeView {
  constructor(nodeId, name, graphRef) {
    this.nodeId = nodeId;
    this.graphRef = graphRef;
    this.status = 'pending';
    this.badge = statusBadge('pending');
    this.item = h('li', { testid: 'node-status', dataset: { nodeId, status: 'pending' } },
      h('span', {}, name && name !== nodeId ? `${name} (${nodeId})` : nodeId), this.badge);
    this.usage = h('span', { class: 'muted', testid: 'node-live-usage' });
    this.supervisor = h('div', {});
    this.agents = new Map();
    this.agentBox = h('div', {});
    this.panel = h('details', { class: 'panel', open: true, testid: 'node-panel', dataset: { nodeId } },
      h('summary', {}, h('strong', {}, nodeId), ' ', this.badge.cloneNode(true), ' ', this.usage),
      this.supervisor, this.agentBox);
  }

  setStatus(status) {
    // A final status is never turned back into "running" by a late event of the same node.
    if (FINAL_NODE.has(this.status) && !FINAL_NODE.has(status)) return;
    this.status = status;
    this.item.dataset.status = status;
    for (const badge of [this.badge, this.panel.querySelector('summary .status')]) {
      badge.className = `status ${status}`;
      badge.textContent = status;
    }
    const graph = this.graphRef();
    if (graph) graph.setStatus(this.nodeId, status);
  }

  agent(agentId) {
    if (!this.agents.has(agentId)) {
      const tokens = h('div', { class: 'tokens', testid: 'agent-tokens', dataset: { nodeId: this.nodeId, agentId }, 'aria-live': 'off' });
      const feed = h('div', { class: 'feed' });
      const box = h('div', { testid: 'agent-panel', dataset: { nodeId: this.nodeId, agentId } }, h('h3', {}, `agent ${agentId}`), feed, tokens);
      this.agentBox.append(box);
      this.agents.set(agentId, { feed, tokens });
    }
    return this.agents.get(agentId);
  }
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
  const nodes = new Map();
  const nodeList = h('ul', { class: 'node-list', testid: 'node-list', 'aria-label': 'Node teams' });
  const nodePanels = h('div', {});
  const graphBox = h('div', { class: 'graph', testid: 'run-graph', role: 'img', 'aria-label': 'Topology graph coloured by node status' });
  const runStatus = h('span', { class: `status ${execution.status}`, testid: 'run-status', role: 'status' }, execution.status);
  const streamState = h('span', { class: 'muted', testid: 'stream-state' }, '');
  const meta = h('p', { class: 'muted' });
  const usage = h('p', { testid: 'usage' }, usageLine(execution.usage));
  const globalFeed = h('div', { class: 'feed', testid: 'global-feed' });
  const resultBox = h('div', { testid: 'result' });
  const timelineBody = h('tbody', {});
  const eventCount = h('span', { testid: 'event-count' }, '0');
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
    if (!nodes.has(nodeId)) {
      const view = new NodeView(nodeId, name, () => graph);
      nodes.set(nodeId, view);
      nodeList.append(view.item);
      nodePanels.append(view.panel);
    }
    return nodes.get(nodeId);
  }
  const topology = team ? team.topology : { nodes: [], edges: [] };
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
      rows.length ? h('table', {}, h('thead', {}, h('tr', {}, ['Node', 'Status', 'Verdict', 'Usage', 'Output'].map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows)) : null,
      run.structured_output !== undefined && run.structured_output !== null
        ? h('div', {}, h('h3', {}, 'Structured output'), h('pre', { testid: 'structured-output' }, JSON.stringify(run.structured_output, null, 2)))
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
        h('a', { href: `#/executions/${executionId}`, testid: 'suspect-evidence', onclick: (event) => { event.preventDefault(); showEvent(seq); } }, `#${seq}`), ' ',
      ]))));
    return h('div', {}, h('h3', {}, 'Suspects'),
      h('table', {}, h('thead', {}, h('tr', {}, ['Rank', 'Node', 'Verdict', 'Reasons', 'Evidence'].map((t) => h('th', { scope: 'col' }, t)))), h('tbody', {}, rows)));
  }

  // Opens the timeline at one event (a suspect's evidence is the seq of its tool call).
  function showEvent(seq) {
    const timelineBox = main.querySelector('[data-testid="run-timeline"]');
    const row = timelineBody.querySelector(`[data-seq="${CSS.escape(String(seq))}"]`);
    if (!timelineBox || !row) return;
    timelineBox.open = true;
    for (const other of timelineBody.querySelectorAll('.highlight')) other.classList.remove('highlight');
    row.classList.add('highlight');
    row.scrollIntoView({ block: 'center' });
  }

  function feedItem(label, body, attrs = {}) {
    return h('div', { class: 'item', ...attrs }, h('span', { class: 'muted' }, label), ' ', body);
  }

  function onEvent(type, data) {
    // Token deltas are live only (no seq): they build the agent's message in its panel, never a timeline row.
    if (type === 'agent_token' || type === 'agent_tokens_discarded') {
      const view = data.node_id ? node(data.node_id) : null;
      if (!view) return;
      view.setStatus('running');
      const tokens = view.agent(data.agent_id).tokens;
      tokens.textContent = type === 'agent_token' ? tokens.textContent + text(data.delta) : '';
      return;
    }
    timelineBody.append(h('tr', { testid: 'timeline-event', dataset: { seq: String(data.seq), event: type } },
      h('td', {}, String(data.seq)), h('td', {}, fmtTime(data.timestamp)), h('td', {}, type),
      h('td', {}, [data.node_id, data.agent_id].filter(Boolean).join(' / ')), h('td', {}, summaryOf(type, data))));
    eventCount.textContent = String(timelineBody.childElementCount);
    const view = data.node_id ? node(data.node_id) : null;
    if (view && type !== 'node_complete') view.setStatus('running');
    switch (type) {
      case 'execution_start':
      case 'execution_resumed':
        setRunStatus('running');
        break;
      case 'global_supervisor_message':
        globalFeed.append(feedItem('message', h('pre', {}, text(data.message))));
        break;
      case 'global_supervisor_decision':
        globalFeed.append(feedItem('decision', `${text(data.decision)} → ${(data.next_nodes || []).join(', ')}`));
        break;
      case 'node_supervisor_message':
        view.supervisor.append(feedItem('supervisor', h('pre', {}, text(data.message))));
        break;
      case 'node_supervisor_decision':
        view.supervisor.append(feedItem('supervisor decision', `${text(data.decision)} → ${(data.next_agents || []).join(', ')}`));
        break;
      case 'agent_message': {
        const agent = view.agent(data.agent_id);
        agent.tokens.textContent = '';
        agent.feed.append(feedItem('message', h('pre', { testid: 'agent-message' }, text(data.message))));
        break;
      }
      case 'tool_call':
        view.agent(data.agent_id).feed.append(h('div', { class: 'item', testid: 'tool-call', dataset: { tool: String(data.tool) } },
          h('strong', {}, String(data.tool)), ' ', statusBadge(String(data.status)), ' ', h('span', { class: 'muted' }, fmtDuration(data.duration_ms)),
          h('details', {}, h('summary', {}, 'input / output'), json(data.input), h('pre', {}, text(data.output)))));
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

  // Every stored event in order; collapsed once the run has finished (the result and the node teams say it).
  const timeline = h('details', { testid: 'run-timeline', open: UNFINISHED.has(execution.status) },
    h('summary', {}, h('h2', { class: 'inline' }, 'Event timeline (', eventCount, ' events)')),
    h('table', { class: 'timeline' },
      h('thead', {}, h('tr', {}, ['Seq', 'Time', 'Event', 'Node / agent', 'Details'].map((t) => h('th', { scope: 'col' }, t)))),
      timelineBody));

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
        ['pending', 'running', 'success', 'failed', 'skipped', 'timeout', 'cancelled'].map((s) => statusBadge(s))), nodeList),
      h('div', {}, h('h2', {}, 'Usage'), usage, h('h2', {}, 'Global supervisor'), globalFeed)),
    approvalsSection,
    h('h2', {}, 'Node teams'), nodePanels,
    timeline);

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
    onSelect: (nodeId) => {
      const view = nodes.get(nodeId);
      if (!view) return;
      view.panel.open = true;
      view.panel.scrollIntoView({ block: 'start' });
      view.panel.querySelector('summary').focus({ preventScroll: true });
    },
  });
  signal.addEventListener('abort', () => graph.destroy());
  for (const view of nodes.values()) graph.setStatus(view.nodeId, view.status);

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
