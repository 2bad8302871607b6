// Structured output end to end: ds4-server on the tiny random-weight model (it knows no
// JSON) samples at temperature 1.0 under a grammar; every output must parse and validate
// against its schema with an independent validator (ajv), and end on its own (EOS at the
// grammar's end) within the token budget. Schemas: ours plus the draft-7 cases of Debian's
// json-schema-test-suite that the converter accepts. Each schema's first sample goes through
// chat's response_format, the other nine through /v1/completions (the same sampler under
// a short prompt). Strict tool calls: their arguments, as the SDKs hand them over, validate
// against the tool's parameter schema.
//
// A random model almost never picks one of the few tokens that close an unbounded string
// (its choice is near uniform over ~128k allowed tokens), so every string here has a bound
// (maxLength, enum, format, anchored pattern): suite cases get maxLength 8 on string schemas
// without one, and cases that still admit unbounded text (any-value schemas, open maps
// whose keys are free strings) are left out and counted.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import AjvModule from "ajv";
import Ajv2020Module from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { startServer, postJson } from "./harness.mjs";

const Ajv = AjvModule.default ?? AjvModule;
const Ajv2020 = Ajv2020Module.default ?? Ajv2020Module;
const addFormats = addFormatsModule.default ?? addFormatsModule;

const SAMPLES = Number(process.env.DS4_GRAMMAR_SAMPLES ?? 10);
const MAX_SUITE_CASES = 12;  // 40 own + 12 = 52 schemas; keeps the run at a few minutes
const BUDGET = 256;
const SUITE_DIR = "/usr/share/json-schema-test-suite/tests/draft7";

let server;
let openai;
let anthropic;
before(async () => {
  server = await startServer();
  openai = new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 0, timeout: 120000 });
  anthropic = new Anthropic({ baseURL: server.base, apiKey: "unused", maxRetries: 0, timeout: 120000 });
});
after(async () => {
  if (server) await server.stop();
});

function validator(draft7) {
  const ajv = draft7 ? new Ajv({ strict: false, allErrors: true })
                     : new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  return ajv;
}
const ajv7 = validator(true);
const ajv2020 = validator(false);

const OWN_SCHEMAS = {
  person: { type: "object", properties: { name: { type: "string", maxLength: 20 }, age: { type: "integer", minimum: 0, maximum: 150 } }, required: ["name", "age"], additionalProperties: false },
  nested: {
    type: "object",
    properties: {
      id: { type: "string", format: "uuid" },
      owner: { type: "object", properties: { email: { type: "string", format: "email" }, since: { type: "string", format: "date" } }, required: ["email"] },
      tags: { type: "array", items: { type: "string", maxLength: 8 }, maxItems: 3 },
      score: { type: "number" },
      active: { type: "boolean" },
    },
    required: ["id", "owner", "active"],
  },
  color_enum: { enum: ["red", "green", "blue"] },
  const_object: { const: { a: [1, "x"], b: null } },
  string_or_null: { type: ["string", "null"], maxLength: 6 },
  int_range: { type: "integer", minimum: -20, maximum: 300 },
  int_exclusive: { type: "integer", exclusiveMinimum: 0, exclusiveMaximum: 10 },
  boolean: { type: "boolean" },
  null: { type: "null" },
  number: { type: "number" },
  int_array: { type: "array", items: { type: "integer" }, minItems: 2, maxItems: 4 },
  tuple: { type: "array", prefixItems: [{ type: "string", maxLength: 5 }, { type: "integer" }, { type: "boolean" }], items: false },
  tuple_open: { type: "array", prefixItems: [{ const: "head" }], items: { type: "null" }, minItems: 1, maxItems: 4 },
  any_of: { anyOf: [{ type: "integer" }, { type: "string", maxLength: 5 }] },
  one_of_tagged: {
    oneOf: [
      { type: "object", properties: { kind: { const: "circle" }, r: { type: "integer", minimum: 1, maximum: 9 } }, required: ["kind", "r"], additionalProperties: false },
      { type: "object", properties: { kind: { const: "square" }, side: { type: "integer" } }, required: ["kind", "side"], additionalProperties: false },
    ],
  },
  all_of: { allOf: [{ type: "object", properties: { a: { type: "integer" } }, required: ["a"] }, { properties: { b: { enum: ["x", "y"] } }, required: ["b"] }] },
  defs_ref: { $defs: { point: { type: "object", properties: { x: { type: "integer" }, y: { type: "integer" } }, required: ["x", "y"], additionalProperties: false } }, type: "object", properties: { from: { $ref: "#/$defs/point" }, to: { $ref: "#/$defs/point" } }, required: ["from", "to"] },
  linked_list: { $defs: { node: { type: "object", properties: { v: { type: "integer", minimum: 0, maximum: 9 }, next: { anyOf: [{ $ref: "#/$defs/node" }, { type: "null" }] } }, required: ["v", "next"], additionalProperties: false } }, $ref: "#/$defs/node" },
  str_length: { type: "string", minLength: 3, maxLength: 8 },
  pattern_code: { type: "string", pattern: "^[A-Z]{2}-[0-9]{3}$" },
  pattern_phone: { type: "string", pattern: "^\\(\\d{3}\\) \\d{3}-\\d{4}$" },
  pattern_alt: { type: "string", pattern: "^(cat|dog)s?(?:!|\\.)?$" },
  pattern_unicode: { type: "string", pattern: "^[α-ω]{1,4}✓$" },
  date: { type: "string", format: "date" },
  date_time: { type: "string", format: "date-time" },
  uuid: { type: "string", format: "uuid" },
  email: { type: "string", format: "email" },
  time: { type: "string", format: "time" },
  additional_bounded_keys: { type: "object", properties: { id: { type: "integer" } }, required: ["id"], additionalProperties: false },
  all_optional: { type: "object", properties: { a: { type: "integer" }, b: { type: "boolean" }, c: { type: "null" } }, additionalProperties: false },
  enum_array: { type: "array", items: { enum: ["a", "b", 3, null] }, maxItems: 5 },
  order: {
    type: "object",
    properties: {
      order_id: { type: "integer", minimum: 1000, maximum: 9999 },
      lines: { type: "array", minItems: 1, maxItems: 3, items: { type: "object", properties: { sku: { type: "string", pattern: "^SKU[0-9]{4}$" }, qty: { type: "integer", minimum: 1, maximum: 99 } }, required: ["sku", "qty"], additionalProperties: false } },
      placed: { type: "string", format: "date-time" },
    },
    required: ["order_id", "lines", "placed"],
    additionalProperties: false,
  },
  unicode_const: { const: "héllo ✓ 日本" },
  unicode_enum: { enum: ["日本", "中文", "Ελληνικά"] },
  points: { type: "array", items: { type: "object", properties: { x: { type: "number" }, y: { type: "number" } }, required: ["x", "y"] }, maxItems: 3 },
  short_string: { type: "string", maxLength: 10 },
  definitions_draft7: { definitions: { n: { type: "integer", minimum: 1, maximum: 5 } }, type: "array", items: { $ref: "#/definitions/n" }, maxItems: 4 },
  nullable_union: { type: ["integer", "boolean", "null"] },
  nested_arrays: { type: "array", items: { type: "array", items: { type: "integer", minimum: 0, maximum: 9 }, maxItems: 3 }, maxItems: 3 },
  string_enum_object: { type: "object", properties: { unit: { enum: ["cm", "in"] }, value: { type: "number" } }, required: ["unit", "value"], additionalProperties: false },
};

// Adds maxLength 8 to string schemas without a bound (see the top of this file).
function capStrings(s) {
  if (Array.isArray(s)) return s.map(capStrings);
  if (s === null || typeof s !== "object") return s;
  const out = {};
  for (const [k, v] of Object.entries(s)) {
    out[k] = ["const", "enum", "default", "examples"].includes(k) ? v : capStrings(v);
  }
  const types = [].concat(out.type ?? []);
  if (types.includes("string") && !("maxLength" in out) && !out.format && !out.pattern && !("enum" in out) && !("const" in out)) {
    out.maxLength = Math.max(8, out.minLength ?? 0);
  }
  return out;
}

// Whether every value of the schema has bounded text: no any-value schema, no free map
// keys, no string without a bound (conservative).
function bounded(s, root, seen = new Set()) {
  if (s === false) return true;
  if (s === true || s === null || typeof s !== "object" || Array.isArray(s)) return false;
  if ("const" in s || "enum" in s) return true;
  if (s.$ref) {
    if (seen.has(s.$ref)) return true;
    seen.add(s.$ref);
    if (!s.$ref.startsWith("#")) return false;
    let t = root;
    for (const part of s.$ref.slice(1).split("/").filter(Boolean)) t = t?.[decodeURIComponent(part).replace(/~1/g, "/").replace(/~0/g, "~")];
    return t !== undefined && bounded(t, root, seen);
  }
  for (const k of ["anyOf", "oneOf", "allOf"]) {
    if (s[k] && !s[k].every((x) => bounded(x, root, seen))) return false;
    if (s[k]) return true;
  }
  let types = [].concat(s.type ?? []);
  if (!types.length) {
    if ("properties" in s || "required" in s || "additionalProperties" in s) types.push("object");
    if ("items" in s || "prefixItems" in s || "minItems" in s || "maxItems" in s) types.push("array");
    if ("minLength" in s || "maxLength" in s || "pattern" in s || "format" in s) types.push("string");
    if ("minimum" in s || "maximum" in s) types.push("number");
    if (!types.length) return false;
  }
  for (const t of types) {
    if (t === "string" && !("maxLength" in s) && !s.format && !(s.pattern ?? "").endsWith("$")) return false;
    if (t === "object") {
      if (s.additionalProperties !== undefined && s.additionalProperties !== false) return false;
      for (const v of Object.values(s.properties ?? {})) if (!bounded(v, root, seen)) return false;
      for (const r of s.required ?? []) if (!(r in (s.properties ?? {}))) return false;
    }
    if (t === "array") {
      const items = Array.isArray(s.items) ? [...s.items, s.additionalItems ?? true] : [...(s.prefixItems ?? []), s.items ?? true];
      const last = items[items.length - 1];
      if (last !== false && !bounded(last, root, seen) && !(s.maxItems === 0)) return false;
      for (const x of items.slice(0, -1)) if (!bounded(x, root, seen)) return false;
    }
  }
  return true;
}

// Draft-7 cases of the official test suite that use keywords we support (anything else is
// refused with a 400, which the loop below checks names a keyword).
function suiteCases() {
  if (!existsSync(SUITE_DIR)) return [];
  const files = ["type", "enum", "const", "properties", "required", "additionalProperties",
                 "items", "additionalItems", "minItems", "maxItems", "minLength", "maxLength",
                 "anyOf", "oneOf", "allOf", "ref", "definitions", "minimum", "maximum",
                 "exclusiveMinimum", "exclusiveMaximum", "pattern", "default", "boolean_schema"];
  const out = [];
  for (const f of files) {
    const path = `${SUITE_DIR}/${f}.json`;
    if (!existsSync(path)) continue;
    for (const c of JSON.parse(readFileSync(path, "utf8"))) out.push({ name: `${f}: ${c.description}`, schema: capStrings(c.schema) });
  }
  return out;
}

// One sample through chat completions' response_format: the prompt carries the schema
// (the "Response Format" section), so it is long.
async function sample(schema, seed, extra = {}) {
  const r = await postJson(server.base, "/v1/chat/completions", {
    model: "deepseek-chat",
    messages: [{ role: "user", content: "Answer in JSON." }],
    response_format: { type: "json_schema", json_schema: { name: "out", schema, strict: true } },
    temperature: 1.0,
    seed,
    max_tokens: BUDGET,
    ...extra,
  });
  return r;
}

// One sample through /v1/completions with llama-server's `json_schema` field: the same
// sampler and grammar behind a three-token prompt, so most samples cost decoding only.
async function sampleCompletion(schema, seed) {
  return postJson(server.base, "/v1/completions", {
    prompt: "JSON:", json_schema: schema, temperature: 1.0, seed, max_tokens: BUDGET,
  });
}

function checkOutput(name, schema, validate, r) {
  assert.equal(r.status, 200, `${name}: ${r.text}`);
  const choice = r.json.choices[0];
  const text = choice.message ? choice.message.content : choice.text;
  assert.equal(choice.finish_reason, "stop", `${name}: did not end on its own: ${JSON.stringify(text)}`);
  let value;
  assert.doesNotThrow(() => { value = JSON.parse(text); }, `${name}: not JSON: ${JSON.stringify(text)}`);
  const ok = validate(value);
  assert.ok(ok, `${name}: ${JSON.stringify(text)} invalid: ${JSON.stringify(validate.errors)}`);
}

test("JSON Schemas: every sampled output validates (ajv)", async () => {
  const stats = { schemas: 0, outputs: 0, refused: [], unbounded: [] };
  const cases = Object.entries(OWN_SCHEMAS).map(([name, schema]) => ({ name, schema, draft7: name === "definitions_draft7" }));
  for (const c of suiteCases()) cases.push({ ...c, draft7: true, suite: true });
  let suiteRun = 0;
  for (const c of cases) {
    if (c.suite && suiteRun >= MAX_SUITE_CASES) break;
    if (c.suite && !bounded(c.schema, c.schema)) {
      stats.unbounded.push(c.name);
      continue;
    }
    assert.ok(c.suite || bounded(c.schema, c.schema), `${c.name} is unbounded`);
    const validate = (c.draft7 ? ajv7 : ajv2020).compile(c.schema);
    const first = await sample(c.schema, 1);
    if (c.suite && first.status === 400) {
      // Refused: the message names what is unsupported.
      assert.match(first.json.error.message, /unsupported|invalid/, c.name);
      stats.refused.push(c.name);
      continue;
    }
    checkOutput(c.name, c.schema, validate, first);
    for (let seed = 2; seed <= SAMPLES; ++seed) checkOutput(c.name, c.schema, validate, await sampleCompletion(c.schema, seed));
    stats.schemas++;
    stats.outputs += SAMPLES;
    if (c.suite) suiteRun++;
  }
  console.log(`grammar: ${stats.schemas} schemas, ${stats.outputs} outputs validated; suite cases: ${stats.refused.length} refused (400), ${stats.unbounded.length} left out as unbounded`);
  assert.ok(stats.schemas >= 50, `only ${stats.schemas} schemas ran`);
});

test("json_object, completions and llama-server fields", async () => {
  for (let seed = 1; seed <= 3; ++seed) {
    // Any object: its strings are unbounded, so a cut at max_tokens is allowed here.
    const r = await postJson(server.base, "/v1/chat/completions", {
      model: "deepseek-chat", messages: [{ role: "user", content: "hi" }],
      response_format: { type: "json_object" }, temperature: 1.0, seed, max_tokens: 128,
    });
    assert.equal(r.status, 200, r.text);
    const text = r.json.choices[0].message.content;
    if (r.json.choices[0].finish_reason === "stop") {
      const v = JSON.parse(text);
      assert.equal(typeof v, "object");
      assert.ok(v !== null && !Array.isArray(v));
    } else {
      assert.ok(text.startsWith("{"), text);
    }
  }
  const schema = OWN_SCHEMAS.person;
  const validate = ajv2020.compile(schema);
  for (let seed = 1; seed <= 3; ++seed) {
    // Completions with response_format, and the top-level json_schema of llama-server.
    for (const extra of [{ response_format: { type: "json_schema", json_schema: { schema } } }, { json_schema: schema }]) {
      const r = await postJson(server.base, "/v1/completions", { prompt: "JSON:", temperature: 1.0, seed, max_tokens: BUDGET, ...extra });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.choices[0].finish_reason, "stop");
      assert.ok(validate(JSON.parse(r.json.choices[0].text)), r.json.choices[0].text);
    }
  }
});

// An independent check of each GBNF output: JavaScript's own parser for arithmetic and
// JSON, a regular expression for the list.
const ARITH = `
root   ::= expr
expr   ::= term (ws [-+] ws term)*
term   ::= factor (ws [*/] ws factor)*
factor ::= number | "(" ws expr ws ")"
number ::= [1-9] [0-9]{0,3} | "0"
ws     ::= " "?
`;
const LIST = `
root ::= item{1,4}
item ::= "- " [a-z]{1,10} ("," " " [a-z]{1,10})? "\\n"
`;
const JSON_GBNF = `
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws
array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws
string ::=
  "\\"" (
    [^"\\\\\\x7F\\x00-\\x1F] |
    "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]{1,10})? ([eE] [-+]? [1-9] [0-9]?)? ws
ws ::= ([ \\t\\n] [ \\t\\n]?)?
`;

test("GBNF grammars: arithmetic, list, JSON", async () => {
  for (let seed = 1; seed <= 6; ++seed) {
    for (const [name, grammar, check] of [
      ["arith", ARITH, (t) => { assert.equal(typeof Function(`"use strict"; return (${t});`)(), "number"); }],
      ["list", LIST, (t) => { assert.match(t, /^(- [a-z]{1,10}(, [a-z]{1,10})?\n){1,4}$/); }],
      ["json", JSON_GBNF, (t) => { JSON.parse(t); }],
    ]) {
      const endpoint = seed % 2 ? "/v1/completions" : "/v1/chat/completions";
      const body = { grammar, temperature: 1.0, seed, max_tokens: name === "json" ? 128 : 256 };
      if (endpoint === "/v1/completions") body.prompt = "Output:";
      else Object.assign(body, { model: "deepseek-chat", messages: [{ role: "user", content: "go" }] });
      const r = await postJson(server.base, endpoint, body);
      assert.equal(r.status, 200, r.text);
      const choice = r.json.choices[0];
      const text = choice.text ?? choice.message.content;
      if (name !== "json" || choice.finish_reason === "stop") {
        assert.equal(choice.finish_reason, "stop", `${name}: ${JSON.stringify(text)}`);
        assert.doesNotThrow(() => check(text), `${name}: ${JSON.stringify(text)}`);
      }
    }
  }
});

test("unsupported keywords and invalid grammars: 400 naming the problem", async () => {
  const bad = async (body, re) => {
    const r = await postJson(server.base, "/v1/chat/completions", { model: "deepseek-chat", messages: [{ role: "user", content: "x" }], ...body });
    assert.equal(r.status, 400, r.text);
    assert.match(r.json.error.message, re);
    return r.json.error;
  };
  const rf = (schema) => ({ response_format: { type: "json_schema", json_schema: { name: "x", schema } } });
  let e = await bad(rf({ type: "object", patternProperties: { "^a": {} } }), /'patternProperties'/);
  assert.equal(e.param, "response_format");
  await bad(rf({ type: "array", uniqueItems: true }), /'uniqueItems'/);
  await bad(rf({ type: "number", minimum: 0.5 }), /'minimum'/);
  await bad(rf({ type: "string", format: "hostname" }), /'format'.*hostname/);
  await bad(rf({ type: "string", pattern: "(?<=a)b" }), /'pattern'.*lookaround/);
  await bad(rf({ not: { type: "null" } }), /'not'/);
  await bad(rf({ $ref: "https://example.com/schema.json" }), /'\$ref'/);
  await bad({ grammar: "root ::= foo" }, /'foo' is used but not defined/);
  await bad({ grammar: "root ::= \"a\" | root \"b\"" }, /left-recursive/);
  await bad({ grammar: "root ::= [a-" }, /unterminated|line 1/);
  await bad({ grammar: "start ::= \"a\"" }, /no 'root' rule/);
  await bad({ json_schema: { type: "string" }, grammar: "root ::= \"a\"" }, /only one of/);
  await bad({ response_format: { type: "xml" } }, /not supported/);
  const r = await postJson(server.base, "/v1/responses", { input: "x", text: { format: { type: "json_schema", name: "x", schema: { type: "object", minProperties: 2 } } } });
  assert.equal(r.status, 400);
  assert.match(r.json.error.message, /'minProperties'/);
  const m = await postJson(server.base, "/v1/messages", { model: "deepseek-chat", max_tokens: 10, messages: [{ role: "user", content: "x" }], output_format: { type: "json_schema", schema: { type: "integer", multipleOf: 2 } } });
  assert.equal(m.status, 400);
  assert.match(m.json.error.message, /'multipleOf'/);
  // The server keeps serving.
  const ok = await sample({ type: "boolean" }, 1);
  assert.equal(ok.status, 200);
});

test("thinking mode: reasoning is free, the answer after </think> is constrained", async () => {
  const schema = OWN_SCHEMAS.order;
  const validate = ajv2020.compile(schema);
  for (let seed = 1; seed <= 3; ++seed) {
    const r = await postJson(server.base, "/v1/chat/completions", {
      model: "deepseek-reasoner",
      messages: [{ role: "user", content: "Make an order." }],
      response_format: { type: "json_schema", json_schema: { name: "order", schema } },
      ds4_test_output_prefix: "Not JSON { at all\n</think>",
      seed, max_tokens: BUDGET,
    });
    assert.equal(r.status, 200, r.text);
    const msg = r.json.choices[0].message;
    assert.equal(msg.reasoning_content, "Not JSON { at all\n");
    assert.equal(r.json.choices[0].finish_reason, "stop", msg.content);
    assert.ok(validate(JSON.parse(msg.content)), msg.content);
  }
});

test("Responses text.format and Anthropic output_format", async () => {
  const schema = OWN_SCHEMAS.defs_ref;
  const validate = ajv2020.compile(schema);
  for (let seed = 1; seed <= 3; ++seed) {
    const r = await postJson(server.base, "/v1/responses", {
      model: "deepseek-chat", input: "Points please.", temperature: 1.0, seed: seed, max_output_tokens: BUDGET,
      text: { format: { type: "json_schema", name: "pts", schema, strict: true } },
    });
    assert.equal(r.status, 200, r.text);
    const item = r.json.output.find((o) => o.type === "message");
    assert.equal(r.json.status, "completed");
    assert.ok(validate(JSON.parse(item.content[0].text)), item.content[0].text);
    const m = await postJson(server.base, "/v1/messages", {
      model: "deepseek-chat", max_tokens: BUDGET, temperature: 1.0,
      messages: [{ role: "user", content: "Points please." }],
      output_config: { format: { type: "json_schema", schema } },
    });
    assert.equal(m.status, 200, m.text);
    assert.equal(m.json.stop_reason, "end_turn");
    assert.ok(validate(JSON.parse(m.json.content.find((b) => b.type === "text").text)));
  }
});

// ---- strict tool calls: the model writes DSML; strict tools' parameter values are
// constrained to the tool's schema. The clients (openai, @anthropic-ai/sdk) get the calls as
// JSON arguments, which ajv validates against the declared parameters.
const WEATHER = {
  type: "object",
  properties: {
    city: { type: "string", maxLength: 12 },
    days: { type: "integer", minimum: 1, maximum: 14 },
    unit: { enum: ["celsius", "fahrenheit"] },
  },
  required: ["city", "days", "unit"],
  additionalProperties: false,
};
const LOOKUP = {
  type: "object",
  properties: {
    id: { type: "string", format: "uuid" },
    filters: { type: "array", maxItems: 2, items: { type: "object", properties: { field: { enum: ["a", "b"] }, value: { type: ["integer", "null"] } }, required: ["field", "value"], additionalProperties: false } },
    mode: { oneOf: [{ const: "fast" }, { type: "integer", minimum: 0, maximum: 3 }] },
    code: { type: "string", pattern: "^[A-Z]{3}$" },
    when: { type: "string", format: "date" },
  },
  required: ["id", "filters", "mode", "code"],
  additionalProperties: false,
};
// A block may hold several calls (each ~50-100 tokens here); generous, it costs nothing unused.
const TOOL_BUDGET = 1024;
const TOOL_SCHEMAS = { get_weather: WEATHER, lookup: LOOKUP };
const openaiTools = Object.entries(TOOL_SCHEMAS).map(([name, parameters]) => ({
  type: "function", function: { name, description: `the ${name} tool`, parameters, strict: true },
}));
const toolValidators = Object.fromEntries(Object.entries(TOOL_SCHEMAS).map(([n, s]) => [n, ajv2020.compile(s)]));

function checkCalls(where, calls, only) {
  assert.ok(calls && calls.length >= 1, `${where}: no tool calls`);
  for (const call of calls) {
    const name = call.function ? call.function.name : call.name;
    const args = call.function ? JSON.parse(call.function.arguments) : call.input;
    if (only) assert.equal(name, only, where);
    const validate = toolValidators[name];
    assert.ok(validate, `${where}: unknown tool ${name}`);
    assert.ok(validate(args), `${where}: ${name} ${JSON.stringify(args)} invalid: ${JSON.stringify(validate.errors)}`);
  }
}

test("strict tool calls (openai SDK): arguments validate against the tool's schema", async () => {
  for (let seed = 1; seed <= 4; ++seed) {
    // tool_choice required: the answer is a tool-call block.
    const r = await openai.chat.completions.create({
      model: "deepseek-chat", messages: [{ role: "user", content: "Weather in Paris, then look up the order." }],
      tools: openaiTools, tool_choice: "required", temperature: 1.0, seed, max_tokens: TOOL_BUDGET,
    });
    const choice = r.choices[0];
    assert.equal(choice.finish_reason, "tool_calls", JSON.stringify(choice.message));
    checkCalls(`required seed ${seed}`, choice.message.tool_calls);
  }
  for (let seed = 1; seed <= 2; ++seed) {
    // A named tool, one call.
    const r = await openai.chat.completions.create({
      model: "deepseek-chat", messages: [{ role: "user", content: "Look it up." }],
      tools: openaiTools, tool_choice: { type: "function", function: { name: "lookup" } },
      parallel_tool_calls: false, temperature: 1.0, seed, max_tokens: TOOL_BUDGET,
    });
    assert.equal(r.choices[0].finish_reason, "tool_calls");
    assert.equal(r.choices[0].message.tool_calls.length, 1);
    checkCalls(`named seed ${seed}`, r.choices[0].message.tool_calls, "lookup");
  }
  // Streaming: the SDK assembles the streamed argument fragments.
  const stream = await openai.chat.completions.create({
    model: "deepseek-chat", messages: [{ role: "user", content: "Weather?" }], stream: true,
    tools: openaiTools, tool_choice: { type: "function", function: { name: "get_weather" } },
    temperature: 1.0, seed: 9, max_tokens: TOOL_BUDGET,
  });
  const calls = [];
  for await (const chunk of stream) {
    for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) {
      calls[d.index] ??= { function: { name: "", arguments: "" } };
      if (d.function?.name) calls[d.index].function.name += d.function.name;
      if (d.function?.arguments) calls[d.index].function.arguments += d.function.arguments;
    }
  }
  checkCalls("streamed", calls, "get_weather");
});

test("strict tool calls: free text before the block (auto), thinking, Anthropic", async () => {
  const bar = "\uFF5C";
  for (let seed = 1; seed <= 2; ++seed) {
    // tool_choice auto: the text is free; once a block starts (forced here: a random model
    // rarely starts one), the strict call's values are constrained.
    const r = await postJson(server.base, "/v1/chat/completions", {
      model: "deepseek-chat", messages: [{ role: "user", content: "Weather?" }], tools: openaiTools,
      ds4_test_output_prefix: `Checking.\n\n<${bar}DSML${bar}tool_calls>\n<${bar}DSML${bar}invoke name="get_weather">\n`,
      temperature: 1.0, seed, max_tokens: TOOL_BUDGET,
    });
    assert.equal(r.status, 200, r.text);
    const choice = r.json.choices[0];
    assert.equal(choice.message.content, "Checking.");
    assert.equal(choice.finish_reason, "tool_calls", JSON.stringify(choice.message));
    checkCalls(`auto seed ${seed}`, choice.message.tool_calls);
  }
  // Thinking: the reasoning is free; the block after </think> is constrained.
  const t = await postJson(server.base, "/v1/chat/completions", {
    model: "deepseek-reasoner", messages: [{ role: "user", content: "Weather?" }], tools: openaiTools,
    tool_choice: "required", ds4_test_output_prefix: "I should call a tool { not json\n</think>", seed: 3, max_tokens: TOOL_BUDGET,
  });
  assert.equal(t.status, 200, t.text);
  assert.equal(t.json.choices[0].message.reasoning_content, "I should call a tool { not json\n");
  checkCalls("thinking", t.json.choices[0].message.tool_calls);
  // Anthropic: strict tools with tool_choice any; tool_use inputs validate.
  for (let seed = 1; seed <= 2; ++seed) {
    const m = await anthropic.messages.create({
      model: "deepseek-chat", max_tokens: TOOL_BUDGET, temperature: 1.0,
      messages: [{ role: "user", content: "Weather?" }],
      tools: Object.entries(TOOL_SCHEMAS).map(([name, input_schema]) => ({ name, input_schema, strict: true })),
      tool_choice: { type: "any" },
    });
    assert.equal(m.stop_reason, "tool_use", JSON.stringify(m.content));
    checkCalls(`anthropic seed ${seed}`, m.content.filter((b) => b.type === "tool_use"));
  }
});

test("strict tool errors: 400 naming the keyword or the tool", async () => {
  const bad = async (body, re, param) => {
    const r = await postJson(server.base, "/v1/chat/completions", { model: "deepseek-chat", messages: [{ role: "user", content: "x" }], ...body });
    assert.equal(r.status, 400, r.text);
    assert.match(r.json.error.message, re);
    if (param) assert.equal(r.json.error.param, param);
  };
  const tool = (parameters, strict = true) => ({ type: "function", function: { name: "t", parameters, strict } });
  await bad({ tools: [tool({ type: "object", properties: { a: { type: "string", format: "hostname" } } })] }, /tool 't'.*'format'/, "tools");
  await bad({ tools: [tool({ type: "object", properties: { a: { oneOf: [{ type: "integer" }, { type: "number" }] } } })] }, /'oneOf'/, "tools");
  await bad({ tools: [tool({ type: "object" })], tool_choice: { type: "function", function: { name: "nope" } } }, /'nope'/, "tool_choice");
  // A non-strict tool with the same schema is not constrained, so not refused.
  const ok = await postJson(server.base, "/v1/chat/completions", {
    model: "deepseek-chat", messages: [{ role: "user", content: "x" }], max_tokens: 2,
    tools: [tool({ type: "object", properties: { a: { type: "string", format: "hostname" } } }, false)],
  });
  assert.equal(ok.status, 200, ok.text);
});
