// ds4-server's Anthropic Messages API driven by the real @anthropic-ai/sdk on the tiny
// synthetic model. Answers are scripted with the --test-hooks field "ds4_test_output" (the
// model still evaluates every token), so tool calls and thinking are deterministic.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import Anthropic from "@anthropic-ai/sdk";
import { startServer, postJson, parseSse, dsmlCall, refEncode } from "./harness.mjs";

let server;
let client;

before(async () => {
  refEncode("warm up");
  server = await startServer();
  client = new Anthropic({ baseURL: server.base, apiKey: "unused", maxRetries: 0, timeout: 60000 });
});
after(async () => {
  if (server) await server.stop();
});

// [{user: text}] renders as BOS <｜User｜> text <｜Assistant｜> <think> (or </think>): four
// control tokens around the BPE of the text (docs/prompting.md).
const promptTokens = (text) => 4 + refEncode(text).length;
const inputTotal = (u) => u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens;

const WEATHER = {
  name: "get_weather",
  description: "Get weather",
  input_schema: {
    type: "object",
    properties: { location: { type: "string" }, days: { type: "integer" } },
    required: ["location"],
  },
};

test("non-streaming text: content, stop reason, usage", async () => {
  const m = await client.messages.create({
    model: "claude-sonnet-4-5",
    max_tokens: 100,
    thinking: { type: "disabled" },
    messages: [{ role: "user", content: "Hi" }],
    ds4_test_output: "Hello from ds4.",
  });
  assert.match(m.id, /^msg_/);
  assert.equal(m.type, "message");
  assert.equal(m.role, "assistant");
  assert.equal(m.model, "claude-sonnet-4-5");
  assert.deepEqual(m.content, [{ type: "text", text: "Hello from ds4." }]);
  assert.equal(m.stop_reason, "end_turn");
  assert.equal(m.stop_sequence, null);
  assert.equal(inputTotal(m.usage), promptTokens("Hi"));
  assert.equal(m.usage.input_tokens, 0);
  assert.equal(m.usage.output_tokens, refEncode("Hello from ds4.").length + 1);  // + EOS

  const counted = await client.messages.countTokens({
    model: "claude-sonnet-4-5",
    thinking: { type: "disabled" },
    messages: [{ role: "user", content: "Hi" }],
  });
  assert.equal(counted.input_tokens, promptTokens("Hi"));
  // system text and tools make the prompt longer; count_tokens sees the same prompt.
  const withTools = await client.messages.countTokens({
    model: "x",
    system: "Be brief.",
    tools: [WEATHER],
    messages: [{ role: "user", content: "Hi" }],
  });
  const m2 = await client.messages.create({
    model: "x",
    max_tokens: 5,
    system: "Be brief.",
    tools: [WEATHER],
    messages: [{ role: "user", content: "Hi" }],
    ds4_test_output: "ok",
  });
  assert.ok(withTools.input_tokens > counted.input_tokens + refEncode("Be brief.").length);
  assert.equal(inputTotal(m2.usage), withTools.input_tokens);
});

test("streaming text through the SDK's MessageStream, event order", async () => {
  const out = "Streaming, one token at a time.";
  const stream = client.messages.stream({
    model: "deepseek-chat",
    max_tokens: 100,
    messages: [{ role: "user", content: "Stream please" }],
    ds4_test_output: out,
  });
  const types = [];
  let text = "";
  stream.on("streamEvent", (ev) => types.push(ev.type));
  stream.on("text", (t) => (text += t));
  const m = await stream.finalMessage();
  assert.equal(text, out);
  assert.deepEqual(m.content, [{ type: "text", text: out }]);
  assert.equal(m.stop_reason, "end_turn");
  assert.equal(types[0], "message_start");
  assert.equal(types[1], "content_block_start");
  assert.ok(types.filter((t) => t === "content_block_delta").length > 3, "text arrives in pieces");
  assert.deepEqual(types.slice(-3), ["content_block_stop", "message_delta", "message_stop"]);
  assert.equal(inputTotal(m.usage), promptTokens("Stream please"));
  assert.equal(m.usage.output_tokens, refEncode(out).length + 1);
});

test("thinking blocks: streamed thinking_delta and signature, replayable", async () => {
  const m = await client.messages.create({
    model: "claude-opus-4",
    max_tokens: 100,
    thinking: { type: "enabled", budget_tokens: 1024 },
    messages: [{ role: "user", content: "2+2?" }],
    ds4_test_output: "Adding two and two.</think>It is 4.",
  });
  assert.equal(m.content.length, 2);
  assert.equal(m.content[0].type, "thinking");
  assert.equal(m.content[0].thinking, "Adding two and two.");
  assert.equal(m.content[0].signature, m.id);
  assert.deepEqual(m.content[1], { type: "text", text: "It is 4." });

  const stream = client.messages.stream({
    model: "claude-opus-4",
    max_tokens: 100,
    thinking: { type: "adaptive" },
    messages: [{ role: "user", content: "2+3?" }],
    ds4_test_output: "Two plus three.</think>5",
  });
  let thinking = "";
  let signature = null;
  stream.on("thinking", (delta) => (thinking += delta));
  stream.on("signature", (s) => (signature = s));
  const s = await stream.finalMessage();
  assert.equal(thinking, "Two plus three.");
  assert.equal(signature, s.id);
  assert.equal(s.content[0].type, "thinking");
  assert.deepEqual(s.content[1], { type: "text", text: "5" });

  // Thinking that never closes: only a thinking block, plus the empty text block.
  const open = await client.messages.create({
    model: "x",
    max_tokens: 100,
    messages: [{ role: "user", content: "think" }],
    ds4_test_output: "Still thinking",
  });
  assert.deepEqual(open.content.map((b) => b.type), ["thinking", "text"]);
  assert.equal(open.content[1].text, "");
});

test("stop reasons: max_tokens and stop_sequence", async () => {
  const cut = await client.messages.create({
    model: "deepseek-chat",
    max_tokens: 3,
    messages: [{ role: "user", content: "count" }],
    ds4_test_output: "one two three four five six",
  });
  assert.equal(cut.stop_reason, "max_tokens");
  assert.equal(cut.usage.output_tokens, 3);

  const stopped = await client.messages.create({
    model: "deepseek-chat",
    max_tokens: 50,
    stop_sequences: ["zzz", " four"],
    messages: [{ role: "user", content: "count" }],
    ds4_test_output: "one two three four five six",
  });
  assert.equal(stopped.stop_reason, "stop_sequence");
  assert.equal(stopped.stop_sequence, " four");
  assert.deepEqual(stopped.content, [{ type: "text", text: "one two three" }]);

  const streamed = await client.messages.stream({
    model: "deepseek-chat",
    max_tokens: 50,
    stop_sequences: ["three"],
    messages: [{ role: "user", content: "count" }],
    ds4_test_output: "one two three four",
  }).finalMessage();
  assert.equal(streamed.stop_reason, "stop_sequence");
  assert.equal(streamed.stop_sequence, "three");
  assert.equal(streamed.content[0].text, "one two ");
});

// A three-turn tool conversation; the client sends the call's input back with its keys in
// another order. Returns the three answers.
async function toolConversation(c) {
  const question = "Weather in Beijing for 2 days?";
  const base = { model: "claude-sonnet-4-5", max_tokens: 300, tools: [WEATHER] };
  const s1 = c.messages.stream({
    ...base,
    messages: [{ role: "user", content: question }],
    ds4_test_output: "Use the tool.</think>" + dsmlCall("get_weather", { location: "Beijing", days: 2 }),
  });
  let partial = "";
  s1.on("inputJson", (delta) => (partial += delta));
  const m1 = await s1.finalMessage();
  const thinking = m1.content.find((b) => b.type === "thinking");
  const use = m1.content.find((b) => b.type === "tool_use");
  const history = [
    { role: "user", content: question },
    {
      role: "assistant",
      content: [
        { type: "thinking", thinking: thinking.thinking, signature: thinking.signature },
        { type: "tool_use", id: use.id, name: use.name, input: { days: use.input.days, location: use.input.location } },
      ],
    },
    { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: '{"temperature":22}' }] },
  ];
  const m2 = await c.messages.create({ ...base, messages: history, ds4_test_output: "Sunny.</think>It will be 22 degrees." });
  const m3 = await c.messages.create({
    ...base,
    messages: [...history, { role: "assistant", content: m2.content }, { role: "user", content: "And in Shanghai?" }],
    ds4_test_output: "Again the tool.</think>Probably rain.",
  });
  return { m1, m2, m3, use, partial };
}

test("tool_use round trip; exact DSML replay keeps a full live-cache hit on every turn", async () => {
  const { m1, m2, m3, use, partial } = await toolConversation(client);
  assert.equal(m1.stop_reason, "tool_use");
  assert.deepEqual(m1.content.map((b) => b.type), ["thinking", "tool_use"]);
  assert.match(use.id, /^toolu_[0-9a-f]{32}$/);
  assert.equal(use.name, "get_weather");
  assert.deepEqual(use.input, { location: "Beijing", days: 2 });
  assert.deepEqual(JSON.parse(partial), { location: "Beijing", days: 2 });

  assert.equal(m2.stop_reason, "end_turn");
  assert.equal(m2.content.at(-1).text, "It will be 22 degrees.");
  // Everything the previous turn left in the live session is reused: its prompt and every
  // generated token (through the end of the tool-call block, or the EOS).
  assert.equal(m2.usage.cache_read_input_tokens, inputTotal(m1.usage) + m1.usage.output_tokens);
  assert.equal(m3.usage.cache_read_input_tokens, inputTotal(m2.usage) + m2.usage.output_tokens);
  assert.ok(m3.usage.cache_creation_input_tokens < 20, "only the new user turn is evaluated");
});

test("without replay memory the reordered call renders canonically and still answers", async () => {
  const plain = await startServer(["--tool-memory-max-ids", "0"]);
  try {
    const c = new Anthropic({ baseURL: plain.base, apiKey: "unused", maxRetries: 0, timeout: 60000 });
    const { m1, m2, m3 } = await toolConversation(c);
    assert.equal(m1.stop_reason, "tool_use");
    const live = inputTotal(m1.usage) + m1.usage.output_tokens;
    // The canonical block (client key order) differs from the sampled one: the session is
    // rebuilt from the common prefix instead of failing.
    assert.ok(m2.usage.cache_read_input_tokens < live);
    assert.equal(m2.content.at(-1).text, "It will be 22 degrees.");
    // From then on the canonical rendering is what the session holds.
    assert.equal(m3.usage.cache_read_input_tokens, inputTotal(m2.usage) + m2.usage.output_tokens);
  } finally {
    await plain.stop();
  }
});

test("several tool results in one user turn, with text after them", async () => {
  const body = {
    model: "x",
    max_tokens: 20,
    thinking: { type: "disabled" },
    tools: [WEATHER],
    messages: [
      { role: "user", content: "Weather in two cities?" },
      {
        role: "assistant",
        content: [
          { type: "text", text: "Checking both." },
          { type: "tool_use", id: "toolu_a", name: "get_weather", input: { location: "Paris" } },
          { type: "tool_use", id: "toolu_b", name: "get_weather", input: { location: "Rome" } },
        ],
      },
      {
        role: "user",
        content: [
          { type: "tool_result", tool_use_id: "toolu_a", content: [{ type: "text", text: "rain" }] },
          { type: "tool_result", tool_use_id: "toolu_b", content: "sun", is_error: false },
          { type: "text", text: "Summarise." },
        ],
      },
    ],
  };
  const counted = await postJson(server.base, "/v1/messages/count_tokens", body);
  assert.equal(counted.status, 200);
  const r = await postJson(server.base, "/v1/messages", { ...body, ds4_test_output: "Rain and sun." });
  assert.equal(r.status, 200);
  assert.equal(r.json.content[0].text, "Rain and sun.");
  assert.equal(inputTotal(r.json.usage), counted.json.input_tokens);
});

test("ping events keep a quiet stream alive", async () => {
  const res = await fetch(server.base + "/v1/messages", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "x",
      max_tokens: 5,
      stream: true,
      messages: [{ role: "user", content: "wait" }],
      ds4_test_output: "",
      ds4_test_delay_ms: 2600,
    }),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /text\/event-stream/);
  const events = parseSse(await res.text());
  const names = events.map((e) => e.event);
  assert.ok(names.includes("ping"), names.join(","));
  for (const e of events) assert.equal(e.data.type, e.event, "data.type repeats the event name");
  assert.equal(names.at(-1), "message_stop");
});

test("Claude Code's shapes: mid-conversation system, cache_control, thinking and redacted blocks back", async () => {
  const tools = [WEATHER];
  const turn1 = [
    { role: "user", content: [{ type: "text", text: "Weather?", cache_control: { type: "ephemeral" } }] },
    { role: "system", content: [{ type: "text", text: "# Environment\nlinux", cache_control: { type: "ephemeral", ttl: "1h" } }] },
  ];
  const extra = {
    context_management: { edits: [{ type: "clear_thinking_20251015", keep: "all" }] },
    output_config: { effort: "high" },
    thinking: { type: "adaptive", display: "omitted" },
    metadata: { user_id: "u" },
  };
  // The system text joins the user turn it follows (thinking on: the turn opens <think>).
  const counted = await client.messages.countTokens({ model: "x", messages: turn1 });
  assert.equal(counted.input_tokens, promptTokens("Weather?\n\n# Environment\nlinux"));

  const m1 = await client.messages.create({
    model: "x", max_tokens: 200, tools, messages: turn1, ...extra,
    ds4_test_output: "Ask the tool.</think>" + dsmlCall("get_weather", { location: "Paris" }),
  });
  assert.equal(m1.stop_reason, "tool_use");
  const use = m1.content.find((b) => b.type === "tool_use");
  const turn2 = [
    ...turn1,
    { role: "assistant", content: [{ type: "redacted_thinking", data: "opaque" }, ...m1.content] },
    { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: [{ type: "text", text: "sunny" }], cache_control: { type: "ephemeral" } }] },
  ];
  const m2 = await client.messages.create({ model: "x", max_tokens: 200, tools, messages: turn2, ...extra, ds4_test_output: "Done.</think>Sunny." });
  // Turn two extends turn one byte for byte: the whole live state is reused.
  assert.equal(m2.usage.cache_read_input_tokens, inputTotal(m1.usage) + m1.usage.output_tokens);
  // A later system message, after the tool result, joins that turn as well.
  const turn3 = [...turn2, { role: "assistant", content: m2.content }, { role: "user", content: "Thanks" }, { role: "system", content: "Be terse." }];
  const m3 = await client.messages.create({ model: "x", max_tokens: 200, tools, messages: turn3, ...extra, ds4_test_output: "Ok.</think>Bye." });
  assert.equal(m3.usage.cache_read_input_tokens, inputTotal(m2.usage) + m2.usage.output_tokens);
  assert.equal(m3.content.at(-1).text, "Bye.");

  // A system message cannot open the list (Anthropic: the top-level system is for that).
  const first = await postJson(server.base, "/v1/messages", { model: "x", max_tokens: 5, messages: [{ role: "system", content: "x" }, { role: "user", content: "y" }] });
  assert.equal(first.status, 400);
  assert.match(first.json.error.message, /messages\[0\].*system/);
  const noContent = await postJson(server.base, "/v1/messages", { model: "x", max_tokens: 5, messages: [{ role: "user" }] });
  assert.equal(noContent.status, 400);
  assert.match(noContent.json.error.message, /messages\[0\]\.content/);
});

test("deferred tools stay out of the prompt until a tool_reference loads them in place", async () => {
  const FETCH = {
    name: "WebFetch",
    description: "Fetch a URL",
    input_schema: { type: "object", properties: { url: { type: "string" } }, required: ["url"] },
  };
  const SEARCH = { name: "ToolSearch", description: "Load deferred tools", input_schema: { type: "object", properties: { query: { type: "string" } } } };
  const count = async (body) => (await client.messages.countTokens({ model: "x", ...body })).input_tokens;
  const ask = [{ role: "user", content: "Fetch it." }];
  // A deferred tool adds nothing to the prompt.
  assert.equal(await count({ tools: [SEARCH, { ...FETCH, defer_loading: true }], messages: ask }), await count({ tools: [SEARCH], messages: ask }));

  const tools = [SEARCH, { ...FETCH, defer_loading: true }];
  const m1 = await client.messages.create({
    model: "x", max_tokens: 200, tools, messages: ask,
    ds4_test_output: "Load the fetch tool.</think>" + dsmlCall("ToolSearch", { query: "select:WebFetch" }),
  });
  const use = m1.content.find((b) => b.type === "tool_use");
  const loaded = (content) => [
    ...ask,
    { role: "assistant", content: m1.content },
    { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content }] },
  ];
  // The reference renders as the tool's definition line of the tools block, in place.
  const line = '{"name": "WebFetch", "description": "Fetch a URL", "parameters": {"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}}';
  assert.equal(
    await count({ tools, messages: loaded([{ type: "tool_reference", tool_name: "WebFetch" }]) }),
    await count({ tools, messages: loaded([{ type: "text", text: line }]) }),
  );
  const m2 = await client.messages.create({
    model: "x", max_tokens: 200, tools, messages: loaded([{ type: "tool_reference", tool_name: "WebFetch" }]),
    ds4_test_output: "Now fetch.</think>" + dsmlCall("WebFetch", { url: "http://127.0.0.1/" }),
  });
  assert.equal(m2.usage.cache_read_input_tokens, inputTotal(m1.usage) + m1.usage.output_tokens);
  assert.deepEqual(m2.content.find((b) => b.type === "tool_use").input, { url: "http://127.0.0.1/" });

  const unknown = await postJson(server.base, "/v1/messages", { model: "x", max_tokens: 5, tools, messages: loaded([{ type: "tool_reference", tool_name: "Nope" }]) });
  assert.equal(unknown.status, 400);
  assert.match(unknown.json.error.message, /tool_reference to 'Nope'/);
});

test("bad requests get Anthropic-shaped 400 errors", async () => {
  const cases = [
    { messages: [{ role: "system", content: "x" }] },
    { messages: [] },
    {},
    { messages: [{ role: "user", content: [{ type: "image", source: { type: "base64", data: "" } }] }] },
    { messages: [{ role: "user", content: "x" }], thinking: { type: "sometimes" } },
    { messages: [{ role: "user", content: "x" }], tool_choice: { type: "maybe" } },
    { messages: [{ role: "user", content: "x" }], output_config: { effort: "extreme" } },
    { messages: [{ role: "user", content: "x" }, { role: "assistant", content: "prefill" }] },
    { messages: [{ role: "user", content: [{ type: 5, text: "x" }] }] },
    { messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: 7 }] }] },
    { messages: [{ role: "assistant", content: [{ type: "tool_use", id: "a", name: "f", input: [] }] }, { role: "user", content: "x" }] },
    { messages: [{ role: "user", content: "x" }], system: 12 },
    { messages: [{ role: "user", content: "x" }], tools: [{ name: "f", input_schema: "no" }] },
    { messages: [{ role: "user", content: "x" }], stop_sequences: [1] },
    { messages: "x" },
  ];
  for (const body of cases) {
    const r = await postJson(server.base, "/v1/messages", { model: "x", max_tokens: 5, ...body });
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.json.type, "error");
    assert.equal(r.json.error.type, "invalid_request_error");
    assert.ok(r.json.error.message.length > 0);
  }
  await assert.rejects(
    client.messages.create({ model: "x", max_tokens: 5, messages: [{ role: "robot", content: "x" }] }),
    (e) => e.status === 400 && e.error?.error?.type === "invalid_request_error",
  );
  const long = await postJson(server.base, "/v1/messages", {
    model: "x",
    max_tokens: 5,
    messages: [{ role: "user", content: "word ".repeat(5000) }],
  });
  assert.equal(long.status, 400);
  assert.ok(long.json.error.n_prompt_tokens > 4096);
  assert.equal(long.json.error.n_ctx, 4096);
  // Anthropic's wording, which Claude Code matches to compact the conversation.
  assert.equal(long.json.error.type, "invalid_request_error");
  assert.equal(long.json.error.message, `prompt is too long: ${long.json.error.n_prompt_tokens} tokens > 4096 maximum`);
});
