// Writes an agent's recorded first request as a fixture for tests/server/fixtures.test.mjs:
// the real endpoint, headers and body structure (every key, message, block and tool), with
// long texts shortened so the fixture replays on the 4096-token test server, and ids,
// paths and secrets replaced by fixed placeholders.
import { writeFileSync } from "node:fs";

const KEEP_HEADERS = ["content-type", "accept", "anthropic-version", "anthropic-beta", "x-app", "originator", "user-agent", "authorization", "x-api-key"];
const MAX_TEXT = 160;

function scrubString(s, root) {
  let out = s;
  if (root) out = out.split(root).join("/tmp/project");
  out = out.replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, "00000000-0000-0000-0000-000000000000");
  out = out.replace(/\b[0-9a-f]{32,}\b/gi, (m) => "0".repeat(m.length));
  out = out.replace(/\b\d{4}-\d{2}-\d{2}\b/g, "2026-01-01");
  if (out.length > MAX_TEXT) out = out.slice(0, MAX_TEXT) + ` [… ${out.length - MAX_TEXT} more characters in the real request]`;
  return out;
}

function scrub(value, root) {
  if (typeof value === "string") return scrubString(value, root);
  if (Array.isArray(value)) return value.map((v) => scrub(v, root));
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = scrub(v, root);
    return out;
  }
  return value;
}

export function writeFixture(file, recordedFrom, record, root) {
  const headers = {};
  for (const k of KEEP_HEADERS) {
    if (record.headers[k] === undefined) continue;
    headers[k] = k === "authorization" ? "Bearer dummy" : k === "x-api-key" ? "dummy" : record.headers[k];
  }
  const body = scrub(record.body, root);
  delete body.ds4_test_output;
  const fixture = {
    recorded_from: recordedFrom,
    method: record.method,
    path: record.path,
    headers,
    body,
  };
  writeFileSync(file, JSON.stringify(fixture, null, 1) + "\n");
  return file;
}
