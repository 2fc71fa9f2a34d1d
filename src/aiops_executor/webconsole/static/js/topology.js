// Team documents as the user writes them (JSON or YAML), and the API's problem reports mapped back onto the
// node, agent or edge each one concerns.

import { load as loadYaml } from '../vendor/js-yaml/js-yaml.esm.min.mjs';

// Parses a team document. Returns {value} or {error: "line N: ..."}; JSON first (it is also YAML, but JSON's
// messages are the clearer ones for JSON), YAML when the text does not look like JSON.
export function parseDocument(text) {
  const trimmed = text.trim();
  if (!trimmed) return { error: 'the document is empty' };
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    try {
      return { value: JSON.parse(trimmed) };
    } catch (error) {
      return { error: `not valid JSON: ${error.message}` };
    }
  }
  try {
    return { value: loadYaml(text) };
  } catch (error) {
    const line = error.mark && Number.isInteger(error.mark.line) ? `line ${error.mark.line + 1}: ` : '';
    return { error: `not valid YAML: ${line}${error.reason || error.message}` };
  }
}

// A 422 VALIDATION_ERROR's `loc` (["body", "topology", "nodes", 0, "node_id"]) as the path the topology
// validator uses ("topology.nodes[0].node_id").
export function locToPath(loc) {
  let path = '';
  for (const part of loc || []) {
    if (part === 'body') continue;
    if (typeof part === 'number') path += `[${part}]`;
    else path += path ? `.${part}` : String(part);
  }
  return path;
}

// Every problem of an API error, as {path, message, code, severity}.
export function problemsOf(error) {
  const details = (error && error.details) || {};
  if (Array.isArray(details.errors)) {
    return details.errors.map((problem) => ({
      path: problem.path !== undefined ? String(problem.path) : locToPath(problem.loc),
      message: problem.message || problem.msg || '',
      code: problem.code || problem.type || '',
      severity: 'error',
    }));
  }
  if (error && error.code === 'TEAM_NAME_EXISTS') return [{ path: 'team_name', message: error.message, code: error.code, severity: 'error' }];
  return [{ path: '', message: error ? error.message : 'unknown error', code: error && error.code, severity: 'error' }];
}

const NODE = /^topology\.nodes\[(\d+)\](?:\.agents\[(\d+)\])?/;
const EDGE = /^topology\.edges\[(\d+)\]/;

// Sorts problems by what they concern: {team: [...], nodes: Map(index -> {own: [], agents: Map(index -> [])}),
// edges: Map(index -> [])}.
export function placeProblems(problems) {
  const placed = { team: [], nodes: new Map(), edges: new Map() };
  for (const problem of problems) {
    const node = NODE.exec(problem.path);
    const edge = EDGE.exec(problem.path);
    if (node) {
      const index = Number(node[1]);
      if (!placed.nodes.has(index)) placed.nodes.set(index, { own: [], agents: new Map() });
      const entry = placed.nodes.get(index);
      if (node[2] === undefined) entry.own.push(problem);
      else {
        const agent = Number(node[2]);
        if (!entry.agents.has(agent)) entry.agents.set(agent, []);
        entry.agents.get(agent).push(problem);
      }
    } else if (edge) {
      const index = Number(edge[1]);
      if (!placed.edges.has(index)) placed.edges.set(index, []);
      placed.edges.get(index).push(problem);
    } else {
      placed.team.push(problem);
    }
  }
  return placed;
}

// The part of the team body a team page edits (what PUT /teams/{id} takes).
export function editableTeam(team) {
  return {
    team_name: team.team_name,
    description: team.description,
    timeout_seconds: team.timeout_seconds,
    max_iterations: team.max_iterations,
    topology: team.topology,
  };
}
