// A JSON value as a collapsible tree of <details> (keyboard-operable, text only).

import { h } from "./dom.js";
import { short } from "./format.js";

function leaf(value) {
  const type = value === null ? "null" : typeof value;
  return h("code", { class: `jv jv-${type}` }, short(value, 100000));
}

function node(key, value, depth, open) {
  const label = key === null ? null : h("span", { class: "jk" }, key);
  if (value === null || typeof value !== "object") {
    return h("li", null, label, label ? ": " : null, leaf(value));
  }
  const isArray = Array.isArray(value);
  const entries = isArray ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  const count = isArray ? `[${entries.length}]` : `{${entries.length}}`;
  const body = h(
    "ul",
    { class: "jt" },
    entries.map(([k, v]) => node(k, v, depth + 1, open)),
  );
  return h(
    "li",
    null,
    h(
      "details",
      { open: depth < open ? true : null },
      h("summary", null, label, label ? " " : null, h("span", { class: "muted" }, count)),
      body,
    ),
  );
}

/** The tree; levels above `open` start expanded. */
export function jsonTree(value, open = 2) {
  return h("ul", { class: "jt jt-root" }, node(null, value, 0, open));
}
