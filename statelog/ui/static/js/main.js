// The router: #/ (apps) and #/app?id=&pk= (one app). Each page gets a fresh
// AbortSignal, aborted when the user navigates away (live streams stop).

import { get, setToken, token } from "./api.js";
import { h, replace } from "./dom.js";
import { appsPage } from "./pages/apps.js";
import { appPage } from "./pages/app.js";

const session = { auth: false, authenticated: true, write: false, read_only: false };
let current = null;

async function loadSession() {
  try {
    Object.assign(session, await get("/ui/session"));
  } catch (err) {
    Object.assign(session, { authenticated: false, write: false, error: err.message });
  }
  renderSession();
}

function renderSession() {
  const box = document.getElementById("session");
  const parts = [];
  if (session.read_only) parts.push(h("span", { class: "pill" }, "read-only log"));
  if (session.auth) {
    const input = h("input", { type: "password", id: "token-input", autocomplete: "off", placeholder: "bearer token", "aria-label": "Bearer token" });
    input.value = token();
    const form = h(
      "form",
      { class: "token-form", "aria-label": "Token" },
      input,
      h("button", { type: "submit", id: "token-save" }, "Use token"),
      token() ? h("button", { type: "button", id: "token-forget", onclick: () => { setToken(""); refresh(); } }, "Forget") : null,
    );
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      setToken(input.value.trim());
      refresh();
    });
    parts.push(form);
    parts.push(
      h(
        "span",
        { class: "pill", id: "token-scope" },
        !session.authenticated ? (session.error ? "token refused" : "no token") : session.write ? "write token" : "read-only token",
      ),
    );
  }
  replace(box, parts);
}

async function refresh() {
  await loadSession();
  render();
}

function render() {
  if (current) current.abort();
  current = new AbortController();
  const view = document.getElementById("view");
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const ctx = { session, params, signal: current.signal, view, refreshSession: refresh };
  if (session.auth && !session.authenticated) {
    replace(view, h("h1", null, "Sign in"), h("p", null, "This service needs a bearer token: enter it above."));
    return;
  }
  const page = path === "/app" ? appPage : appsPage;
  page(ctx).catch((err) => {
    if (current.signal.aborted) return;
    replace(view, h("h1", null, "Error"), h("p", { class: "error" }, err && err.message ? err.message : String(err)));
  });
}

window.addEventListener("hashchange", () => {
  render();
  document.getElementById("view").focus({ preventScroll: true });
});
refresh();
