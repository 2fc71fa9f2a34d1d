// A run's stored events grouped as the team is: the run and its global supervisor, then one group per node team
// (its supervisor's events) holding one group per agent (its messages, tool calls and approvals, with the
// message being written as tokens stream in). A node team's group is open while it works and closed once it has
// finished, unless the reader opened or closed it; a finished run's groups start closed.

import { fmtCost, fmtDuration, fmtTime, h, json, statusBadge } from './dom.js';

const FINAL_NODE = new Set(['success', 'failed', 'skipped', 'timeout', 'cancelled']);

export function text(value) {
  if (value === null || value === undefined) return '';
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

export function short(value, limit = 160) {
  const s = text(value).replace(/\s+/g, ' ');
  return s.length > limit ? `${s.slice(0, limit - 1)}…` : s;
}

// What one stored event says, as the cell of its row: messages in full, a tool call's input and output a click
// away, every other event in a line.
function details(type, data) {
  switch (type) {
    case 'execution_start': return short(data.input && data.input.task);
    case 'global_supervisor_message': case 'node_supervisor_message': return h('pre', {}, text(data.message));
    case 'agent_message': return h('pre', { testid: 'agent-message' }, text(data.message));
    case 'global_supervisor_decision': return `${short(data.decision, 200)} → ${(data.next_nodes || []).join(', ')}`;
    case 'node_supervisor_decision': return `${short(data.decision, 200)} → ${(data.next_agents || []).join(', ')}`;
    case 'tool_call':
      return h('div', { testid: 'tool-call', dataset: { tool: String(data.tool) } },
        h('strong', {}, String(data.tool)), ' ', statusBadge(String(data.status)), ' ',
        h('span', { class: 'muted' }, fmtDuration(data.duration_ms)),
        h('details', {}, h('summary', {}, 'input / output'), json(data.input), h('pre', {}, text(data.output))));
    case 'node_complete': return statusBadge(String(data.status));
    case 'execution_complete': case 'execution_cancelled':
      return `${data.status || ''} ${data.duration_ms !== undefined ? fmtDuration(data.duration_ms) : ''}`;
    case 'execution_error': return `${data.error_code || ''}: ${short(data.error_message)}`;
    case 'execution_resumed': return `attempt ${data.attempt} on ${data.worker_id} after seq ${data.resumed_after_seq}`;
    case 'approval_requested': return `${data.tool} waits for approval`;
    case 'budget_warning':
      return `budget ${data.budget_id} past its soft limit: ${data.limit_usd !== null ? `${fmtCost(data.spent_usd)} of ${fmtCost(data.limit_usd)}` : `${data.spent_tokens} of ${data.limit_tokens} tokens`}`;
    case 'approval_resolved':
      return `${data.tool || ''} ${data.decision} by ${data.decided_by}${data.comment ? `: ${short(data.comment, 80)}` : ''}`;
    default: return '';
  }
}

function eventTable() {
  const body = h('tbody', {});
  const element = h('table', { class: 'timeline' },
    h('thead', {}, h('tr', {}, ['Seq', 'Time', 'Event', 'Details'].map((t) => h('th', { scope: 'col' }, t)))), body);
  return { element, body };
}

// A <details> the page opens and closes by itself until the reader has opened or closed it (a click or a key on
// its summary, or a link that opened it): ``data-chosen`` marks that.
function group(attrs, summary, ...content) {
  const element = h('details', { class: 'group', ...attrs }, h('summary', {}, summary), ...content);
  element.firstChild.addEventListener('click', () => { element.dataset.chosen = 'true'; });
  return {
    element,
    suggest(open) { if (!element.dataset.chosen) element.open = open; },
  };
}

function openChosen(box) {
  box.open = true;
  box.dataset.chosen = 'true';
}

class AgentGroup {
  constructor(nodeId, agentId) {
    this.count = h('span', { class: 'muted' }, '0 events');
    this.table = eventTable();
    this.tokens = h('div', { class: 'tokens', testid: 'agent-tokens', dataset: { nodeId, agentId }, 'aria-live': 'off' });
    this.group = group({ open: true, testid: 'agent-panel', dataset: { nodeId, agentId } },
      [h('strong', {}, `agent ${agentId}`), ' ', this.count], this.table.element, this.tokens);
  }

  add(row) {
    this.table.body.append(row);
    this.count.textContent = `${this.table.body.childElementCount} events`;
  }
}

export class NodeGroup {
  constructor(nodeId, name, { live, onStatus }) {
    this.nodeId = nodeId;
    this.live = live;
    this.onStatus = onStatus;
    this.status = 'pending';
    const label = name && name !== nodeId ? `${name} (${nodeId})` : nodeId;
    this.item = h('li', { testid: 'node-status', dataset: { nodeId, status: 'pending' } }, h('span', {}, label), statusBadge('pending'));
    this.usage = h('span', { class: 'muted', testid: 'node-live-usage' });
    this.count = h('span', { class: 'muted' }, '0 events');
    this.table = eventTable();
    this.agents = new Map();
    this.agentBox = h('div', {});
    this.group = group({ testid: 'node-panel', dataset: { nodeId } },
      [h('strong', {}, label), ' ', statusBadge('pending'), ' ', this.count, ' ', this.usage], this.table.element, this.agentBox);
    this.panel = this.group.element;
    this.events = 0;
  }

  setStatus(status) {
    // A final status is never turned back into "running" by a late event of the same node.
    if (status === this.status || (FINAL_NODE.has(this.status) && !FINAL_NODE.has(status))) return;
    this.status = status;
    this.item.dataset.status = status;
    for (const badge of [this.item.querySelector('.status'), this.panel.querySelector('summary .status')]) {
      badge.className = `status ${status}`;
      badge.textContent = status;
    }
    if (this.live) this.group.suggest(status === 'running');
    this.onStatus(this.nodeId, status);
  }

  agent(agentId) {
    if (!this.agents.has(agentId)) {
      const agent = new AgentGroup(this.nodeId, agentId);
      this.agentBox.append(agent.group.element);
      this.agents.set(agentId, agent);
    }
    return this.agents.get(agentId);
  }

  add(row, agentId) {
    if (agentId) this.agent(agentId).add(row);
    else this.table.body.append(row);
    this.events += 1;
    this.count.textContent = `${this.events} events`;
  }
}

// ``live``: the run had not finished when the page opened, so groups follow the work as it happens.
export class Timeline {
  constructor({ live, onStatus }) {
    this.live = live;
    this.onStatus = onStatus;
    this.nodes = new Map();
    this.total = 0;
    this.eventCount = h('span', { testid: 'event-count' }, '0');
    this.runTable = eventTable();
    this.nodeBox = h('div', {});
    this.element = h('details', { testid: 'run-timeline', open: live },
      h('summary', {}, h('h2', { class: 'inline' }, 'Event timeline (', this.eventCount, ' events)')),
      h('details', { class: 'group', open: true, testid: 'run-events' },
        h('summary', {}, h('strong', {}, 'Run and global supervisor')), this.runTable.element),
      this.nodeBox);
  }

  node(nodeId, name) {
    if (!this.nodes.has(nodeId)) {
      const view = new NodeGroup(nodeId, name, { live: this.live, onStatus: this.onStatus });
      this.nodes.set(nodeId, view);
      this.nodeBox.append(view.panel);
    }
    return this.nodes.get(nodeId);
  }

  // A stored event: a row in the group of the node team and agent it belongs to.
  add(type, data) {
    const row = h('tr', { testid: 'timeline-event', dataset: { seq: String(data.seq), event: type } },
      h('td', {}, String(data.seq)), h('td', {}, fmtTime(data.timestamp)), h('td', {}, type), h('td', {}, details(type, data)));
    if (data.node_id) this.node(data.node_id).add(row, data.agent_id);
    else this.runTable.body.append(row);
    this.total += 1;
    this.eventCount.textContent = String(this.total);
  }

  // A live token delta (or the discard of an unfinished message): the message its agent is writing.
  token(type, data) {
    if (!data.node_id) return;
    const view = this.node(data.node_id);
    view.setStatus('running');
    const tokens = view.agent(data.agent_id).tokens;
    tokens.textContent = type === 'agent_token' ? tokens.textContent + text(data.delta) : '';
  }

  messageDone(nodeId, agentId) {
    this.node(nodeId).agent(agentId).tokens.textContent = '';
  }

  // Opens the timeline, and every group around it, at one event; false when there is no such event.
  show(seq) {
    const row = this.element.querySelector(`[data-seq="${CSS.escape(String(seq))}"]`);
    if (!row) return false;
    for (let box = row.closest('details'); box; box = box.parentElement.closest('details')) openChosen(box);
    for (const other of this.element.querySelectorAll('.highlight')) other.classList.remove('highlight');
    row.classList.add('highlight');
    row.scrollIntoView({ block: 'center' });
    return true;
  }

  // Opens a node team's group (a click on its node in the graph).
  showNode(nodeId) {
    const view = this.nodes.get(nodeId);
    if (!view) return;
    this.element.open = true;
    openChosen(view.panel);
    view.panel.scrollIntoView({ block: 'start' });
    view.panel.querySelector('summary').focus({ preventScroll: true });
  }
}
