// The graph of actions and transitions as a small SVG, the current position marked.

import { s } from "./dom.js";

/**
 * graph: {actions: [name], transitions: [[from, to, label?]], entrypoint?}.
 * current: the action the app is at (its next action), highlighted.
 */
export function renderGraph(graph, current, title) {
  const actions = [...new Set([...(graph.actions || [])])];
  const edges = (graph.transitions || []).filter((t) => t && t[0] != null && t[1] != null);
  for (const [a, b] of edges) {
    if (!actions.includes(a)) actions.push(a);
    if (!actions.includes(b)) actions.push(b);
  }
  if (current && !actions.includes(current)) actions.push(current);
  // Layers by breadth-first distance from the entrypoint (or the first action).
  const start = graph.entrypoint && actions.includes(graph.entrypoint) ? graph.entrypoint : actions[0];
  const layer = new Map();
  const queue = start === undefined ? [] : [start];
  if (start !== undefined) layer.set(start, 0);
  while (queue.length) {
    const a = queue.shift();
    for (const [from, to] of edges) {
      if (from === a && !layer.has(to)) {
        layer.set(to, layer.get(a) + 1);
        queue.push(to);
      }
    }
  }
  let next = Math.max(-1, ...layer.values()) + 1;
  for (const a of actions) if (!layer.has(a)) layer.set(a, next++);
  const rows = new Map();
  const pos = new Map();
  const W = 130, H = 34, GX = 60, GY = 26, PAD = 30;
  for (const a of actions) {
    const l = layer.get(a);
    const r = rows.get(l) || 0;
    rows.set(l, r + 1);
    pos.set(a, { x: PAD + l * (W + GX), y: PAD + r * (H + GY) });
  }
  const width = PAD * 2 + (Math.max(0, ...layer.values()) + 1) * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, ...rows.values()) * (H + GY) - GY + 30;
  const svg = s("svg", {
    class: "graph",
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    "aria-label": title || "graph of actions",
  });
  svg.appendChild(
    s("defs", null, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))),
  );
  for (const [from, to, label] of edges) {
    const a = pos.get(from), b = pos.get(to);
    let d;
    if (from === to) {
      d = `M${a.x + W * 0.7},${a.y + H} C${a.x + W * 0.9},${a.y + H + 30} ${a.x + W * 0.1},${a.y + H + 30} ${a.x + W * 0.3},${a.y + H}`;
    } else if (b.x > a.x) {
      const mx = (a.x + W + b.x) / 2;
      d = `M${a.x + W},${a.y + H / 2} C${mx},${a.y + H / 2} ${mx},${b.y + H / 2} ${b.x},${b.y + H / 2}`;
    } else {
      const low = Math.max(a.y, b.y) + H + 22;
      d = `M${a.x + W / 2},${a.y + H} C${a.x + W / 2},${low} ${b.x + W / 2},${low} ${b.x + W / 2},${b.y + H}`;
    }
    const path = s("path", { d, class: "edge", "marker-end": "url(#arrow)" });
    if (label) path.appendChild(s("title", null, String(label)));
    svg.appendChild(path);
  }
  for (const a of actions) {
    const p = pos.get(a);
    const here = a === current;
    const text = a.length > 16 ? a.slice(0, 15) + "…" : a;
    svg.appendChild(
      s(
        "g",
        { class: here ? "node current" : "node", "data-action": a },
        s("title", null, here ? `${a} (current position)` : a),
        s("rect", { x: p.x, y: p.y, width: W, height: H, rx: 8 }),
        s("text", { x: p.x + W / 2, y: p.y + H / 2 + 5, "text-anchor": "middle" }, text),
      ),
    );
  }
  return svg;
}

/** A graph from the transitions seen in events (action -> next_action). */
export function observedGraph(events) {
  const actions = [];
  const seen = new Set();
  const transitions = [];
  for (const e of events) {
    for (const a of [e.action, e.next_action]) {
      if (a && !actions.includes(a)) actions.push(a);
    }
    const failed = Boolean(e.error) || String(e.kind).endsWith("_failed");
    if (e.action && e.next_action && !failed) {
      const key = e.action + "\u0000" + e.next_action;
      if (!seen.has(key)) {
        seen.add(key);
        transitions.push([e.action, e.next_action]);
      }
    }
  }
  const first = events.find((e) => e.action);
  return { actions, transitions, entrypoint: first ? first.action : undefined };
}
