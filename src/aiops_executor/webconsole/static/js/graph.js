// The topology as a graph: Cytoscape.js draws it, its dagre extension lays it out (dependency direction top to
// bottom). Loaded on demand (dynamic import) so the first page of the console stays light.

import cytoscape from '../vendor/cytoscape/cytoscape.esm.min.mjs';
import cytoscapeDagre from '../vendor/cytoscape-dagre/cytoscape-dagre.min.mjs';

cytoscape.use(cytoscapeDagre);

// Shapes by node type; any other type is an ellipse.
const SHAPES = {
  service: 'round-rectangle',
  api: 'round-rectangle',
  gateway: 'diamond',
  ingress: 'diamond',
  loadbalancer: 'diamond',
  database: 'barrel',
  db: 'barrel',
  cache: 'hexagon',
  redis: 'hexagon',
  queue: 'rhomboid',
  host: 'rectangle',
  deployment: 'round-rectangle',
  statefulset: 'barrel',
  daemonset: 'rectangle',
};
// Edge styles by relation: ordering relations are solid or dashed arrows; the others lighter.
const RELATIONS = {
  calls: { 'line-style': 'solid', width: 2 },
  depends_on: { 'line-style': 'dashed', width: 2 },
  data_flow: { 'line-style': 'dotted', width: 3 },
  integrates: { 'line-style': 'solid', width: 1 },
  monitors: { 'line-style': 'dashed', width: 1 },
};
export const STATUSES = ['pending', 'running', 'success', 'failed', 'skipped', 'timeout', 'cancelled'];

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function style() {
  const fg = cssVar('--fg');
  const bg = cssVar('--bg');
  const rules = [
    {
      selector: 'node',
      style: {
        label: 'data(label)',
        color: fg,
        'font-size': 11,
        'text-valign': 'bottom',
        'text-margin-y': 4,
        'text-wrap': 'ellipsis',
        'text-max-width': 140,
        width: 44,
        height: 30,
        'background-color': cssVar('--st-pending'),
        'border-width': 2,
        'border-color': bg,
        shape: 'ellipse',
      },
    },
    {
      selector: 'edge',
      style: {
        width: 2,
        'curve-style': 'bezier',
        'target-arrow-shape': 'triangle',
        'line-color': cssVar('--muted'),
        'target-arrow-color': cssVar('--muted'),
        label: 'data(relation)',
        'font-size': 9,
        color: cssVar('--muted'),
        'text-rotation': 'autorotate',
        'text-background-color': bg,
        'text-background-opacity': 1,
      },
    },
    { selector: 'node.problem', style: { 'border-color': cssVar('--danger'), 'border-width': 4 } },
    { selector: 'edge.problem', style: { 'line-color': cssVar('--danger'), 'target-arrow-color': cssVar('--danger') } },
    { selector: 'node:selected', style: { 'border-color': cssVar('--focus'), 'border-width': 4 } },
  ];
  for (const [type, shape] of Object.entries(SHAPES)) rules.push({ selector: `node[type = "${type}"]`, style: { shape } });
  for (const [relation, css] of Object.entries(RELATIONS)) rules.push({ selector: `edge[relation = "${relation}"]`, style: css });
  for (const status of STATUSES) {
    rules.push({ selector: `node[status = "${status}"]`, style: { 'background-color': cssVar(`--st-${status}`) } });
  }
  return rules;
}

// Draws `topology` ({nodes, edges}) into `container`. `problemNodes` / `problemEdges`: node ids and edge indexes
// to mark. `onSelect(nodeId)` hears clicks on nodes. Returns {setStatus, destroy, cy}.
export function drawTopology(container, topology, { problemNodes = new Set(), problemEdges = new Set(), onSelect } = {}) {
  const nodes = Array.isArray(topology && topology.nodes) ? topology.nodes : [];
  const edges = Array.isArray(topology && topology.edges) ? topology.edges : [];
  const ids = new Set();
  const elements = [];
  for (const node of nodes) {
    if (!node || typeof node.node_id !== 'string' || ids.has(node.node_id)) continue;
    ids.add(node.node_id);
    elements.push({
      group: 'nodes',
      data: {
        id: node.node_id,
        label: node.node_name ? `${node.node_name}` : node.node_id,
        type: String(node.node_type || '').toLowerCase(),
        status: 'pending',
      },
      classes: problemNodes.has(node.node_id) ? 'problem' : '',
    });
  }
  edges.forEach((edge, index) => {
    if (!edge || !ids.has(edge.source_node_id) || !ids.has(edge.target_node_id)) return;
    elements.push({
      group: 'edges',
      data: {
        id: `edge-${index}`,
        source: edge.source_node_id,
        target: edge.target_node_id,
        relation: String(edge.relation_type || ''),
      },
      classes: problemEdges.has(index) ? 'problem' : '',
    });
  });
  const cy = cytoscape({
    container,
    elements,
    style: style(),
    layout: { name: 'dagre', rankDir: 'TB', nodeSep: 30, rankSep: 60, animate: false, fit: true, padding: 20 },
    wheelSensitivity: 0.3,
    minZoom: 0.1,
    maxZoom: 3,
    boxSelectionEnabled: false,
  });
  // Fitting a small graph would blow its few nodes up to the maximum zoom.
  if (cy.zoom() > 1.25) {
    cy.zoom(1.25);
    cy.center();
  }
  if (onSelect) cy.on('tap', 'node', (event) => onSelect(event.target.id()));
  // The colours follow the page's light or dark scheme when it changes.
  const scheme = window.matchMedia('(prefers-color-scheme: dark)');
  const restyle = () => cy.style(style());
  scheme.addEventListener('change', restyle);
  return {
    cy,
    setStatus(nodeId, status) {
      const element = cy.getElementById(nodeId);
      if (element.nonempty()) element.data('status', status);
    },
    destroy() {
      scheme.removeEventListener('change', restyle);
      cy.destroy();
    },
  };
}
