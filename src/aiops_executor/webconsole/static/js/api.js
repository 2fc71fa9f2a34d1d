// The API client. The session is the access token in an HttpOnly, SameSite=Strict cookie set by
// POST /console/session: no script of this page (or any other) can read it, and a reload stays signed in.
// The API honours that cookie only with the console's header, which every request here carries.

const API = '/api/v1';
const SESSION = '/console/session';
const CONSOLE_HEADER = { 'X-Aiops-Console': '1' };
let me = null;
let expiryTimer = null;
const signedOutListeners = [];

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.error_message) || `the service answered ${status}`;
    super(message);
    this.status = status;
    this.code = body && body.error_code;
    this.details = (body && body.details) || {};
    this.body = body;
  }
}

export function onSignedOut(listener) {
  signedOutListeners.push(listener);
}

export function currentUser() {
  return me;
}

export function signedIn() {
  return me !== null;
}

const RANK = { viewer: 0, operator: 1, admin: 2 };
export const can = {
  operate: () => me !== null && RANK[me.role] >= RANK.operator,
  administer: () => me !== null && me.role === 'admin',
};

function expireIn(seconds) {
  clearTimeout(expiryTimer);
  // Signed out a little before the session expires, rather than failing on the next click.
  if (seconds) expiryTimer = setTimeout(() => signOut('your session expired; sign in again'), Math.max(5, seconds - 5) * 1000);
}

export async function signIn(username, password) {
  const response = await fetch(SESSION, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', ...CONSOLE_HEADER },
    body: new URLSearchParams({ username, password }),
  });
  const body = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, body);
  me = await api('GET', '/users/me');
  expireIn(body.expires_in);
  return me;
}

// After a reload: the cookie, if still valid, is the session.
export async function resumeSession() {
  try {
    me = await api('GET', '/users/me');
  } catch {
    me = null;
  }
  return me;
}

export function signOut(reason) {
  const wasSignedIn = me !== null;
  me = null;
  clearTimeout(expiryTimer);
  if (wasSignedIn) fetch(SESSION, { method: 'DELETE', headers: CONSOLE_HEADER }).catch(() => {});
  for (const listener of signedOutListeners) listener(reason);
}

export function authHeaders() {
  return { ...CONSOLE_HEADER };
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error_message: text.slice(0, 300) };
  }
}

export async function api(method, path, body, { query } = {}) {
  const url = new URL(`${API}${path}`, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const headers = { Accept: 'application/json', ...authHeaders() };
  const init = { method, headers };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const parsed = response.status === 204 ? null : await readBody(response);
  if (response.status === 401 && me !== null) {
    signOut('your session ended; sign in again');
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

// Every page of a list (the API caps a page at 100 items).
export async function listAll(path, query = {}) {
  const items = [];
  for (let page = 1; ; page += 1) {
    const body = await api('GET', path, undefined, { query: { ...query, page, size: 100 } });
    items.push(...body.items);
    if (page >= body.pages || body.items.length === 0) return items;
  }
}

// The provider types the service knows, as its OpenAPI document lists them (read once): the console keeps no
// list of its own, so a new adapter shows up here without a change to the console.
let providerTypesRead = null;
export function providerTypes() {
  if (providerTypesRead === null) {
    providerTypesRead = fetch(new URL('/openapi.json', window.location.origin), { headers: { Accept: 'application/json' } })
      .then(async (response) => {
        if (!response.ok) throw new ApiError(response.status, await readBody(response));
        const document = await response.json();
        return document.components.schemas.ProviderType.enum;
      })
      .catch((error) => {
        providerTypesRead = null; // asked again next time
        throw error;
      });
  }
  return providerTypesRead;
}

export { API };
