// How one event reads: its kind, its state change, its error. Small pure functions
// so new kinds (run_started, attempt_failed, waiting_for_input, ...) and the v2
// `ops` list render without touching the pages; an unknown kind shows as itself.

import { h } from "./dom.js";
import { short } from "./format.js";

/** Known kinds: a label and a tone (ok, fail, warn, info). Unknown kinds are "other". */
const KINDS = {
  app_initialized: ["initialized", "info"],
  run_started: ["run started", "info"],
  action_completed: ["completed", "ok"],
  action_failed: ["action failed", "fail"],
  attempt_failed: ["attempt failed", "fail"],
  halted: ["halted", "warn"],
  waiting_for_input: ["waiting for input", "warn"],
  input_received: ["input received", "info"],
  completed: ["run completed", "ok"],
  cancelled: ["cancelled", "warn"],
  failed: ["run failed", "fail"],
  forked: ["forked", "info"],
  child_completed: ["child completed", "ok"],
};

export function kindInfo(kind) {
  const known = KINDS[kind];
  return known ? { label: known[0], tone: known[1] } : { label: String(kind ?? "?"), tone: "other" };
}

export function isFailure(event) {
  return kindInfo(event.kind).tone === "fail" || Boolean(event.error);
}

export function renderKind(event) {
  const { label, tone } = kindInfo(event.kind);
  return h("span", { class: `kind tone-${tone}`, title: String(event.kind) }, label);
}

/**
 * The state change of an event as a list of {op, path, value, hasValue}: its `ops`
 * (v2: set, delete, append, extend, increment, merge, or any other op) when it has
 * them, else its `writes` (set) and `deletes` (delete).
 */
export function changesOf(event) {
  if (Array.isArray(event.ops)) {
    return event.ops.map((op) => {
      if (op === null || typeof op !== "object") return { op: "op", path: "", value: op, hasValue: true };
      const name = op.op ?? op.kind ?? op.type ?? "op";
      const path = op.path ?? op.key ?? op.field ?? "";
      const valueKey = ["value", "item", "items", "by", "values"].find((k) => k in op);
      return {
        op: String(name),
        path: Array.isArray(path) ? path.join(".") : String(path),
        value: valueKey === undefined ? undefined : op[valueKey],
        hasValue: valueKey !== undefined,
      };
    });
  }
  const out = [];
  for (const [key, value] of Object.entries(event.writes || {})) {
    out.push({ op: "set", path: key, value, hasValue: true });
  }
  for (const key of event.deletes || []) out.push({ op: "delete", path: String(key), value: undefined, hasValue: false });
  return out;
}

const OP_SIGNS = { set: "=", delete: "✕", append: "+=", extend: "+=", increment: "+", merge: "∪" };

function valueNode(value) {
  const text = short(value, 100000);
  if (text.length <= 120) return h("code", { class: "val" }, text);
  return h(
    "details",
    { class: "long" },
    h("summary", null, h("code", { class: "val" }, text.slice(0, 100) + "…")),
    h("pre", { class: "val" }, JSON.stringify(value, null, 2)),
  );
}

export function renderChanges(event) {
  const changes = changesOf(event);
  if (!changes.length) return h("span", { class: "muted" }, "no change");
  return h(
    "ul",
    { class: "changes" },
    changes.map((c) =>
      h(
        "li",
        { class: `change op-${/^[a-z_]+$/.test(c.op) ? c.op : "other"}` },
        h("span", { class: "op" }, c.op),
        " ",
        h("code", { class: "path" }, c.path),
        c.hasValue ? [" ", h("span", { class: "sign" }, OP_SIGNS[c.op] || "→"), " ", valueNode(c.value)] : null,
      ),
    ),
  );
}

export function renderInputs(event) {
  const entries = Object.entries(event.inputs || {});
  if (!entries.length) return null;
  return h(
    "ul",
    { class: "inputs" },
    entries.map(([k, v]) => h("li", null, h("code", { class: "path" }, k), " = ", valueNode(v))),
  );
}

/** {type, message, summary: [last lines of a traceback]} or null. */
export function errorOf(event) {
  const err = event.error;
  if (!err) return null;
  if (typeof err !== "object") return { type: "error", message: String(err), summary: [], traceback: "" };
  let tb = err.traceback ?? err.stack ?? "";
  if (Array.isArray(tb)) tb = tb.join("\n");
  tb = String(tb);
  const lines = tb.split("\n").filter((l) => l.trim());
  return {
    type: String(err.type ?? "error"),
    message: String(err.message ?? ""),
    summary: lines.slice(-4),
    traceback: tb,
  };
}

export function renderError(event) {
  const err = errorOf(event);
  if (!err) return null;
  return h(
    "div",
    { class: "error", role: "note" },
    h("strong", null, err.type),
    err.message ? [": ", err.message] : null,
    err.summary.length
      ? h(
          "details",
          { class: "traceback" },
          h("summary", null, "Traceback: " + err.summary[err.summary.length - 1]),
          h("pre", null, err.traceback),
        )
      : null,
  );
}

export function renderAttempt(event) {
  const attempt = Number(event.attempt ?? 1);
  if (!(attempt > 1)) return h("span", null, String(attempt || 1));
  const failedBefore = kindInfo(event.kind).tone === "fail" ? attempt : attempt - 1;
  return h(
    "span",
    { class: "attempt retried", title: `${failedBefore} failed attempt(s) in this step` },
    `${attempt} (${failedBefore} failed)`,
  );
}

/** An event's position: "action → next". */
export function renderStep(event) {
  return h(
    "span",
    { class: "step" },
    event.action ? h("code", null, event.action) : h("span", { class: "muted" }, "—"),
    event.next_action ? [" → ", h("code", { class: "next" }, event.next_action)] : null,
  );
}

export function renderLineage(parent, makeLink) {
  if (!parent) return null;
  return h(
    "span",
    { class: "lineage-ref" },
    `${parent.relation === "child" ? "child of" : "forked from"} `,
    makeLink(parent),
    ` at #${parent.sequence_id}`,
  );
}
