// The console's shell: sign-in, navigation and the hash routes (#/teams, #/teams/<id>, #/executions/<id>, ...).
// A page is a function (main, params, signal) that fills `main`; `signal` aborts when the user leaves it.

import { currentUser, onSignedOut, resumeSession, signedIn, signOut } from './api.js';
import { clearNoticeForNewPage, errorText, fill, notify } from './dom.js';
import { renderLogin } from './pages/login.js';

const routes = [
  [/^#\/teams\/new$/, () => import('./pages/teams.js').then((m) => m.renderNewTeam)],
  [/^#\/teams\/([0-9a-f-]{36})$/, () => import('./pages/team.js').then((m) => m.renderTeam)],
  [/^#\/teams(?:\?.*)?$/, () => import('./pages/teams.js').then((m) => m.renderTeams)],
  [/^#\/executions\/([0-9a-f-]{36})$/, () => import('./pages/execution.js').then((m) => m.renderExecution)],
  [/^#\/executions(?:\?.*)?$/, () => import('./pages/history.js').then((m) => m.renderHistory)],
  [/^#\/llm\/([0-9a-f-]{36})$/, () => import('./pages/provider.js').then((m) => m.renderProvider)],
  [/^#\/llm$/, () => import('./pages/llm.js').then((m) => m.renderProviders)],
  [/^#\/tool-servers\/([0-9a-f-]{36})(?:\?(refresh))?$/, () => import('./pages/tool_servers.js').then((m) => m.renderToolServer)],
  [/^#\/tool-servers$/, () => import('./pages/tool_servers.js').then((m) => m.renderToolServers)],
  [/^#\/approvals$/, () => import('./pages/approvals.js').then((m) => m.renderApprovals)],
  [/^#\/admin$/, () => import('./pages/admin.js').then((m) => m.renderAdmin)],
  [/^#\/spend$/, () => import('./pages/spend.js').then((m) => m.renderSpend)],
];

const main = document.getElementById('main');
let leave = null;

function showChrome(visible) {
  document.getElementById('nav').hidden = !visible;
  document.getElementById('session').hidden = !visible;
  const user = currentUser();
  document.getElementById('session-user').textContent = user ? `${user.username} (${user.role})` : '';
  document.querySelector('[data-testid="nav-admin"]').hidden = !(user && user.role === 'admin');
  document.querySelector('[data-testid="nav-spend"]').hidden = !(user && user.role !== 'viewer');
}

async function route() {
  if (leave) leave.abort();
  leave = new AbortController();
  const { signal } = leave;
  if (!signedIn()) {
    showChrome(false);
    renderLogin(main, () => route());
    return;
  }
  showChrome(true);
  // The count of calls waiting for a person, in the navigation, on every page.
  import('./pages/approvals.js').then((m) => m.watchPendingApprovals());
  const hash = window.location.hash || '#/teams';
  let section = null;
  for (const link of document.querySelectorAll('#nav a')) {
    const current = hash.startsWith(link.getAttribute('href'));
    if (current) {
      link.setAttribute('aria-current', 'page');
      section = link.firstChild.textContent.trim();
    } else link.removeAttribute('aria-current');
  }
  // The title names the page: its section until the page names itself more precisely.
  document.title = section ? `${section} — aiops-agent-executor` : 'aiops-agent-executor';
  for (const [pattern, load] of routes) {
    const match = pattern.exec(hash);
    if (!match) continue;
    const render = await load();
    if (signal.aborted) return;
    clearNoticeForNewPage();
    // Each visit gets its own element: a page still finishing after the user has moved on fills a detached
    // element, never the page that replaced it.
    const view = document.createElement('div');
    main.replaceChildren(view);
    main.focus({ preventScroll: true });
    try {
      await render(view, match.slice(1), signal);
    } catch (error) {
      if (!signal.aborted) notify(errorText(error), 'error');
    }
    return;
  }
  window.location.hash = '#/teams';
}

onSignedOut((reason) => {
  import('./pages/approvals.js').then((m) => m.stopWatchingApprovals());
  if (reason) notify(reason, 'error');
  route();
});
document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', () => route());
resumeSession().then(() => route()).catch((error) => fill(main, String(error)));
