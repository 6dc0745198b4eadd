// An independent implementation, in another language, of what statelog hashes.
//
//   node verify.mjs --vectors docs/canonical-vectors.json
//
// Each vector holds a JSON text and the RFC 8785 canonical form statelog's
// Python code produces for it. This script parses the JSON with JavaScript's own
// JSON.parse and canonicalises it with the npm `canonicalize` package (RFC 8785):
// every vector must come out byte for byte the same. Exit 0 when all match,
// 1 when one differs, 2 for bad usage.
import { readFileSync } from "node:fs";
import canonicalizeModule from "canonicalize";

const canonicalize = canonicalizeModule.default ?? canonicalizeModule;

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

const [flag, file] = process.argv.slice(2);
if (flag !== "--vectors" || !file) {
  console.error("usage: node verify.mjs --vectors FILE");
  process.exit(2);
}
process.exit(checkVectors(file));
