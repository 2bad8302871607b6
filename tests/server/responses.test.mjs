// ds4-server's OpenAI Responses API (the protocol of Codex CLI) driven by the real openai
// SDK's client.responses on the tiny synthetic model, answers scripted with the
// --test-hooks field "ds4_test_output". The SDK's ResponseStream helper validates the
// streaming lifecycle (item ids, output indices, content parts) as it accumulates.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer, postJson, parseSse, dsmlCall, refEncode } from "./harness.mjs";

let server;
let client;

before(async () => {
  refEncode("warm up");
  server = await startServer();
  client = new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 0, timeout: 60000 });
});
after(async () => {
  if (server) await server.stop();
});

const promptTokens = (text) => 4 + refEncode(text).length;

const WEATHER = {
  type: "function",
  name: "get_weather",
  description: "Get weather",
  parameters: {
    type: "object",
    properties: { location: { type: "string" }, days: { type: "integer" } },
    required: ["location"],
  },
  strict: false,
};

test("non-streaming text: output item, status, usage", async () => {
  const r = await client.responses.create({
    model: "gpt-5-codex",
    input: "Hi",
    reasoning: { effort: "none" },
    ds4_test_output: "Hello from ds4.",
  });
  assert.match(r.id, /^resp_[0-9a-f]{24}$/);
  assert.equal(r.object, "response");
  assert.equal(r.status, "completed");
  assert.equal(r.model, "gpt-5-codex");
  assert.equal(r.output.length, 1);
  assert.equal(r.output[0].type, "message");
  assert.match(r.output[0].id, /^msg_[0-9a-f]{24}$/);
  assert.equal(r.output[0].role, "assistant");
  assert.deepEqual(r.output[0].content, [{ type: "output_text", text: "Hello from ds4.", annotations: [] }]);
  assert.equal(r.output_text, "Hello from ds4.");
  assert.equal(r.usage.input_tokens, promptTokens("Hi"));
  assert.equal(r.usage.output_tokens, refEncode("Hello from ds4.").length + 1);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);
  assert.equal(
    r.usage.input_tokens_details.cached_tokens + r.usage.input_tokens_details.cache_write_tokens,
    r.usage.input_tokens,
  );

  // instructions become the system text; message items with content parts are accepted.
  const withItems = await client.responses.create({
    model: "x",
    instructions: "Be brief.",
    input: [{ type: "message", role: "user", content: [{ type: "input_text", text: "Hi" }] }],
    reasoning: { effort: "none" },
    ds4_test_output: "ok",
  });
  assert.equal(withItems.usage.input_tokens, promptTokens("Hi") + refEncode("Be brief.").length);

  // Codex's developer items are system text: joined with the instructions into one system
  // prompt, not turns of their own.
  const developer = await client.responses.create({
    model: "x",
    instructions: "Be brief.",
    input: [
      { type: "message", role: "developer", content: [{ type: "input_text", text: "Sandbox: none." }] },
      { type: "message", role: "user", content: [{ type: "input_text", text: "Hi" }] },
    ],
    reasoning: { effort: "none" },
    ds4_test_output: "ok",
  });
  assert.equal(developer.usage.input_tokens, promptTokens("Hi") + refEncode("Be brief.\n\nSandbox: none.").length);
});

test("streaming lifecycle through the SDK's ResponseStream", async () => {
  const out = "Streaming, one token at a time.";
  const stream = client.responses.stream({
    model: "x",
    input: "Stream please",
    reasoning: { effort: "none" },
    ds4_test_output: out,
  });
  const events = [];
  let text = "";
  stream.on("event", (ev) => events.push(ev));
  stream.on("response.output_text.delta", (ev) => (text += ev.delta));
  const final = await stream.finalResponse();
  assert.equal(text, out);
  assert.equal(final.status, "completed");
  assert.equal(final.output_text, out);
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
  const types = events.map((e) => e.type);
  assert.equal(types[0], "response.created");
  assert.deepEqual(types.slice(types.indexOf("response.output_item.added"), types.indexOf("response.output_text.delta") + 1), [
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
  ]);
  assert.deepEqual(types.slice(-4), [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
  ]);
  assert.equal(final.usage.input_tokens, promptTokens("Stream please"));
});

test("reasoning: hidden unless summaries are requested", async () => {
  const hidden = await client.responses.create({
    model: "x",
    input: "2+2?",
    reasoning: { effort: "high" },
    ds4_test_output: "Adding two and two.</think>It is 4.",
  });
  assert.deepEqual(hidden.output.map((i) => i.type), ["message"]);
  assert.equal(hidden.output_text, "It is 4.");

  const stream = client.responses.stream({
    model: "x",
    input: "2+3?",
    reasoning: { effort: "medium", summary: "auto" },
    ds4_test_output: "Two plus three.</think>5",
  });
  let summary = "";
  stream.on("response.reasoning_summary_text.delta", (ev) => (summary += ev.delta));
  const r = await stream.finalResponse();
  assert.equal(summary, "Two plus three.");
  assert.deepEqual(r.output.map((i) => i.type), ["reasoning", "message"]);
  assert.match(r.output[0].id, /^rs_/);
  assert.deepEqual(r.output[0].summary, [{ type: "summary_text", text: "Two plus three." }]);
  assert.equal(r.output_text, "5");
});

test("max_output_tokens gives an incomplete response", async () => {
  const r = await client.responses.create({
    model: "x",
    input: "count",
    max_output_tokens: 3,
    reasoning: { effort: "none" },
    ds4_test_output: "one two three four five six",
  });
  assert.equal(r.status, "incomplete");
  assert.deepEqual(r.incomplete_details, { reason: "max_tokens" });
  assert.equal(r.usage.output_tokens, 3);
  assert.equal(r.output[0].status, "incomplete");

  const stream = client.responses.stream({
    model: "x",
    input: "count",
    max_output_tokens: 2,
    reasoning: { effort: "none" },
    ds4_test_output: "one two three four five six",
  });
  const types = [];
  stream.on("event", (ev) => types.push(ev.type));
  await stream.done().catch(() => {});
  assert.equal(types.at(-1), "response.incomplete");
});

// Three turns: a call, its output replayed with the argument keys reordered, then a new
// user message. Returns the three responses.
async function toolConversation(reasoning, script1) {
  const base = { model: "x", tools: [WEATHER], reasoning };
  const input1 = [{ type: "message", role: "user", content: [{ type: "input_text", text: "Weather in Beijing for 2 days?" }] }];
  const stream = client.responses.stream({ ...base, input: input1, ds4_test_output: script1 });
  const types = [];
  let argDeltas = "";
  stream.on("event", (ev) => types.push(ev.type));
  stream.on("response.function_call_arguments.delta", (ev) => (argDeltas += ev.delta));
  const r1 = await stream.finalResponse();
  const call = r1.output.find((i) => i.type === "function_call");
  const args = JSON.parse(call.arguments);
  const input2 = [
    ...input1,
    ...r1.output.filter((i) => i.type === "reasoning"),
    { ...call, arguments: JSON.stringify({ days: args.days, location: args.location }) },
    { type: "function_call_output", call_id: call.call_id, output: '{"temperature":22}' },
  ];
  const think = reasoning.effort !== "none" ? "Sunny.</think>" : "";
  const r2 = await client.responses.create({ ...base, input: input2, ds4_test_output: think + "It will be 22 degrees." });
  const input3 = [
    ...input2,
    ...r2.output.filter((i) => i.type !== "reasoning" || reasoning.summary),
    { type: "message", role: "user", content: [{ type: "input_text", text: "And in Shanghai?" }] },
  ];
  const r3 = await client.responses.create({ ...base, input: input3, ds4_test_output: think + "Probably rain." });
  return { r1, r2, r3, call, types, argDeltas };
}

test("function call round trip; exact replay keeps full live-cache hits", async () => {
  const { r1, r2, r3, call, types, argDeltas } = await toolConversation(
    { effort: "none" },
    dsmlCall("get_weather", { location: "Beijing", days: 2 }),
  );
  assert.equal(r1.status, "completed");
  assert.match(call.call_id, /^call_[0-9a-f]{32}$/);
  assert.match(call.id, /^fc_/);
  assert.equal(call.name, "get_weather");
  assert.deepEqual(JSON.parse(call.arguments), { location: "Beijing", days: 2 });
  assert.equal(argDeltas, call.arguments);
  for (const t of ["response.output_item.added", "response.function_call_arguments.done", "response.output_item.done"]) {
    assert.ok(types.includes(t), t);
  }
  assert.equal(r2.output_text, "It will be 22 degrees.");
  const live1 = r1.usage.input_tokens + r1.usage.output_tokens;
  assert.equal(r2.usage.input_tokens_details.cached_tokens, live1);
  const live2 = r2.usage.input_tokens + r2.usage.output_tokens;
  assert.equal(r3.usage.input_tokens_details.cached_tokens, live2);
});

test("thinking + tools: replayed reasoning items keep the live cache", async () => {
  const { r1, r2, r3 } = await toolConversation(
    { effort: "high", summary: "auto" },
    "Use the tool.</think>" + dsmlCall("get_weather", { location: "Beijing", days: 2 }),
  );
  assert.deepEqual(r1.output.map((i) => i.type), ["reasoning", "function_call"]);
  assert.equal(r1.output[0].summary[0].text, "Use the tool.");
  assert.equal(r2.usage.input_tokens_details.cached_tokens, r1.usage.input_tokens + r1.usage.output_tokens);
  assert.equal(r3.usage.input_tokens_details.cached_tokens, r2.usage.input_tokens + r2.usage.output_tokens);
});

test("Codex-style replay without reasoning keeps the live cache (the hidden reasoning stays live)", async () => {
  const { r1, r2, r3 } = await toolConversation(
    { effort: "high" },
    "A hidden plan.</think>" + dsmlCall("get_weather", { location: "Beijing", days: 2 }),
  );
  assert.deepEqual(r1.output.map((i) => i.type), ["function_call"]);
  assert.equal(r2.output_text, "It will be 22 degrees.");
  assert.equal(r2.usage.input_tokens_details.cached_tokens, r1.usage.input_tokens + r1.usage.output_tokens);
  assert.equal(r3.usage.input_tokens_details.cached_tokens, r2.usage.input_tokens + r2.usage.output_tokens);
});

test("stateless: previous_response_id, conversation and forced tool_choice are rejected", async () => {
  const bad = [
    [{ previous_response_id: "resp_1" }, /previous_response_id is not supported; replay full input instead/],
    [{ conversation: "conv_1" }, /conversation is not supported/],
    [{ tool_choice: "required" }, /tool_choice=required not supported/],
    [{ tool_choice: { type: "function", name: "get_weather" } }, /forced tool_choice not supported/],
    [{ input: [{ type: "item_reference", id: "msg_1" }] }, /item_reference/],
    [{ input: [{ type: "message", role: "user", content: [{ type: "input_image", image_url: "x" }] }] }, /not supported/],
    [{ input: [{ type: "mystery" }] }, /not supported/],
    [{ input: [{ type: "message", role: "user", content: "x", status: "in_progress" }] }, /status/],
    [{ reasoning: { effort: "extreme" } }, /reasoning.effort/],
    [{ input: undefined }, /missing input/],
    [{ input: [{ type: 3 }] }, /invalid request|not supported/],
    [{ input: [{ type: "function_call", name: "f", arguments: "{}" }] }, /call_id/],
    [{ input: [{ type: "function_call_output", output: "x" }] }, /call_id/],
    [{ input: [{ role: "user", content: { text: "x" } }] }, /content/],
    [{ input: 42 }, /input/],
    [{ tools: [{ type: "function" }] }, /name/],
    [{ reasoning: "high" }, /reasoning/],
    [{ max_output_tokens: "many" }, /max_output_tokens/],
  ];
  for (const [extra, message] of bad) {
    const r = await postJson(server.base, "/v1/responses", { model: "x", input: "hi", tools: [WEATHER], ...extra });
    assert.equal(r.status, 400, JSON.stringify(extra));
    assert.equal(r.json.error.type, "invalid_request_error");
    assert.match(r.json.error.message, message);
  }
  await assert.rejects(
    client.responses.create({ model: "x", input: "hi", previous_response_id: "resp_x" }),
    (e) => e.status === 400,
  );
});

test("custom and namespaced tools come back as their own item shapes", async () => {
  const r = await postJson(server.base, "/v1/responses", {
    model: "x",
    input: "patch it",
    reasoning: { effort: "none" },
    tools: [{ type: "custom", name: "apply_patch", description: "Apply a patch" }, { type: "web_search" }],
    ds4_test_output: dsmlCall("apply_patch", { input: "*** Begin Patch\n*** End Patch" }),
  });
  assert.equal(r.status, 200);
  const item = r.json.output.find((i) => i.type === "custom_tool_call");
  assert.ok(item, JSON.stringify(r.json.output));
  assert.equal(item.name, "apply_patch");
  assert.equal(item.input, "*** Begin Patch\n*** End Patch");

  const ns = await postJson(server.base, "/v1/responses", {
    model: "x",
    input: "look up",
    reasoning: { effort: "none" },
    tools: [{ type: "namespace", name: "mcp__docs__", tools: [{ type: "function", name: "search", parameters: { type: "object", properties: { q: { type: "string" } } } }] }],
    ds4_test_output: dsmlCall("mcp__docs__search", { q: "kv cache" }),
  });
  assert.equal(ns.status, 200);
  const call = ns.json.output.find((i) => i.type === "function_call");
  assert.equal(call.name, "search");
  assert.equal(call.namespace, "mcp__docs__");
  assert.deepEqual(JSON.parse(call.arguments), { q: "kv cache" });
});

test("streamed events are named SSE frames with consecutive sequence numbers", async () => {
  const res = await fetch(server.base + "/v1/responses", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "x",
      input: "hi",
      stream: true,
      reasoning: { effort: "none" },
      tools: [WEATHER],
      ds4_test_output: "Calling." + dsmlCall("get_weather", { location: "Oslo" }),
    }),
  });
  const events = parseSse(await res.text()).filter((e) => e.data);
  events.forEach((e, i) => {
    assert.equal(e.event, e.data.type);
    assert.equal(e.data.sequence_number, i);
  });
  const types = events.map((e) => e.data.type);
  // Text first (closed before the call), then the call item, then completion.
  assert.ok(types.indexOf("response.output_text.done") < types.lastIndexOf("response.output_item.added"));
  const done = events.at(-1).data;
  assert.equal(done.type, "response.completed");
  assert.deepEqual(done.response.output.map((i) => i.type), ["message", "function_call"]);
  assert.equal(done.response.output[0].content[0].text, "Calling.");
});
