// An execution's event stream read with fetch (EventSource cannot send the console's header), following the
// contract's re-attach rules: after a dropped connection it reconnects with Last-Event-ID, and events at or below
// the last seq seen are dropped, so nothing is lost or shown twice.

import { API, ApiError, authHeaders, signOut } from './api.js';

const TERMINAL = new Set(['execution_complete', 'execution_error', 'execution_cancelled']);
const LIVE = new Set(['agent_token', 'agent_tokens_discarded']);
const RECONNECT_MS = 1000;

// Yields {id, event, data} for each message of an SSE body (the WHATWG rules: fields, blank line ends a message,
// comment lines start with ':').
export async function* messages(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let message = { id: null, event: 'message', data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // A CR at the very end may be the first half of a CRLF split across reads: decided with the next read.
    const held = buffer.endsWith('\r') ? '\r' : '';
    const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
    buffer = lines.pop() + held;
    for (const line of lines) {
      if (line === '') {
        if (message.data.length) yield { id: message.id, event: message.event, data: message.data.join('\n') };
        message = { id: null, event: 'message', data: [] };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const name = colon < 0 ? line : line.slice(0, colon);
      let fieldValue = colon < 0 ? '' : line.slice(colon + 1);
      if (fieldValue.startsWith(' ')) fieldValue = fieldValue.slice(1);
      if (name === 'data') message.data.push(fieldValue);
      else if (name === 'event') message.event = fieldValue;
      else if (name === 'id') message.id = fieldValue;
    }
  }
}

// Follows an execution until its terminal event or until `signal` aborts. `onEvent(type, payload)` sees each
// event once, in seq order; `onConnection(state)` hears 'open', 'reconnecting' and 'closed'.
// `isFinished()` is asked when a stream ends without a terminal event: the stream of a finished run replays
// everything up to its terminal event, so one more pass after that answer is the last one.
export async function followExecution(
  executionId,
  { after = 0, signal, onEvent, onConnection = () => {}, isFinished = async () => false },
) {
  let last = after;
  let finalPass = false;
  while (!signal.aborted) {
    const headers = { Accept: 'text/event-stream', ...authHeaders() };
    if (last > 0) headers['Last-Event-ID'] = String(last);
    let ended = false;
    try {
      const response = await fetch(`${API}/executions/${executionId}/stream`, { headers, signal });
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch { body = null; }
        if (response.status === 401) signOut('your session ended; sign in again');
        throw new ApiError(response.status, body);
      }
      onConnection('open');
      for await (const message of messages(response.body)) {
        if (message.event === 'heartbeat') continue;
        if (message.id === null && LIVE.has(message.event)) {
          // Token deltas carry no id: shown as they come, never counted in Last-Event-ID.
          let delta = null;
          try { delta = JSON.parse(message.data); } catch { delta = null; }
          if (delta) onEvent(message.event, delta);
          continue;
        }
        const seq = Number(message.id);
        if (!Number.isInteger(seq) || seq <= last) continue;
        last = seq;
        let payload;
        try { payload = JSON.parse(message.data); } catch { continue; }
        onEvent(message.event, payload);
        if (TERMINAL.has(message.event)) ended = true;
      }
    } catch (error) {
      if (signal.aborted) break;
      if (error instanceof ApiError && error.status < 500) throw error;
    }
    if (ended || signal.aborted || finalPass) break;
    try {
      finalPass = await isFinished();
    } catch {
      // Unknown: try the stream again.
    }
    // The stream closed before the end (idle close, a restart, the network): re-attach where it stopped.
    onConnection('reconnecting');
    await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
  }
  onConnection('closed');
  return last;
}

export { TERMINAL };
