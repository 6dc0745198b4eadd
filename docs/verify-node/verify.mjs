// An independent verifier of statelog's hash chain, written in JavaScript.
//
//   node verify.mjs --export FILE [--hmac-key-env VAR] [--public-key KEY.pub]
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
// Signed checkpoint lines (`statelog_checkpoint`, docs/operations.md) are
// checked as a chain: each body is RFC 8785 bytes, numbered 1, 2, 3 ... and
// names the SHA-256 of the one before; the latest one's Merkle root equals the
// heads its chain recorded, and every head a checkpoint signed is the event the
// file holds at that sequence (a full export must hold every signed stream).
// With --public-key (the PEM file `statelog keys generate` wrote), each
// signature is checked with Ed25519 (node:crypto) under that key; without it
// the signatures are not checked and the summary says so.
//
// --vectors checks the RFC 8785 test vectors statelog's Python code wrote.
//
// Exit 0 when everything holds, 1 when something does not (each problem on a
// line of its own), 2 for bad usage or an unreadable file.
import { createHash, createHmac, createPublicKey, verify as verifySignature } from "node:crypto";
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

// ---------------------------------------------------------------- checkpoints

function sha256(bytes) {
  return createHash("sha256").update(bytes).digest();
}

// RFC 6962 shape: leaf = sha256(0x00 || jcs([pk, app, seq, hash])), node =
// sha256(0x01 || left || right), split at the largest power of two below n.
function merkleRoot(heads) {
  const codePoints = (a, b) => {
    const x = Array.from(a, (c) => c.codePointAt(0));
    const y = Array.from(b, (c) => c.codePointAt(0));
    for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
      if (x[i] !== y[i]) return x[i] - y[i];
    }
    return x.length - y.length;
  };
  const entries = [...heads.values()].sort(
    (a, b) => codePoints(a.pk, b.pk) || codePoints(a.app, b.app),
  );
  if (entries.length === 0) return sha256(Buffer.alloc(0)).toString("hex");
  const leaves = entries.map((h) =>
    sha256(Buffer.concat([Buffer.from([0]), Buffer.from(canonicalize([h.pk, h.app, h.seq, h.hash]), "utf8")])),
  );
  const tree = (nodes) => {
    if (nodes.length === 1) return nodes[0];
    let split = 1; // the largest power of two below nodes.length
    while (split * 2 < nodes.length) split *= 2;
    return sha256(Buffer.concat([Buffer.from([1]), tree(nodes.slice(0, split)), tree(nodes.slice(split))]));
  };
  return tree(leaves).toString("hex");
}

function keyId(publicKey) {
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url");
  return sha256(raw).toString("hex");
}

// Replays the checkpoint lines; returns {problems, heads, signed, latest}.
function checkCheckpoints(lines, publicKey) {
  const problems = [];
  const heads = new Map(); // stream -> {pk, app, seq, hash}
  const signed = []; // every head any checkpoint signed: {stream, seq, hash, number}
  const id = publicKey === null ? null : keyId(publicKey);
  let previous = "";
  let latest = null;
  let expected = 1;
  for (const { where, line } of lines) {
    const { sequence, body, signature } = line;
    let content;
    try {
      content = JSON.parse(body);
    } catch (error) {
      problems.push(`${where}: checkpoint body is not JSON (${error.message})`);
      break;
    }
    if (canonicalize(content) !== body) {
      problems.push(`${where}: checkpoint #${sequence}: its body is not in canonical form`);
      break;
    }
    if (content.format !== "statelog-checkpoint" || content.version !== 1) {
      problems.push(`${where}: not a statelog-checkpoint v1`);
      break;
    }
    if (sequence !== expected || content.sequence !== expected) {
      problems.push(
        `${where}: checkpoint #${sequence} carries sequence ${content.sequence}, expected ` +
          `${expected} (an old checkpoint replayed, or one deleted)`,
      );
      break;
    }
    if (content.previous !== previous) {
      problems.push(`${where}: checkpoint #${sequence} does not link to checkpoint #${expected - 1}`);
      break;
    }
    if (publicKey !== null) {
      if (content.key_id !== id) {
        problems.push(`${where}: checkpoint #${sequence} names key ${content.key_id}, not the given key ${id}`);
        break;
      }
      let good = false;
      try {
        good = verifySignature(null, Buffer.from(body, "utf8"), publicKey, Buffer.from(signature, "hex"));
      } catch {
        good = false;
      }
      if (!good) {
        problems.push(`${where}: checkpoint #${sequence}: signature does not verify`);
        break;
      }
    }
    for (const [pk, app, seq, hash] of content.changed) {
      const stream = JSON.stringify([pk, app]);
      heads.set(stream, { pk, app, seq, hash });
      signed.push({ stream, seq, hash, number: sequence });
    }
    latest = content;
    previous = sha256(Buffer.from(body, "utf8")).toString("hex");
    expected += 1;
  }
  if (latest !== null && problems.length === 0) {
    if (latest.streams !== heads.size || merkleRoot(heads) !== latest.root) {
      problems.push(`checkpoint #${latest.sequence}: its root does not match the heads its chain recorded`);
    }
  }
  return { problems, heads, signed, latest };
}

function checkExport(path, key, publicKey) {
  const lines = readFileSync(path, "utf8").split("\n").filter((line) => line.trim() !== "");
  const problems = [];
  const heads = new Map(); // JSON.stringify([partition_key, app_id]) -> {seq, hash}
  let events = 0;
  let legacy = 0;
  const checkpointLines = [];
  const hashes = new Map(); // stream -> [hash at sequence 0, 1, 2, ...]
  let complete = false;
  lines.forEach((line, index) => {
    const where = `line ${index + 1}`;
    let record;
    try {
      record = JSON.parse(line);
    } catch (error) {
      problems.push(`${where}: not JSON (${error.message})`);
      return;
    }
    if ("statelog_export" in record) {
      complete = record.complete === true;
      return;
    }
    if ("statelog_checkpoint" in record) {
      checkpointLines.push({ where, line: record.statelog_checkpoint });
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
    if (!hashes.has(stream)) hashes.set(stream, []);
    hashes.get(stream)[record.sequence_id] = record.hash;
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
  const chain = checkCheckpoints(checkpointLines, publicKey);
  problems.push(...chain.problems);
  if (chain.latest !== null && chain.problems.length === 0) {
    const number = chain.latest.sequence;
    for (const [stream, head] of chain.heads) {
      const held = heads.get(stream);
      if (held === undefined) {
        // a partial export (no "complete" header) is held only to its own streams
        if (complete) problems.push(`stream ${stream}: is missing, checkpoint #${number} signed it up to ${head.seq}`);
      } else if (held.seq < head.seq) {
        problems.push(`stream ${stream}: ends at ${held.seq}, checkpoint #${number} signed it up to ${head.seq}`);
      }
    }
    for (const { stream, seq, hash, number: at } of chain.signed) {
      const held = hashes.get(stream);
      if (held !== undefined && seq < held.length && held[seq] !== hash) {
        problems.push(`stream ${stream} sequence_id ${seq}: is not the event checkpoint #${at} signed`);
      }
    }
  } else if (publicKey !== null && chain.latest === null && chain.problems.length === 0) {
    problems.push("the file carries no signed checkpoint, but a public key was given");
  }
  for (const problem of problems) console.log(problem);
  const checked = events - legacy;
  const count = checkpointLines.length;
  const signatures = publicKey === null ? "signatures not checked" : "signatures checked";
  console.log(
    `${problems.length === 0 ? "ok" : "BROKEN"}: ${checked} v2 events checked in ${heads.size} ` +
      `streams; ${legacy} v1 events linked but not re-hashed; ${count} checkpoints (${signatures})`,
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
  const usage =
    "usage: node verify.mjs --export FILE [--hmac-key-env VAR] [--public-key KEY.pub] | --vectors FILE";
  const [mode, file, ...rest] = argv;
  if (!file || !["--export", "--vectors"].includes(mode)) {
    console.error(usage);
    return 2;
  }
  let key = null;
  let publicKey = null;
  for (let i = 0; i < rest.length; i += 2) {
    const [option, value] = [rest[i], rest[i + 1]];
    if (mode !== "--export" || !value || !["--hmac-key-env", "--public-key"].includes(option)) {
      console.error(usage);
      return 2;
    }
    if (option === "--hmac-key-env") {
      if (process.env[value] === undefined) {
        console.error(`environment variable ${value} is not set`);
        return 2;
      }
      key = Buffer.from(process.env[value], "utf8");
    } else {
      try {
        publicKey = createPublicKey(readFileSync(value));
      } catch (error) {
        console.error(`cannot read public key ${value}: ${error.message}`);
        return 2;
      }
      if (publicKey.asymmetricKeyType !== "ed25519") {
        console.error(`${value} holds a ${publicKey.asymmetricKeyType} key, expected Ed25519`);
        return 2;
      }
    }
  }
  try {
    return mode === "--export" ? checkExport(file, key, publicKey) : checkVectors(file);
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    return 2;
  }
}

process.exit(main(process.argv.slice(2)));
