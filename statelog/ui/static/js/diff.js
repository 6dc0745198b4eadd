// The difference between two JSON values, as a list of {path, op, before, after}.

import { h } from "./dom.js";
import { short } from "./format.js";

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

export function diffValues(before, after, path = "", out = []) {
  if (same(before, after)) return out;
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    for (const k of keys) {
      const p = path ? `${path}.${k}` : k;
      if (!(k in after)) out.push({ path: p, op: "removed", before: before[k] });
      else if (!(k in before)) out.push({ path: p, op: "added", after: after[k] });
      else diffValues(before[k], after[k], p, out);
    }
    return out;
  }
  if (Array.isArray(before) && Array.isArray(after) && after.length >= before.length) {
    const prefix = before.every((v, i) => same(v, after[i]));
    if (prefix) {
      after.slice(before.length).forEach((v, i) => out.push({ path: `${path}[${before.length + i}]`, op: "added", after: v }));
      return out;
    }
  }
  out.push({ path: path || "(root)", op: "changed", before, after });
  return out;
}

export function renderDiff(changes) {
  if (!changes.length) return h("p", { class: "muted" }, "No difference.");
  return h(
    "table",
    { class: "diff" },
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Path"), h("th", { scope: "col" }, "Change"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
    h(
      "tbody",
      null,
      changes.map((c) =>
        h(
          "tr",
          { class: `d-${c.op}` },
          h("td", null, h("code", null, c.path)),
          h("td", null, c.op),
          h("td", { class: "before" }, "before" in c ? h("code", null, short(c.before, 400)) : ""),
          h("td", { class: "after" }, "after" in c ? h("code", null, short(c.after, 400)) : ""),
        ),
      ),
    ),
  );
}
