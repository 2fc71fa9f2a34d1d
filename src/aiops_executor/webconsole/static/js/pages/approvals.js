// Every tool call that waits for a person, across the runs the user may see, newest first: the run, node, agent,
// tool and its input, with approve and reject (and a comment) for operators. Below them, the calls decided in
// those runs, with who decided and when. The navigation's badge (``watchPendingApprovals``) keeps the count of
// waiting calls up to date on every page.

import { api, can, listAll } from '../api.js';
import { act, button, fill, fmtTime, h, json, notify, table } from '../dom.js';

// How often the navigation's count is read again (a decision made here updates it at once).
const BADGE_INTERVAL_MS = 10_000;

// The calls that wait, newest request first (one query across runs), and the waiting runs (for their tasks).
async function waitingApprovals() {
  const [approvals, runs] = await Promise.all([
    listAll('/approvals', { status: 'pending' }),
    listAll('/executions', { status: 'awaiting_approval' }),
  ]);
  return { runs: new Map(runs.map((run) => [run.execution_id, run])), approvals };
}

let badgeTimer = null;
export async function refreshPendingCount() {
  const badge = document.getElementById('approvals-count');
  if (!badge) return;
  try {
    // One request whatever the number of waiting runs: only the count is read.
    const pending = (await api('GET', '/approvals', undefined, { query: { status: 'pending', size: 1 } })).total;
    badge.textContent = String(pending);
    badge.hidden = pending === 0;
  } catch {
    // The count is a convenience: a failed read leaves the last one (the page itself says what failed).
  }
}

export function watchPendingApprovals() {
  if (badgeTimer !== null) return;
  refreshPendingCount();
  badgeTimer = window.setInterval(refreshPendingCount, BADGE_INTERVAL_MS);
}

export function stopWatchingApprovals() {
  if (badgeTimer !== null) window.clearInterval(badgeTimer);
  badgeTimer = null;
}

function approvalRow(item, run, onDecided) {
  const comment = h('input', {
    'aria-label': `Comment on ${item.tool} (handed to the agent with a rejection)`, placeholder: 'comment (optional)', testid: 'approval-comment',
  });
  const decide = (decision, el) => act(el, async () => {
    const body = { decision };
    if (comment.value.trim()) body.comment = comment.value.trim();
    const decided = await api('POST', `/executions/${item.execution_id}/approvals/${item.approval_id}`, body);
    notify(`${decided.tool}: ${decided.status}`);
    await onDecided();
  });
  const approve = button('Approve', () => decide('approve', approve), { testid: 'approval-approve' });
  const reject = button('Reject', () => decide('reject', reject), { class: 'danger', testid: 'approval-reject' });
  const pending = item.status === 'pending';
  return h('tr', { testid: pending ? 'approval-row' : 'approval-decided-row', dataset: { executionId: item.execution_id, approvalId: item.approval_id } },
    h('td', {}, fmtTime(item.created_at)),
    h('td', {}, h('a', { href: `#/executions/${item.execution_id}` }, run ? String(run.input?.task || '').slice(0, 60) || item.execution_id : item.execution_id)),
    h('td', {}, [item.node_id, item.agent_id].filter(Boolean).join(' / ')),
    h('td', {}, h('code', {}, item.tool)),
    h('td', {}, json(item.input || {})),
    pending
      ? h('td', {}, can.operate() ? h('div', { class: 'row' }, comment, approve, reject) : h('span', { class: 'muted' }, 'waiting'),
        h('div', { class: 'muted' }, `rejected automatically if undecided by ${fmtTime(item.expires_at)}`))
      : h('td', {}, h('span', { class: `status ${item.status === 'approved' ? 'success' : 'failed'}` }, item.status),
        ` by ${item.decided_by || 'unknown'} at ${fmtTime(item.decided_at)}${item.comment ? `: ${item.comment}` : ''}`));
}

function approvalsTable(rows) {
  return table(['Asked', 'Run', 'Node / agent', 'Tool', 'Input', ''], rows);
}

// The latest decisions, whichever runs they were in; the newest runs, for their tasks.
const RECENT = 20;
async function recentlyDecided() {
  const [approved, rejected, recent] = await Promise.all([
    api('GET', '/approvals', undefined, { query: { status: 'approved', size: RECENT } }),
    api('GET', '/approvals', undefined, { query: { status: 'rejected', size: RECENT } }),
    api('GET', '/executions', undefined, { query: { size: RECENT } }),
  ]);
  return { runs: new Map(recent.items.map((run) => [run.execution_id, run])), approvals: [...approved.items, ...rejected.items] };
}

export async function renderApprovals(main) {
  document.title = 'Approvals — aiops-agent-executor';
  const draw = async () => {
    const [{ runs: waiting, approvals: pending }, recent] = await Promise.all([waitingApprovals(), recentlyDecided()]);
    const runs = new Map([...recent.runs, ...waiting]);
    const decided = recent.approvals;
    decided.sort((a, b) => ((a.decided_at || '') < (b.decided_at || '') ? 1 : -1));
    fill(main,
      h('h1', {}, 'Approvals'),
      h('p', { class: 'muted' }, 'Tool calls that wait for a person, in every run you may see. A run resumes once all of its calls are decided.'),
      pending.length
        ? approvalsTable(pending.map((a) => approvalRow(a, runs.get(a.execution_id), redraw)))
        : h('p', { class: 'muted', testid: 'approvals-empty' }, 'Nothing waits for a decision.'),
      decided.length ? [h('h2', {}, 'Decided recently'), approvalsTable(decided.map((a) => approvalRow(a, runs.get(a.execution_id), redraw)))] : null);
  };
  const redraw = async () => {
    await draw();
    await refreshPendingCount();
  };
  await draw();
}
