// A team document laid out node by node, agent by agent and edge by edge, with each validation problem next to
// what it concerns (and the problem nodes and edges marked on the graph).

import { h } from './dom.js';
import { placeProblems } from './topology.js';

function problemList(problems, attrs = {}) {
  if (!problems || problems.length === 0) return null;
  return h(
    'ul',
    { class: 'problems', ...attrs },
    problems.map((problem) =>
      h(
        'li',
        { class: problem.severity === 'warning' ? 'warning' : '', testid: 'problem', dataset: { path: problem.path } },
        problem.path ? h('code', {}, problem.path) : null,
        problem.path ? ': ' : '',
        problem.message,
        problem.code ? h('span', { class: 'muted' }, ` (${problem.code})`) : null,
      ),
    ),
  );
}

function label(value, fallback) {
  return typeof value === 'string' || typeof value === 'number' ? String(value) : fallback;
}

// Returns {element, problemNodes: Set(node_id), problemEdges: Set(edge index)}.
export function renderOutline(document, problems) {
  const placed = placeProblems(problems);
  const topology = (document && typeof document === 'object' && document.topology) || {};
  const nodes = Array.isArray(topology.nodes) ? topology.nodes : [];
  const edges = Array.isArray(topology.edges) ? topology.edges : [];
  const problemNodes = new Set();
  const problemEdges = new Set();
  const errorCount = problems.filter((p) => p.severity !== 'warning').length;
  const warningCount = problems.length - errorCount;

  const parts = [
    h(
      'p',
      { testid: 'problem-count', class: errorCount ? 'error' : 'ok' },
      errorCount ? `${errorCount} problem(s) to fix` : 'No problems',
      warningCount ? `, ${warningCount} warning(s)` : '',
    ),
  ];
  if (placed.team.length) {
    parts.push(h('div', { class: 'outline-node has-problems', testid: 'team-problems' }, h('strong', {}, 'Team'), problemList(placed.team)));
  }
  nodes.forEach((node, index) => {
    const entry = placed.nodes.get(index) || { own: [], agents: new Map() };
    const nodeId = label(node && node.node_id, `nodes[${index}]`);
    const agents = node && Array.isArray(node.agents) ? node.agents : [];
    const count = entry.own.length + [...entry.agents.values()].reduce((sum, list) => sum + list.length, 0);
    if (count) problemNodes.add(nodeId);
    parts.push(
      h(
        'div',
        { class: `outline-node${count ? ' has-problems' : ''}`, testid: 'node-problems', dataset: { nodeId, problems: String(count) } },
        h('strong', {}, nodeId),
        ' ',
        h('span', { class: 'muted' }, label(node && node.node_type, ''), node && node.node_name ? ` · ${node.node_name}` : ''),
        problemList(entry.own),
        agents.map((agent, agentIndex) => {
          const agentProblems = entry.agents.get(agentIndex) || [];
          return h(
            'div',
            { class: 'outline-agent', testid: 'agent-problems', dataset: { nodeId, agentId: label(agent && agent.agent_id, `agents[${agentIndex}]`) } },
            'agent ',
            h('code', {}, label(agent && agent.agent_id, `agents[${agentIndex}]`)),
            agent && agent.model_provider ? h('span', { class: 'muted' }, ` · ${agent.model_provider}/${agent.model_id}`) : null,
            problemList(agentProblems),
          );
        }),
        // Problems of agents beyond the list (an index the document does not have) still show.
        [...entry.agents.entries()].filter(([i]) => i >= agents.length).map(([, list]) => problemList(list)),
      ),
    );
  });
  for (const [index] of placed.nodes) {
    if (index >= nodes.length) parts.push(problemList(placed.nodes.get(index).own));
  }
  if (edges.length || placed.edges.size) {
    parts.push(h('h3', {}, 'Edges'));
    edges.forEach((edge, index) => {
      const edgeProblems = placed.edges.get(index) || [];
      if (edgeProblems.length) problemEdges.add(index);
      parts.push(
        h(
          'div',
          { class: `outline-node${edgeProblems.length ? ' has-problems' : ''}`, testid: 'edge-problems', dataset: { edgeIndex: String(index) } },
          h('code', {}, `${label(edge && edge.source_node_id, '?')} → ${label(edge && edge.target_node_id, '?')}`),
          ' ',
          h('span', { class: 'muted' }, label(edge && edge.relation_type, '')),
          problemList(edgeProblems),
        ),
      );
    });
  }
  return { element: h('div', { testid: 'outline' }, parts), problemNodes, problemEdges };
}
