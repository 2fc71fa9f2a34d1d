// The API client. The access token lives in this module's memory only (never in storage or a cookie): a reload
// asks to sign in again, and no other page or script of this origin can read a stored token.

const API = '/api/v1';
let token = null;
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
  return token !== null && me !== null;
}

const RANK = { viewer: 0, operator: 1, admin: 2 };
export const can = {
  operate: () => me !== null && RANK[me.role] >= RANK.operator,
  administer: () => me !== null && me.role === 'admin',
};

export async function signIn(username, password) {
  const response = await fetch(`${API}/auth/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password }),
  });
  const body = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, body);
  token = body.access_token;
  try {
    me = await api('GET', '/users/me');
  } catch (error) {
    token = null;
    throw error;
  }
  clearTimeout(expiryTimer);
  // Signed out a little before the token expires, rather than failing on the next click.
  expiryTimer = setTimeout(() => signOut('your session expired; sign in again'), Math.max(5, body.expires_in - 5) * 1000);
  return me;
}

export function signOut(reason) {
  token = null;
  me = null;
  clearTimeout(expiryTimer);
  for (const listener of signedOutListeners) listener(reason);
}

export function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
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
  if (response.status === 401 && token !== null) {
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

export { API };
