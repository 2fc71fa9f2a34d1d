import { api, can, listAll } from '../api.js';
import { act, button, fill, fmtTime, h, linkRow, notify, statusBadge } from '../dom.js';
import { renderOutline } from '../outline.js';
import { parseDocument, problemsOf } from '../topology.js';

export async function renderTeams(main) {
  const teams = await listAll('/teams');
  fill(
    main,
    h('div', { class: 'row' },
      h('h1', { class: 'grow' }, 'Teams'),
      can.operate() ? h('a', { href: '#/teams/new', testid: 'team-new' }, 'New team') : null),
    teams.length === 0
      ? h('p', { class: 'muted' }, 'No team yet.')
      : h('table', {},
        h('thead', {}, h('tr', {}, ['Name', 'Status', 'Nodes', 'Agents', 'Edges', 'Depth', 'Updated'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, teams.map((team) => linkRow(`#/teams/${team.team_id}`, { testid: 'team-row', dataset: { teamName: team.team_name } },
          h('td', {}, h('a', { href: `#/teams/${team.team_id}` }, team.team_name)),
          h('td', {}, statusBadge(team.status)),
          h('td', {}, team.topology_summary.node_count),
          h('td', {}, team.topology_summary.agent_count),
          h('td', {}, team.topology_summary.edge_count),
          h('td', {}, team.topology_summary.depth),
          h('td', {}, fmtTime(team.updated_at)))))),
  );
}

const EXAMPLE = `# A team in YAML (or paste JSON). model_provider / model_id name a provider and one of its models.
team_name: my-team
timeout_seconds: 300
topology:
  nodes:
    - node_id: api
      node_name: API
      node_type: service
      attributes: {url: "http://127.0.0.1:8000/health"}
      agents:
        - {agent_id: probe, agent_name: Prober, model_provider: local-sim, model_id: sim-1, tools: [http_check]}
      supervisor_config: {model_provider: local-sim, model_id: sim-1, coordination_strategy: round_robin}
  edges: []
  global_supervisor: {model_provider: local-sim, model_id: sim-1, coordination_strategy: hierarchical}
`;

// The editor shared by "new team" and a team's own page: a text area (paste or upload), the problems laid out
// node by node, and the graph. `submit(document)` sends it and throws the API's error.
export function teamEditor({ initialText, submitLabel, submit, extraButtons = [] }) {
  const text = h('textarea', { rows: 22, spellcheck: 'false', testid: 'team-document', 'aria-label': 'Team document (JSON or YAML)' });
  text.value = initialText;
  const file = h('input', { type: 'file', accept: '.json,.yaml,.yml,application/json,text/yaml', testid: 'team-file', 'aria-label': 'Upload a team file' });
  const outlineBox = h('div', { testid: 'team-outline' });
  const graphBox = h('div', { class: 'graph', testid: 'team-graph', role: 'img', 'aria-label': 'Topology graph' });
  let graph = null;

  async function show(document, problems) {
    const outline = renderOutline(document, problems);
    fill(outlineBox, outline.element);
    const { drawTopology } = await import('../graph.js');
    if (graph) graph.destroy();
    graph = drawTopology(graphBox, (document && document.topology) || {}, {
      problemNodes: outline.problemNodes,
      problemEdges: outline.problemEdges,
    });
    graphBox.dataset.nodes = String(graph.cy.nodes().length);
    graphBox.dataset.edges = String(graph.cy.edges().length);
  }

  function parsed() {
    const result = parseDocument(text.value);
    if (result.error) {
      fill(outlineBox, h('p', { class: 'error', testid: 'parse-error', role: 'alert' }, result.error));
      return null;
    }
    if (!result.value || typeof result.value !== 'object' || Array.isArray(result.value)) {
      fill(outlineBox, h('p', { class: 'error', testid: 'parse-error', role: 'alert' }, 'the document must be an object (a team: team_name, topology, ...)'));
      return null;
    }
    return result.value;
  }

  file.addEventListener('change', async () => {
    const chosen = file.files && file.files[0];
    if (!chosen) return;
    text.value = await chosen.text();
    const document = parsed();
    if (document) await show(document, []);
  });

  const preview = button('Preview graph', async () => {
    const document = parsed();
    if (document) await show(document, []);
  }, { class: 'secondary', testid: 'team-preview' });

  const send = button(submitLabel, () => act(send, async () => {
    const document = parsed();
    if (!document) return;
    try {
      await submit(document);
    } catch (error) {
      if (!error.status) throw error;
      notify(error.message, 'error');
      await show(document, problemsOf(error));
    }
  }), { testid: 'team-submit' });

  const element = h('div', { class: 'cols' },
    h('div', {},
      h('div', { class: 'row' }, h('label', { class: 'grow' }, 'Upload a JSON or YAML file', file)),
      text,
      h('div', { class: 'row' }, can.operate() ? send : null, preview, ...extraButtons)),
    h('div', {}, h('h2', {}, 'Graph'), graphBox, h('h2', {}, 'Problems'), outlineBox));
  return { element, show, parsed, text, destroy: () => graph && graph.destroy() };
}

// A topology from Kubernetes manifests (POST /topologies/import/kubernetes) put into the editor as a team document
// to review, name and create.
function kubernetesImport(editor) {
  const manifests = h('textarea', { rows: 8, spellcheck: 'false', testid: 'import-manifests', 'aria-label': 'Kubernetes manifests (multi-document YAML)' });
  const file = h('input', { type: 'file', accept: '.yaml,.yml,.json', testid: 'import-file', 'aria-label': 'Upload manifests' });
  const name = h('input', { value: 'imported-team', testid: 'import-team-name' });
  const provider = h('input', { value: 'local-sim', testid: 'import-provider' });
  const model = h('input', { value: 'sim-1', testid: 'import-model' });
  const notes = h('div', { testid: 'import-notes' });
  file.addEventListener('change', async () => {
    if (file.files && file.files[0]) manifests.value = await file.files[0].text();
  });
  const run = button('Import', () => act(run, async () => {
    fill(notes);
    let result;
    try {
      result = await api('POST', '/topologies/import/kubernetes', {
        manifests: manifests.value, defaults: { model_provider: provider.value, model_id: model.value },
      });
    } catch (error) {
      const where = error.details && error.details.line ? ` (document ${error.details.document}, line ${error.details.line})` : '';
      const problems = error.details && Array.isArray(error.details.errors)
        ? error.details.errors.map((e) => `${(e.loc || []).join('.')}: ${e.message}`).join('; ') : '';
      fill(notes, h('p', { class: 'error', role: 'alert' }, error.status === 404 ? 'this service has no Kubernetes import' : `${error.message}${where}${problems ? ` — ${problems}` : ''}`));
      return;
    }
    const document = { team_name: name.value, timeout_seconds: 300, topology: result.topology };
    editor.text.value = JSON.stringify(document, null, 2);
    await editor.show(document, []);
    fill(notes,
      h('p', { class: 'ok' }, `imported ${result.topology.nodes.length} nodes and ${result.topology.edges.length} edges into the editor; review it, then create the team`),
      result.warnings.length ? h('ul', { class: 'problems' }, result.warnings.map((w) => h('li', { class: 'warning', testid: 'import-warning' },
        w.resource ? `${w.resource}: ` : '', w.message))) : null);
  }), { testid: 'import-submit', class: 'secondary' });
  return h('details', { class: 'panel', testid: 'import-panel' },
    h('summary', {}, 'Import from Kubernetes manifests'),
    h('div', { class: 'row' }, h('label', {}, 'Upload manifests', file), h('label', {}, 'Team name', name),
      h('label', {}, 'Model provider', provider), h('label', {}, 'Model', model)),
    manifests, h('div', { class: 'row' }, run), notes);
}

export async function renderNewTeam(main, _params, signal) {
  if (!can.operate()) {
    fill(main, h('p', {}, 'Your role may not create teams.'));
    return;
  }
  const editor = teamEditor({
    initialText: EXAMPLE,
    submitLabel: 'Create team',
    submit: async (document) => {
      const created = await api('POST', '/teams', document);
      notify(`team created (${created.topology_summary.node_count} nodes)`, 'info', { across: true });
      window.location.hash = `#/teams/${created.team_id}`;
    },
  });
  signal.addEventListener('abort', editor.destroy);
  fill(main, h('h1', {}, 'New team'), kubernetesImport(editor), editor.element);
}
