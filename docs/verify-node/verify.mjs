// An independent verifier of statelog's hash chain, written in JavaScript.
//
//   node verify.mjs --export FILE [--hmac-key-env VAR] [--public-key KEY.pub]
//   node verify.mjs --kafka BOOTSTRAP --topic TOPIC [--hmac-key-env VAR] [--timeout SECONDS]
//                   [--session-timeout MS]
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
// --kafka reads the events topic itself (npm kafkajs; @msgpack/msgpack for
// msgpack values): every record of every partition from its start to its end
// offset at start-up, through a fresh consumer group that commits nothing
// (its session timeout: --session-timeout, 6000 ms by default, the least a
// Kafka broker allows unless configured otherwise; some brokers join a group
// faster with less).
// Each record is decoded as docs/wire-format.md says (key, value, headers; a
// record whose headers disagree with its value is named) and judged by the
// rules of statelog's own Kafka readers (eventstore/kafka/_store.py, _learn):
//   - a fence record (empty key, `statelog-fence-claim: EPOCH:OWNER`) opens a
//     newer epoch in its partition (an older or equal one is noted as stale);
//   - an event whose last header is `statelog-fence` naming another epoch than
//     the one open at its offset is fenced: a zombie writer's late record,
//     skipped by readers, reported on a `note:` line and counted, not a failure;
//   - per stream, the first kept record is sequence_id 0 with prev_hash "",
//     the next one links to the kept head; the same (stream, sequence_id) again
//     with the same hash is a duplicate (a producer retry or a relay
//     re-publish: counted, fine), with another hash a fork; a jump is a gap.
// Every record's hash is recomputed as for --export, duplicates and fenced
// records included. The relay's checkpoints (topic `<topic>.checkpoints`) are
// not read here: check them in an export with --public-key.
//
// --vectors checks the RFC 8785 test vectors statelog's Python code wrote.
//
// Exit 0 when everything holds, 1 when something does not (each problem on a
// line of its own), 2 for bad usage, an unreadable file, a missing topic, an
// unreachable broker or a topic not read to its end within --timeout (120 s).
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

// ---------------------------------------------------------------------- Kafka

const WIRE_VERSION = "1";
const CONTENT_TYPES = new Set(["application/json", "application/msgpack"]);

// msgspec writes a datetime as the msgpack timestamp extension (-1); decode it
// to the RFC 3339 text the JSON wire carries, keeping the microseconds (the
// library's own decoder would make a millisecond Date of it).
async function msgpackDecoder() {
  const { decode, ExtensionCodec } = await import("@msgpack/msgpack");
  const extensionCodec = new ExtensionCodec();
  extensionCodec.register({
    type: -1,
    encode: () => null,
    decode: (data) => {
      const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
      let seconds;
      let nanos;
      if (data.byteLength === 4) {
        [seconds, nanos] = [view.getUint32(0), 0];
      } else if (data.byteLength === 8) {
        const high = view.getUint32(0);
        [seconds, nanos] = [(high & 0x3) * 2 ** 32 + view.getUint32(4), high >>> 2];
      } else if (data.byteLength === 12) {
        [seconds, nanos] = [Number(view.getBigInt64(4)), view.getUint32(0)];
      } else {
        throw new Error(`a msgpack timestamp of ${data.byteLength} bytes`);
      }
      const whole = new Date(seconds * 1000).toISOString().slice(0, 19);
      return `${whole}.${String(Math.floor(nanos / 1000)).padStart(6, "0")}Z`;
    },
  });
  return (bytes) => decode(bytes, { extensionCodec });
}

// The record key of a stream: escape(partition_key) + "/" + escape(app_id).
function recordKey(partitionKey, appId) {
  const escape = (part) => part.replaceAll("%", "%25").replaceAll("/", "%2F");
  return Buffer.from(`${escape(partitionKey)}/${escape(appId)}`, "utf8");
}

// kafkajs gives headers as an object in record order; a repeated name is an array.
function headerText(headers, name) {
  const raw = headers[name];
  if (raw === undefined || raw === null) return undefined;
  const last = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  return Buffer.from(last).toString("utf8");
}

// "<epoch>:<owner>"; a malformed one is the fence (-1, "?"), as statelog reads it.
function parseFence(text) {
  const at = text.indexOf(":");
  const [epoch, owner] = at < 0 ? ["", ""] : [text.slice(0, at), text.slice(at + 1)];
  if (!/^[0-9]+$/.test(epoch) || owner === "") return { epoch: -1, owner: "?" };
  return { epoch: Number(epoch), owner };
}

const fenceText = (fence) => (fence === null ? "no fence" : `epoch ${fence.epoch} (${fence.owner})`);
const sameFence = (a, b) => a !== null && b !== null && a.epoch === b.epoch && a.owner === b.owner;

// The value of a record as an event, with the checks decode_record makes: the
// wire version, the content type, and key and headers agreeing with the value.
function decodeRecord(message, decodeMsgpack) {
  const headers = message.headers ?? {};
  const wire = headerText(headers, "statelog-wire");
  if (wire !== WIRE_VERSION) {
    throw new Error(wire === undefined ? "no statelog-wire header" : `statelog-wire version ${wire}`);
  }
  const type = headerText(headers, "content-type");
  if (!CONTENT_TYPES.has(type)) throw new Error(`content-type ${JSON.stringify(type)}`);
  if (!message.value || message.value.length === 0) throw new Error("no value");
  const headerVersion = headerText(headers, "schema_version") ?? "";
  if (!/^[0-9]+$/.test(headerVersion)) throw new Error(`schema_version header ${JSON.stringify(headerVersion)}`);
  if (Number(headerVersion) > 2) throw new Error(`an event of schema_version ${headerVersion}, newer than 2`);
  const event =
    type === "application/json"
      ? JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(message.value))
      : decodeMsgpack(message.value);
  if (event === null || typeof event !== "object" || Array.isArray(event)) throw new Error("the value is not an event");
  for (const [field, kind] of [["partition_key", "string"], ["app_id", "string"], ["kind", "string"], ["hash", "string"]]) {
    if (typeof event[field] !== kind) throw new Error(`the value has no ${field}`);
  }
  if (!Number.isSafeInteger(event.sequence_id) || event.sequence_id < 0) throw new Error("the value has no sequence_id");
  const disagree = [];
  if (!message.key || !recordKey(event.partition_key, event.app_id).equals(message.key)) {
    disagree.push(`key ${JSON.stringify(message.key?.toString("utf8") ?? null)}`);
  }
  if (headerText(headers, "sequence_id") !== String(event.sequence_id)) disagree.push("sequence_id header");
  if (headerText(headers, "kind") !== event.kind) disagree.push("kind header");
  if (headerText(headers, "hash") !== event.hash) disagree.push("hash header");
  if (Number(headerVersion) === 2 && (event.schema_version ?? 1) !== 2) disagree.push("schema_version header");
  if (disagree.length > 0) throw new Error(`the value disagrees with its ${disagree.join(", ")}`);
  return event;
}

// Reads every record of the topic, from the start of each partition to its end
// at start-up, and judges each as statelog's own Kafka readers do
// (eventstore/kafka/_store.py, _learn): fences first, then the chain.
async function checkKafka(bootstrap, topic, key, timeoutSeconds, sessionTimeout) {
  const { Kafka, logLevel } = await import("kafkajs");
  const decodeMsgpack = await msgpackDecoder();
  const kafka = new Kafka({
    clientId: "statelog-verify-node",
    brokers: bootstrap.split(","),
    logLevel: logLevel.NOTHING, // its errors reach the caller, who says them once
    retry: { retries: 3 },
  });
  const admin = kafka.admin();
  const ends = new Map(); // partition -> the offset to read up to
  await admin.connect();
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    if (topics.length !== 1 || topics[0].partitions.length === 0) throw new Error(`no topic ${topic}`);
    for (const { partition, high } of await admin.fetchTopicOffsets(topic)) ends.set(partition, Number(high));
  } finally {
    await admin.disconnect();
  }

  const problems = [];
  const notes = [];
  const streams = new Map(); // stream -> {partition, hashes: [hash at 0, 1, ...]}
  const fences = new Map(); // partition -> the newest fence opened in it
  const counts = { records: 0, events: 0, legacy: 0, duplicates: 0, fenced: 0, fenceRecords: 0 };

  const judge = (partition, message) => {
    const where = `partition ${partition} offset ${message.offset}`;
    const headers = message.headers ?? {};
    counts.records += 1;
    if (!message.key || message.key.length === 0) {
      const claim = headers["statelog-fence-claim"];
      if (claim !== undefined) {
        counts.fenceRecords += 1;
        const fence = parseFence(Buffer.from(Array.isArray(claim) ? claim[0] : claim).toString("utf8"));
        const current = fences.get(partition) ?? null;
        if (current !== null && fence.epoch <= current.epoch) {
          notes.push(`${where}: a stale fence record (${fenceText(fence)}, the partition is at ${fenceText(current)})`);
        } else {
          fences.set(partition, fence);
        }
        return;
      }
    }
    let event;
    try {
      event = decodeRecord(message, decodeMsgpack);
    } catch (error) {
      problems.push(`${where}: not a statelog record: ${error.message}`);
      return;
    }
    const stream = JSON.stringify([event.partition_key, event.app_id]);
    const seq = event.sequence_id;
    const name = `${where}: stream ${stream} sequence_id ${seq}`;
    // every hash is re-checked, that of a duplicate or a fenced record too
    if ((event.schema_version ?? 1) < 2) {
      counts.legacy += 1;
    } else {
      counts.events += 1;
      let expected;
      try {
        expected = digest(canonicalize(hashView(event)), key);
      } catch (error) {
        problems.push(`${name}: ${error.message}`);
        return;
      }
      if (expected !== event.hash) problems.push(`${name}: hash does not match its content`);
    }
    // the fence rule: an event whose statelog-fence header (its last) is not the
    // epoch open in its partition is a late write of a writer that lost it
    const names = Object.keys(headers);
    if (names.length > 0 && names[names.length - 1] === "statelog-fence") {
      const fence = parseFence(headerText(headers, "statelog-fence"));
      const current = fences.get(partition) ?? null;
      if (!sameFence(fence, current)) {
        counts.fenced += 1;
        notes.push(
          `${name}: fenced (skipped by readers, not a failure): written in ${fenceText(fence)}, ` +
            `the partition is at ${fenceText(current)}`,
        );
        return;
      }
    }
    const held = streams.get(stream);
    if (held === undefined) {
      if (seq === 0 && (event.prev_hash ?? "") === "") {
        streams.set(stream, { partition, hashes: [event.hash] });
      } else {
        problems.push(`${name}: has no predecessor (a gap: the stream's first record here is not sequence_id 0)`);
      }
      return;
    }
    const last = held.hashes.length - 1;
    if (held.partition === partition && seq === last + 1 && (event.prev_hash ?? "") === held.hashes[last]) {
      held.hashes.push(event.hash);
    } else if (seq <= last && held.hashes[seq] === event.hash) {
      counts.duplicates += 1; // a producer retry or a relay re-publish: the first copy wins
    } else if (held.partition !== partition) {
      problems.push(`${name}: the stream lives in partition ${held.partition}`);
    } else if (seq <= last) {
      problems.push(`${name}: a fork: a second record with another hash, and no newer fence explains it`);
    } else if (seq === last + 1) {
      problems.push(`${name}: prev_hash does not link to the event before it`);
    } else {
      problems.push(`${name}: expected sequence_id ${last + 1} (a gap)`);
    }
  };

  // kafkajs reads through a consumer group (a fresh one, nothing committed).
  // Tansu lists an end offset that may fall short of the last record of a
  // partition's last batch, so the end is also raised to the high watermark
  // of the first fetch of the partition, as statelog's readers probe it.
  const next = new Map([...ends.keys()].map((p) => [p, 0]));
  const probed = new Set();
  const pending = new Set([...ends].filter(([, end]) => end > 0).map(([p]) => p));
  if (pending.size > 0) {
    const consumer = kafka.consumer({
      groupId: `statelog-verify-node-${process.pid}-${Date.now()}`,
      // Kafka's default group.min.session.timeout.ms; a broker that allows less
      // joins sooner with less (--session-timeout)
      sessionTimeout,
      heartbeatInterval: Math.min(500, Math.floor(sessionTimeout / 3)),
    });
    await consumer.connect();
    let timer;
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await new Promise((resolve, reject) => {
        timer = setTimeout(
          () => reject(new Error(`did not reach the end of ${topic} within ${timeoutSeconds} s`)),
          timeoutSeconds * 1000,
        );
        consumer
          .run({
            autoCommit: false,
            eachBatch: async ({ batch }) => {
              const partition = batch.partition;
              if (!pending.has(partition)) return;
              if (!probed.has(partition)) {
                probed.add(partition);
                ends.set(partition, Math.max(ends.get(partition), Number(batch.highWatermark)));
              }
              for (const message of batch.messages) {
                const offset = Number(message.offset);
                if (offset < next.get(partition) || offset >= ends.get(partition)) continue;
                judge(partition, message);
                next.set(partition, offset + 1);
              }
              if (next.get(partition) >= ends.get(partition)) pending.delete(partition);
              if (pending.size === 0) resolve();
            },
          })
          .catch(reject);
      });
    } finally {
      clearTimeout(timer);
      await consumer.disconnect();
    }
  }

  for (const note of notes) console.log(`note: ${note}`);
  for (const problem of problems) console.log(problem);
  console.log(
    `${problems.length === 0 ? "ok" : "BROKEN"}: ${counts.events} v2 events checked in ${streams.size} ` +
      `streams; ${counts.records} records read from ${ends.size} partitions of ${topic}; ` +
      `${counts.duplicates} duplicates; ${counts.fenced} fenced; ${counts.fenceRecords} fence records; ` +
      `${counts.legacy} v1 events not re-hashed`,
  );
  return problems.length === 0 ? 0 : 1;
}

async function main(argv) {
  const usage =
    "usage: node verify.mjs --export FILE [--hmac-key-env VAR] [--public-key KEY.pub]\n" +
    "       node verify.mjs --kafka BOOTSTRAP --topic TOPIC [--hmac-key-env VAR] [--timeout SECONDS]\n" +
    "                       [--session-timeout MS]\n" +
    "       node verify.mjs --vectors FILE";
  const [mode, file, ...rest] = argv;
  const allowed = { "--export": ["--hmac-key-env", "--public-key"], "--kafka": ["--hmac-key-env", "--topic", "--timeout", "--session-timeout"] };
  if (!file || !["--export", "--vectors", "--kafka"].includes(mode)) {
    console.error(usage);
    return 2;
  }
  let key = null;
  let publicKey = null;
  let topic = null;
  let timeout = 120;
  let sessionTimeout = 6000;
  for (let i = 0; i < rest.length; i += 2) {
    const [option, value] = [rest[i], rest[i + 1]];
    if (!value || !(allowed[mode] ?? []).includes(option)) {
      console.error(usage);
      return 2;
    }
    if (option === "--hmac-key-env") {
      if (process.env[value] === undefined) {
        console.error(`environment variable ${value} is not set`);
        return 2;
      }
      key = Buffer.from(process.env[value], "utf8");
    } else if (option === "--topic") {
      topic = value;
    } else if (option === "--session-timeout") {
      sessionTimeout = Number(value);
      if (!Number.isInteger(sessionTimeout) || sessionTimeout < 1000 || sessionTimeout > 300000) {
        console.error(`--session-timeout ${value}: expected milliseconds, 1000 to 300000`);
        return 2;
      }
    } else if (option === "--timeout") {
      timeout = Number(value);
      if (!(timeout > 0)) {
        console.error(`--timeout ${value}: expected a number of seconds > 0`);
        return 2;
      }
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
  if (mode === "--kafka") {
    if (topic === null) {
      console.error(usage);
      return 2;
    }
    try {
      return await checkKafka(file, topic, key, timeout, sessionTimeout);
    } catch (error) {
      console.error(`cannot read topic ${topic} from ${file}: ${error.message}`);
      return 2;
    }
  }
  try {
    return mode === "--export" ? checkExport(file, key, publicKey) : checkVectors(file);
  } catch (error) {
    console.error(`cannot read ${file}: ${error.message}`);
    return 2;
  }
}

process.exit(await main(process.argv.slice(2)));
