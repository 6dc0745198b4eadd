// The apps table: status, graph, partition, last action, last sequence, updated;
// filters (status, graph, partition), search by app_id, cursor paging.

import { appPath, get } from "../api.js";
import { appLink, h, replace, route } from "../dom.js";
import { STATUSES, time } from "../format.js";

const PAGE = 25; // apps per page unless the URL says ?limit=N (1..500)
const SCAN_PAGES = 20; // a search reads at most this many pages of 500 apps

function statusBadge(status) {
  const mark = status === "failed" ? "✕ " : status === "waiting_for_input" ? "✋ " : "";
  return h("span", { class: `status st-${String(status).replace(/[^a-z_]/g, "")}` }, mark + String(status).replaceAll("_", " "));
}
export { statusBadge };

async function fetchPage(filters, cursor, size, signal) {
  const params = { limit: size, cursor, status: filters.status || null, graph: filters.graph || null };
  if (filters.partition !== null && filters.partition !== undefined && filters.partition !== "") params.partition_key = filters.partition;
  if (!filters.q) return get("/v1/apps", params, signal);
  // No app_id search on the server yet: read pages of apps and keep the matches.
  const q = filters.q.toLowerCase();
  const found = [];
  let next = cursor;
  for (let i = 0; i < SCAN_PAGES && next !== null && found.length < size; i++) {
    const page = await get("/v1/apps", { ...params, limit: 500, cursor: next }, signal);
    for (const app of page.apps) {
      if (String(app.app_id).toLowerCase().includes(q) && found.length < size) found.push(app);
    }
    next = page.next_cursor;
  }
  return { apps: found, next_cursor: next };
}

async function fillLast(app, cells, signal) {
  if (app.last_action !== undefined || app.updated !== undefined) {
    cells.action.textContent = app.last_action ?? "";
    cells.updated.textContent = time(app.updated);
    return;
  }
  if (app.sequence_id === null || app.sequence_id === undefined) return;
  try {
    const page = await get(appPath(app.app_id, "/events"), { partition_key: app.partition_key, from: app.sequence_id, limit: 1 }, signal);
    const last = page.events[0];
    if (!last) return;
    cells.action.textContent = last.action ?? "";
    cells.updated.textContent = time(last.timestamp);
    cells.updated.setAttribute("title", String(last.timestamp));
  } catch {
    /* the row stays without it */
  }
}

export async function appsPage({ params, signal, view }) {
  const filters = {
    status: params.get("status") || "",
    graph: params.get("graph") || "",
    partition: params.has("partition") ? params.get("partition") : "",
    q: params.get("q") || "",
  };
  const cursor = Number(params.get("cursor") || 0);
  const size = Math.min(500, Math.max(1, Number(params.get("limit")) || PAGE));
  const back = (params.get("back") || "").split(",").filter((x) => x !== "").map(Number);

  const status = h(
    "select",
    { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((s) => h("option", { value: s }, s.replaceAll("_", " "))),
  );
  status.value = filters.status;
  const graph = h("input", { id: "f-graph", name: "graph", type: "text", size: 12 });
  graph.value = filters.graph;
  const partition = h("input", { id: "f-partition", name: "partition", type: "text", size: 12 });
  partition.value = filters.partition;
  const q = h("input", { id: "f-q", name: "q", type: "search", size: 18, placeholder: "app_id contains…" });
  q.value = filters.q;
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter apps" },
    h("div", { class: "field" }, h("label", { for: "f-status" }, "Status"), status),
    h("div", { class: "field" }, h("label", { for: "f-graph" }, "Graph"), graph),
    h("div", { class: "field" }, h("label", { for: "f-partition" }, "Partition"), partition),
    h("div", { class: "field" }, h("label", { for: "f-q" }, "Search app_id"), q),
    h("div", { class: "field actions" }, h("button", { type: "submit", class: "primary", id: "f-apply" }, "Apply"), h("a", { href: "#/", class: "button", id: "f-clear" }, "Clear")),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = route("/", { status: status.value, graph: graph.value.trim(), partition: partition.value, q: q.value.trim() });
  });

  const tbody = h("tbody", null, h("tr", null, h("td", { colspan: 7, class: "muted" }, "Loading…")));
  const table = h(
    "table",
    { class: "apps", id: "apps-table" },
    h("caption", { class: "sr-only" }, "Apps"),
    h(
      "thead",
      null,
      h("tr", null, ["App", "Status", "Graph", "Partition", "Last action", "Last seq", "Updated"].map((t) => h("th", { scope: "col" }, t))),
    ),
    tbody,
  );
  const pager = h("nav", { class: "pager", "aria-label": "Apps pages" });
  replace(view, h("h1", null, "Apps"), form, table, pager);

  const page = await fetchPage(filters, cursor, size, signal);
  const rows = page.apps.map((app) => {
    const cells = { action: h("td", { class: "last-action" }), updated: h("td", { class: "updated" }) };
    const st = String(app.status);
    const row = h(
      "tr",
      { class: `app-row row-${st.replace(/[^a-z_]/g, "")}`, dataset: { appId: app.app_id } },
      h("th", { scope: "row" }, appLink(app)),
      h("td", null, statusBadge(st)),
      h("td", null, app.graph ?? h("span", { class: "muted" }, "—")),
      h("td", null, app.partition_key === "" ? h("span", { class: "muted" }, "(none)") : app.partition_key),
      cells.action,
      h("td", { class: "num" }, app.sequence_id ?? ""),
      cells.updated,
    );
    fillLast(app, cells, signal);
    return row;
  });
  replace(tbody, rows.length ? rows : h("tr", null, h("td", { colspan: 7, class: "muted", id: "apps-empty" }, "No apps match.")));

  const base = { status: filters.status, graph: filters.graph, partition: filters.partition, q: filters.q, limit: size === PAGE ? null : size };
  const links = [];
  if (cursor > 0) {
    const prev = back.length ? back[back.length - 1] : 0;
    links.push(h("a", { class: "button", id: "apps-prev", href: route("/", { ...base, cursor: prev || null, back: back.slice(0, -1).join(",") }) }, "← Previous"));
  }
  if (page.next_cursor !== null && page.next_cursor !== undefined) {
    links.push(h("a", { class: "button", id: "apps-next", href: route("/", { ...base, cursor: page.next_cursor, back: [...back, cursor].join(",") }) }, "Next →"));
  }
  replace(pager, links, h("span", { class: "muted" }, ` ${page.apps.length} shown`));
}
