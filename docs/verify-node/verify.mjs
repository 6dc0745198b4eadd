// An independent verifier of statelog's hash chain, written in JavaScript.
//
//   node verify.mjs --export FILE [--hmac-key-env VAR]
//   node verify.mjs --vectors docs/canonical-vectors.json
//
// --export re-checks every event of a `statelog export` file (JSON lines) with
// nothing of statelog's: JavaScript's own JSON.parse, the npm `canonicalize`
// package (RFC 8785) and node:crypto. For each schema-v2 event it rebuilds the
// hash view (docs/wire-format.md, "The hash"): every field but `hash` and
// `legacy`, defaults filled in, `timestamp` with exactly six fractional digits,
// `error` and `parent` with all their members; then
//   hash == sha256(jcs(view))          (or HMAC-SHA-256 under the key)
//   prev_hash == the hash of sequence_id - 1, "" for sequence_id 0
// and every stream's sequence ids run 0, 1, 2, ... with no gap.
// Events of schema v1 were hashed over msgspec's own JSON; only statelog
// itself re-checks those: they are counted and reported, not judged here.
// Signed checkpoint lines (`statelog_checkpoint`) are counted, not checked.
//
// --vectors checks the RFC 8785 test vectors statelog's Python code wrote.
//
// Exit 0 when everything holds, 1 when something does not (each problem on a
// line of its own), 2 for bad usage or an unreadable file.
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import canonicalizeModule from "canonicalize";

const canonicalize = canonicalizeModule.default ?? canonicalizeModule;

const DEFAULTS = {
  action: null,
  next_action: null,
  inputs: {},
  ops: [],
  result: null,
  error: null,
  duration_us: 0,
  attempt: 1,
  parent: null,
  actor: null,
  correlation_id: null,
  data: {},
  prev_hash: "",
};

// "2026-01-02T03:04:05Z" or "...05.5+00:00" -> "2026-01-02T03:04:05.500000Z"
function sixDigits(timestamp) {
  const match = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?(?:Z|\+00:00)$/.exec(timestamp);
  if (!match) throw new Error(`timestamp ${JSON.stringify(timestamp)} is not UTC RFC 3339`);
  return `${match[1]}.${(match[2] ?? "").padEnd(6, "0")}Z`;
}

function hashView(event) {
  const view = { ...DEFAULTS, ...event };
  delete view.hash;
  delete view.legacy;
  view.timestamp = sixDigits(view.timestamp);
  if (view.error !== null) {
    const { type, message, traceback = [] } = view.error;
    view.error = { type, message, traceback };
  }
  if (view.parent !== null) {
    const { partition_key, app_id, sequence_id, relation = "fork" } = view.parent;
    view.parent = { partition_key, app_id, sequence_id, relation };
  }
  return view;
}

function digest(bytes, key) {
  const h = key === null ? createHash("sha256") : createHmac("sha256", key);
  return h.update(bytes, "utf8").digest("hex");
}

function checkExport(path, key) {
  const lines = readFileSync(path, "utf8").split("\n").filter((line) => line.trim() !== "");
  const problems = [];
  const heads = new Map(); // JSON.stringify([partition_key, app_id]) -> {seq, hash}
  let events = 0;
  let legacy = 0;
  let checkpoints = 0;
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`;
    let record;
    try {
      record = JSON.parse(line);
    } catch (error) {
      problems.push(`${where}: not JSON (${error.message})`);
      return;
    }
    if ("statelog_export" in record) return;
    if ("statelog_checkpoint" in record) {
      checkpoints += 1;
      return;
    }
    events += 1;
    const stream = JSON.stringify([record.partition_key, record.app_id]);
    const name = `stream ${stream} sequence_id ${record.sequence_id}`;
    const head = heads.get(stream) ?? { seq: -1, hash: "" };
    if (record.sequence_id !== head.seq + 1) {
      problems.push(`${where}: ${name}: expected sequence_id ${head.seq + 1} (a gap or a reorder)`);
    }
    if ((record.prev_hash ?? "") !== head.hash) {
      problems.push(`${where}: ${name}: prev_hash does not link to the event before it`);
    }
    heads.set(stream, { seq: record.sequence_id, hash: record.hash });
    if ((record.schema_version ?? 1) < 2) {
      legacy += 1;
      return;
    }
    let expected;
    try {
      expected = digest(canonicalize(hashView(record)), key);
    } catch (error) {
      problems.push(`${where}: ${name}: ${error.message}`);
      return;
    }
    if (expected !== record.hash) {
      problems.push(`${where}: ${name}: hash does not match its content`);
    }
  });
  for (const problem of problems) console.log(problem);
  const checked = events - legacy;
  console.log(
    `${problems.length === 0 ? "ok" : "BROKEN"}: ${checked} v2 events checked in ${heads.size} ` +
      `streams; ${legacy} v1 events linked but not re-hashed; ${checkpoints} checkpoints not checked`,
  );
  return problems.length === 0 ? 0 : 1;
}

function checkVectors(path) {
  const vectors = JSON.parse(readFileSync(path, "utf8"));
  let failures = 0;
  for (const vector of vectors) {
    const got = canonicalize(JSON.parse(vector.json));
    if (got !== vector.canonical) {
      failures += 1;
      console.log(`MISMATCH ${vector.name}: got ${got}, statelog wrote ${vector.canonical}`);
    }
  }
  console.log(`${vectors.length - failures} of ${vectors.length} vectors match`);
  return failures === 0 ? 0 : 1;
}

function main(argv) {
  const usage = "usage: node verify.mjs --export FILE [--hmac-key-env VAR] | --vectors FILE";
  const [mode, file, ...rest] = argv;
  if (!file || !["--export", "--vectors"].includes(mode)) {
    console.error(usage);
    return 2;
  }
  let key = null;
  if (rest.length) {
    if (rest[0] !== "--hmac-key-env" || !rest[1] || mode !== "--export") {
      console.error(usage);
      return 2;
    }
    const value = process.env[rest[1]];
    if (value === undefined) {
      console.error(`environment variable ${rest[1]} is not set`);
      return 2;
    }
    key = Buffer.from(value, "utf8");
  }
  try {
    return mode === "--export" ? checkExport(file, key) : checkVectors(file);
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    return 2;
  }
}

process.exit(main(process.argv.slice(2)));
