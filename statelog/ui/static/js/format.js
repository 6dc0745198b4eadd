// Values as short readable text (never markup).

export function json(value) {
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

export function short(value, max = 160) {
  const text = typeof value === "string" ? JSON.stringify(value) : json(value);
  if (text === undefined) return "undefined";
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

export function time(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  if (Number.isNaN(d.getTime()) || d.getTime() === 0) return "";
  return d.toISOString().replace("T", " ").replace("Z", "").slice(0, 23);
}

export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  if (seconds === 0) return "0";
  if (seconds < 0.001) return (seconds * 1e6).toFixed(0) + " µs";
  if (seconds < 1) return (seconds * 1000).toFixed(1) + " ms";
  return seconds.toFixed(2) + " s";
}

export const STATUSES = [
  "queued",
  "running",
  "halted",
  "waiting_for_input",
  "completed",
  "failed",
  "cancelled",
  "timed_out",
  "interrupted",
  "unknown",
];

export const ACTIVE = new Set(["queued", "running"]);
