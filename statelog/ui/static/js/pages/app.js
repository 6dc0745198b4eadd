// One app: summary, live controls, chain, graph, lineage, the paged timeline,
// state at a sequence and the diff between two sequences.

import { appPath, del, get, post, stream } from "../api.js";
import { appLink, h, replace, route } from "../dom.js";
import { diffValues, renderDiff } from "../diff.js";
import { isFailure, renderAttempt, renderChanges, renderError, renderInputs, renderKind, renderLineage, renderStep } from "../events.js";
import { ACTIVE, duration, time } from "../format.js";
import { inputForm } from "../form.js";
import { observedGraph, renderGraph } from "../graph.js";
import { jsonTree } from "../jsontree.js";
import { statusBadge } from "./apps.js";

const PAGE = 50;
const VERIFY_AUTO_MAX = 20000; // longer chains are verified on request
let graphsServed = true; // GET /v1/graphs/{name}: tried until the service answers 404

function section(id, title, ...body) {
  return h("section", { id, class: "card", "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), body);
}

function setQuery(changes) {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined) params.delete(k);
    else params.set(k, String(v));
  }
  history.replaceState(null, "", "#" + path + "?" + params.toString());
}

// GET .../verify's signed_head (docs/service.md): the latest signed checkpoint of the app.
function renderSignedHead(signed) {
  if (!signed) return null; // a service from before signed heads
  const at = (x) => `seq ${x.sequence_id} at ${time(x.created_at)} UTC`;
  const cp = `checkpoint #${signed.checkpoint}`;
  let line;
  switch (signed.status) {
    case "verified":
      line = h("span", { class: "chain-ok" }, `✓ signed head: ${at(signed)}`);
      break;
    case "unchecked":
      line = [h("span", null, `signed head: ${at(signed)}`), h("span", { class: "muted small" }, " (signature not checked: the service has no public key)")];
      break;
    case "signature-invalid":
      line = h("span", { class: "chain-broken" }, `✕ signature does not verify (${cp} claims ${at(signed)})`);
      break;
    case "key-mismatch":
      line = h("span", { class: "chain-broken" }, `✕ signature does not verify: ${cp} is signed by another key`);
      break;
    case "head-disagrees":
      line = h("span", { class: "chain-broken" }, `✕ head disagrees: ${cp} signed ${at(signed)}`);
      break;
    case "checkpoints-invalid":
      line = h("span", { class: "chain-broken" }, signed.checkpoint === null ? "✕ the checkpoints do not verify" : `✕ the checkpoints do not verify (${cp} signed ${at(signed)})`);
      break;
    case "unsigned":
      line = [h("span", { class: "muted" }, "not signed"), signed.reason ? h("span", { class: "muted small" }, ` — ${signed.reason}`) : null];
      break;
    default:
      line = h("span", null, `signed head: ${String(signed.status)}`);
  }
  const which = signed.checkpoint === null ? null : h("p", { id: "chain-checkpoint", class: "muted small" }, `${cp}, key ${String(signed.key_id).slice(0, 16)}…`);
  const later = signed.unsigned_events > 0 ? h("span", { class: "muted small" }, ` — ${signed.unsigned_events} later events not signed yet`) : null;
  const problems = (signed.problems || []).map((p) => h("li", null, String(p)));
  return [
    h("p", { id: "chain-signed", dataset: { status: signed.status } }, line, later),
    which,
    problems.length ? h("ul", { class: "chain-problems small" }, problems) : null,
  ];
}

function numberInput(id, value, max) {
  const input = h("input", { id, type: "number", min: 0, max: max >= 0 ? max : null, step: 1, inputmode: "numeric", class: "seq" });
  if (value !== null && value !== undefined) input.value = String(value);
  return input;
}

export async function appPage({ session, params, signal, view }) {
  const id = params.get("id") || "";
  const pk = params.get("pk") || "";
  const qp = { partition_key: pk };
  let app = await get(appPath(id), qp, signal);
  let last = app.sequence_id ?? -1;
  let follow = ACTIVE.has(app.status);
  let from = params.has("from") ? Math.max(0, Number(params.get("from")) || 0) : follow ? Math.max(0, Math.floor(last / PAGE) * PAGE) : 0;
  let pageEvents = [];
  let live = null;

  // ------------------------------------------------------------ header
  const summary = h("dl", { class: "summary", id: "app-summary" });
  const actions = h("div", { class: "app-actions", id: "app-actions" });
  const notice = h("p", { class: "notice", id: "app-notice", role: "status", "aria-live": "polite" });
  const inputBox = h("div", { id: "input-box" });

  function renderSummary() {
    replace(
      summary,
      h("div", null, h("dt", null, "Status"), h("dd", { id: "app-status" }, statusBadge(app.status))),
      h("div", null, h("dt", null, "Graph"), h("dd", null, app.graph ?? "—")),
      h("div", null, h("dt", null, "Partition"), h("dd", null, pk === "" ? "(none)" : pk)),
      h("div", null, h("dt", null, "Last sequence"), h("dd", { id: "app-last-seq" }, String(last))),
      h("div", null, h("dt", null, "Position"), h("dd", { id: "app-position" }, app.position ?? "— (ended)")),
      app.operation_id ? h("div", null, h("dt", null, "Operation"), h("dd", null, h("code", null, app.operation_id))) : null,
    );
  }

  const followButton = h("button", { type: "button", id: "follow-live", "aria-pressed": "false" }, "Follow live");
  followButton.addEventListener("click", () => setFollow(!follow));

  function renderActions() {
    const parts = [followButton];
    if (session.write && ACTIVE.has(app.status) && app.operation_id) {
      const cancel = h("button", { type: "button", id: "cancel-op", class: "danger" }, "Cancel run");
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        try {
          const op = await del("/v1/operations/" + encodeURIComponent(app.operation_id));
          notice.textContent = `Cancel requested: the operation is ${op.status}.`;
        } catch (err) {
          notice.textContent = "Cancel failed: " + err.message;
          cancel.disabled = false;
        }
      });
      parts.push(cancel);
    }
    replace(actions, parts);
  }

  async function renderInput() {
    if (app.status !== "waiting_for_input") {
      replace(inputBox);
      return;
    }
    // The log's last event, waiting_for_input, names the input (data.name) and
    // may carry its JSON Schema (data.schema); the answer is {inputs: {name: value}}.
    let schema = {};
    let name = null;
    try {
      const page = await get(appPath(id, "/events"), { ...qp, from: last, limit: 1 }, signal);
      const data = (page.events[0] || {}).data || {};
      name = typeof data.name === "string" ? data.name : null;
      schema = data.schema ?? {};
    } catch {
      /* an empty form still takes JSON */
    }
    if (!session.write) {
      replace(inputBox, section("input", "Waiting for input", h("p", null, "This app waits for input; a write token is needed to answer.")));
      return;
    }
    const form = inputForm(schema, async (inputs) => {
      await post(appPath(id, "/input"), qp, { inputs: name === null ? inputs : { [name]: inputs } });
      notice.textContent = "Input sent.";
      setFollow(true);
    });
    replace(inputBox, section("input", "Waiting for input", form));
  }

  // ------------------------------------------------------------ chain, graph, lineage
  const chain = h("div", { id: "chain-status", "aria-live": "polite" });
  async function verify() {
    replace(chain, h("span", { class: "muted" }, "Verifying…"));
    try {
      const result = await get(appPath(id, "/verify"), qp, signal);
      let walk;
      if (result.ok) {
        walk = h("p", { id: "chain-walk" }, h("span", { class: "chain-ok" }, `✓ verified: events 0..${result.sequence_id}`));
      } else {
        const b = result.broken || {};
        walk = h("p", { id: "chain-walk" }, h("span", { class: "chain-broken" }, `✕ broken at seq ${b.sequence_id}`), b.reason ? h("span", { class: "small" }, " — " + String(b.reason)) : null);
      }
      replace(chain, walk, renderSignedHead(result.signed_head));
    } catch (err) {
      replace(chain, h("span", { class: "error" }, "Not verified: " + err.message));
    }
  }
  const verifyButton = h("button", { type: "button", id: "verify-chain" }, "Verify chain");
  verifyButton.addEventListener("click", verify);

  const graphBox = h("div", { id: "graph-box", class: "graph-box" });
  const graphNote = h("p", { class: "muted small", id: "graph-note" });
  let declared = null;
  if (app.graph && graphsServed) {
    try {
      declared = await get("/v1/graphs/" + encodeURIComponent(app.graph), null, signal);
    } catch (err) {
      // no such route (yet): draw what the events show, and stop asking this session
      if (err.status === 404 && !(err.problem && err.problem.type && err.problem.type.endsWith("unknown-graph"))) graphsServed = false;
      declared = null;
    }
  }
  function renderGraphBox() {
    const graph = declared || observedGraph(pageEvents);
    if (!graph.actions || !graph.actions.length) {
      replace(graphBox, h("p", { class: "muted" }, "No actions on this page."));
    } else {
      replace(graphBox, renderGraph(graph, app.position, `graph of ${app.graph ?? id}`));
    }
    graphNote.textContent = declared
      ? "The declared graph; the current position is highlighted."
      : pageEvents.length
        ? `Transitions seen in events #${pageEvents[0].sequence_id}–#${pageEvents[pageEvents.length - 1].sequence_id}; the current position is highlighted.`
        : "";
  }

  const lineage = h("div", { id: "lineage-box" });
  async function renderLineageBox(first) {
    const items = [];
    let parent = first && first.parent;
    const chainUp = [];
    for (let depth = 0; parent && depth < 8; depth++) {
      chainUp.push(parent);
      try {
        const up = await get(appPath(parent.app_id, "/events"), { partition_key: parent.partition_key, from: 0, limit: 1 }, signal);
        parent = up.events[0] && up.events[0].parent;
      } catch {
        parent = null;
      }
    }
    const link = (p) => appLink({ app_id: p.app_id, partition_key: p.partition_key });
    for (const p of chainUp) items.push(h("li", null, renderLineage(p, link)));
    // Parallel children are named {app_id}.{action}.{origin}.{index} in the same partition.
    const children = [];
    let cursor = 0;
    for (let i = 0; i < 4 && cursor !== null; i++) {
      const page = await get("/v1/apps", { partition_key: pk, limit: 500, cursor }, signal);
      for (const a of page.apps) if (a.app_id.startsWith(id + ".")) children.push(a);
      cursor = page.next_cursor;
    }
    for (const c of children.slice(0, 50)) items.push(h("li", null, "child ", appLink(c), " ", statusBadge(c.status)));
    if (children.length > 50) items.push(h("li", { class: "muted" }, `… ${children.length - 50} more children`));
    replace(lineage, items.length ? h("ul", { class: "lineage" }, items) : h("p", { class: "muted" }, "No parent; no children found."));
  }

  // ------------------------------------------------------------ timeline
  const tbody = h("tbody");
  const pageLabel = h("span", { class: "page-label", id: "page-label", "aria-live": "polite" });
  const nav = (label, idName, target) => {
    const b = h("button", { type: "button", id: idName }, label);
    b.addEventListener("click", () => loadPage(target()));
    return b;
  };
  const firstB = nav("⇤ First", "tl-first", () => 0);
  const prevB = nav("← Previous", "tl-prev", () => Math.max(0, from - PAGE));
  const nextB = nav("Next →", "tl-next", () => from + PAGE);
  const latestB = nav("Latest ⇥", "tl-latest", () => Math.max(0, Math.floor(last / PAGE) * PAGE));
  const goInput = numberInput("tl-goto", null, last);
  const goForm = h("form", { class: "inline", "aria-label": "Go to a sequence" }, h("label", { for: "tl-goto" }, "Go to #"), goInput, h("button", { type: "submit", id: "tl-go" }, "Go"));
  goForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = Number(goInput.value);
    if (Number.isFinite(n) && n >= 0) loadPage(Math.floor(n / PAGE) * PAGE, n);
  });

  function eventRow(e) {
    const stateButton = h("button", { type: "button", class: "small", "aria-label": `State after #${e.sequence_id}` }, "State");
    stateButton.addEventListener("click", () => showState(e.sequence_id, true));
    const classes = ["ev"];
    if (isFailure(e)) classes.push("ev-fail");
    if (Number(e.attempt) > 1) classes.push("ev-retried");
    return h(
      "tr",
      { class: classes.join(" "), id: `ev-${e.sequence_id}`, dataset: { seq: e.sequence_id, kind: e.kind } },
      h("th", { scope: "row", class: "num" }, "#" + e.sequence_id),
      h("td", { class: "ts", title: String(e.timestamp ?? "") }, time(e.timestamp)),
      h("td", null, renderKind(e)),
      h("td", null, renderStep(e), e.parent ? h("div", { class: "small" }, renderLineage(e.parent, (p) => appLink(p))) : null),
      h("td", { class: "num" }, renderAttempt(e)),
      h("td", { class: "num" }, duration(e.duration_us != null ? e.duration_us / 1e6 : e.duration)),
      h("td", null, renderInputs(e)),
      h("td", { class: "change-cell" }, renderChanges(e), renderError(e)),
      h("td", null, stateButton),
    );
  }

  function updatePager() {
    const end = pageEvents.length ? pageEvents[pageEvents.length - 1].sequence_id : from - 1;
    pageLabel.textContent = pageEvents.length ? `Events #${from}–#${end} of 0–${last}` : `No events from #${from}`;
    firstB.disabled = prevB.disabled = from === 0;
    nextB.disabled = latestB.disabled = end >= last;
    goInput.max = String(last);
  }

  async function loadPage(start, focusSeq) {
    from = start;
    setQuery({ from: start || null });
    const page = await get(appPath(id, "/events"), { ...qp, from: start, limit: PAGE }, signal);
    pageEvents = page.events;
    const newest = pageEvents.length ? pageEvents[pageEvents.length - 1] : null;
    if (newest && newest.sequence_id > last) {
      last = newest.sequence_id; // the app moved on since its summary was read
      app = { ...app, sequence_id: last, position: newest.next_action ?? null };
      renderSummary();
    }
    replace(tbody, pageEvents.map(eventRow));
    updatePager();
    renderGraphBox();
    if (focusSeq !== undefined) {
      const row = document.getElementById(`ev-${focusSeq}`);
      if (row) row.scrollIntoView({ block: "center" });
    }
    return page;
  }

  const table = h(
    "table",
    { class: "timeline", id: "timeline-table" },
    h("caption", { class: "sr-only" }, "Events of the app"),
    h("thead", null, h("tr", null, ["#", "Time", "Kind", "Action", "Attempt", "Duration", "Inputs", "Change", ""].map((t) => h("th", { scope: "col" }, t)))),
    tbody,
  );

  // ------------------------------------------------------------ state and diff
  const stateAt = numberInput("state-at", params.has("at") ? params.get("at") : last, last);
  const stateOut = h("div", { id: "state-tree", class: "state-tree" });
  const stateLabel = h("p", { id: "state-label", class: "muted", "aria-live": "polite" });
  const stateForm = h("form", { class: "inline", "aria-label": "State at a sequence" }, h("label", { for: "state-at" }, "After event #"), stateAt, h("button", { type: "submit", id: "state-show" }, "Show state"));
  stateForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    showState(Number(stateAt.value), false);
  });
  async function showState(seq, scroll) {
    if (!Number.isInteger(seq) || seq < 0) {
      stateLabel.textContent = "Enter a sequence number.";
      return;
    }
    stateAt.value = String(seq);
    setQuery({ at: seq });
    stateLabel.textContent = `Loading state after #${seq}…`;
    try {
      const result = await get(appPath(id, "/state"), { ...qp, at: seq }, signal);
      stateLabel.textContent = `State after event #${result.sequence_id}`;
      replace(stateOut, jsonTree(result.state));
    } catch (err) {
      stateLabel.textContent = "No state: " + err.message;
      replace(stateOut);
    }
    if (scroll) document.getElementById("state").scrollIntoView({ block: "start" });
  }

  const diffA = numberInput("diff-a", params.get("a") ?? Math.max(0, last - 1), last);
  const diffB = numberInput("diff-b", params.get("b") ?? last, last);
  const diffOut = h("div", { id: "diff-out", "aria-live": "polite" });
  const diffForm = h(
    "form",
    { class: "inline", "aria-label": "Diff between two sequences" },
    h("label", { for: "diff-a" }, "From #"),
    diffA,
    h("label", { for: "diff-b" }, "to #"),
    diffB,
    h("button", { type: "submit", id: "diff-show" }, "Show diff"),
  );
  diffForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const a = Number(diffA.value), b = Number(diffB.value);
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b < 0) {
      replace(diffOut, h("p", { class: "error" }, "Enter two sequence numbers."));
      return;
    }
    setQuery({ a, b });
    replace(diffOut, h("p", { class: "muted" }, "Loading…"));
    try {
      const [sa, sb] = await Promise.all([get(appPath(id, "/state"), { ...qp, at: a }, signal), get(appPath(id, "/state"), { ...qp, at: b }, signal)]);
      replace(diffOut, h("p", { class: "muted" }, `State after #${a} → after #${b}`), renderDiff(diffValues(sa.state, sb.state)));
    } catch (err) {
      replace(diffOut, h("p", { class: "error" }, "No diff: " + err.message));
    }
  });

  // ------------------------------------------------------------ live
  function setFollow(on) {
    follow = on;
    followButton.setAttribute("aria-pressed", on ? "true" : "false");
    followButton.textContent = on ? "Following live" : "Follow live";
    if (on && !live) startLive();
    if (!on && live) {
      live.abort();
      live = null;
    }
  }

  function onLive(message) {
    if (message.event === "status") {
      const data = message.data || {};
      if (data.status && data.status !== app.status) {
        app = { ...app, status: data.status, operation_id: data.operation_id ?? app.operation_id };
        renderSummary();
        renderActions();
        renderInput();
      }
      return;
    }
    const e = message.data;
    if (!e || typeof e.sequence_id !== "number" || e.sequence_id <= last) return;
    last = e.sequence_id;
    app = { ...app, sequence_id: last, position: e.next_action ?? null };
    document.getElementById("app-last-seq").textContent = String(last);
    document.getElementById("app-position").textContent = app.position ?? "— (ended)";
    if (!follow) return;
    if (e.sequence_id >= from + PAGE) {
      from = Math.floor(e.sequence_id / PAGE) * PAGE;
      pageEvents = [];
      replace(tbody);
    }
    if (e.sequence_id >= from && !document.getElementById(`ev-${e.sequence_id}`)) {
      pageEvents.push(e);
      tbody.appendChild(eventRow(e));
    }
    updatePager();
    renderGraphBox();
  }

  function startLive() {
    live = new AbortController();
    const both = new AbortController();
    const stop = () => both.abort();
    signal.addEventListener("abort", stop);
    live.signal.addEventListener("abort", stop);
    stream(appPath(id, "/events/stream"), { ...qp, from: last + 1 }, onLive, both.signal).catch((err) => {
      notice.textContent = "Live updates stopped: " + err.message;
    });
  }

  // ------------------------------------------------------------ layout
  renderSummary();
  renderActions();
  replace(
    view,
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: route("/", {}), id: "back-to-apps" }, "Apps"), " / ", h("span", null, pk ? `${pk} / ` : "", id)),
    h("h1", { class: "app-title" }, id),
    h("div", { class: "app-head" }, summary, actions),
    notice,
    inputBox,
    h(
      "div",
      { class: "cards" },
      section("chain", "Chain", chain, last < VERIFY_AUTO_MAX ? null : h("p", { class: "muted small" }, "Long chain: verified on request."), verifyButton),
      section("graph", "Graph", graphBox, graphNote),
      section("lineage", "Lineage", lineage),
    ),
    section(
      "timeline",
      "Timeline",
      h("div", { class: "pager" }, firstB, prevB, nextB, latestB, goForm, pageLabel),
      h("div", { class: "scroll" }, table),
    ),
    h("div", { class: "cards two" }, section("state", "State", stateForm, stateLabel, stateOut), section("diff", "Diff between two sequences", diffForm, diffOut)),
  );
  const first = await loadPage(from);
  renderInput();
  showState(Number(stateAt.value), false);
  if (last < VERIFY_AUTO_MAX) verify();
  else replace(chain, h("span", { class: "muted" }, "Not verified yet."));
  const firstEvent = from === 0 ? first.events[0] : (await get(appPath(id, "/events"), { ...qp, from: 0, limit: 1 }, signal)).events[0];
  renderLineageBox(firstEvent).catch(() => replace(lineage, h("p", { class: "muted" }, "Lineage unavailable.")));
  if (follow) {
    follow = false;
    setFollow(true);
  }
}
