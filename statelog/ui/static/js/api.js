// The service's /v1 API with the user's bearer token (kept for this tab only).

const TOKEN_KEY = "statelog.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function headers(extra) {
  const out = { Accept: "application/json", ...(extra || {}) };
  const t = token();
  if (t) out.Authorization = "Bearer " + t;
  return out;
}

export function url(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined) q.set(k, String(v));
  }
  const qs = q.toString();
  return path + (qs ? "?" + qs : "");
}

async function request(method, path, params, body, signal) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }), signal };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(url(path, params), init);
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 200) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, params, signal) => request("GET", path, params, undefined, signal);
export const post = (path, params, body) => request("POST", path, params, body);
export const del = (path, params) => request("DELETE", path, params);

export function appPath(id, suffix = "") {
  return "/v1/apps/" + encodeURIComponent(id) + suffix;
}

/**
 * Server-Sent Events over fetch (EventSource cannot send a bearer token).
 * Calls onMessage({event, id, data}) for each message until signal aborts;
 * reconnects after a dropped connection from the last id seen.
 */
export async function stream(path, params, onMessage, signal) {
  let lastId = null;
  while (!signal.aborted) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId !== null) extra["Last-Event-ID"] = lastId;
      const response = await fetch(url(path, params), { headers: headers(extra), signal });
      if (!response.ok || !response.body) throw new ApiError(response.status, null);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const message = { event: "message", id: null, data: "" };
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (field === "event") message.event = val;
            else if (field === "id") message.id = val;
            else if (field === "data") message.data += (message.data ? "\n" : "") + val;
          }
          if (message.id !== null) lastId = message.id;
          if (message.data) {
            try {
              message.data = JSON.parse(message.data);
            } catch {
              /* keep the text */
            }
            onMessage(message);
          }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status >= 400 && err.status < 500) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
