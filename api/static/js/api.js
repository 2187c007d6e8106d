// The one place the page talks to the service: every request goes through
// `request`, which adds the API key (Authorization: Bearer) when one is set.

const KEY_NAME = "rag.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

/** Called with the error when the service answers 401 (no key, or a wrong one). */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || localStorage.getItem(KEY_NAME) || "";
}

export function setKey(key, remember) {
  sessionStorage.removeItem(KEY_NAME);
  localStorage.removeItem(KEY_NAME);
  if (key) (remember ? localStorage : sessionStorage).setItem(KEY_NAME, key);
}

export function keyRemembered() {
  return Boolean(localStorage.getItem(KEY_NAME));
}

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const key = getKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(response) {
  let code = "http_error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    /* not JSON: keep the status line */
  }
  const err = new ApiError(response.status, code, message);
  if (response.status === 401) onUnauthorized(err);
  return err;
}

export async function request(method, path, { json, form, signal } = {}) {
  const init = { method, headers: headers(), signal, credentials: "same-origin" };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form;
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

const c = (name) => `/v1/collections/${encodeURIComponent(name)}`;

export const api = {
  listCollections: () => request("GET", "/v1/collections"),
  createCollection: (name) => request("POST", "/v1/collections", { json: { name } }),
  getCollection: (name) => request("GET", c(name)),
  deleteCollection: (name) => request("DELETE", c(name)),
  listDocuments: (name) => request("GET", `${c(name)}/documents`),
  deleteDocument: (name, id) => request("DELETE", `${c(name)}/documents/${encodeURIComponent(id)}`),
  upload(name, file) {
    const form = new FormData();
    form.append("files", file, file.name);
    return request("POST", `${c(name)}/documents`, { form });
  },
  search: (name, body) => request("POST", `${c(name)}/search`, { json: body }),
  listRuns: (name) => request("GET", `${c(name)}/runs`),
  listVersions: (name) => request("GET", `${c(name)}/versions`),
  reindex: (name, kind) => request("POST", `${c(name)}/reindex`, { json: { kind } }),
  rollback: (name) => request("POST", `${c(name)}/rollback`),
  listSchedules: (name) => request("GET", `${c(name)}/schedules`),
  createSchedule: (name, body) => request("POST", `${c(name)}/schedules`, { json: body }),
  updateSchedule: (name, id, body) =>
    request("PATCH", `${c(name)}/schedules/${encodeURIComponent(id)}`, { json: body }),
  deleteSchedule: (name, id) => request("DELETE", `${c(name)}/schedules/${encodeURIComponent(id)}`),
  getSource: (name) => request("GET", `${c(name)}/source`),
  bindSource: (name, folder) => request("PUT", `${c(name)}/source`, { json: { folder } }),
};

/**
 * POST …/ask with stream: true and hand each Server-Sent Event to `onEvent(name, data)`:
 * `sources`, then `delta` events, then `done` (or `error`). Resolves when the stream ends.
 */
export async function askStream(name, body, onEvent, signal) {
  const response = await fetch(`${c(name)}/ask`, {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
    credentials: "same-origin",
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatch(block, onEvent);
    }
  }
  if (buffer.trim()) dispatch(buffer, onEvent);
}

function dispatch(block, onEvent) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (!data.length) return;
  const text = data.join("\n");
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* plain text data */
  }
  onEvent(event, parsed);
}
