// ds4-server driven by the real OpenAI SDKs (openai, @ai-sdk/openai-compatible + ai) on a
// tiny synthetic model with the real tokenizer. Scripted output (--test-hooks,
// "ds4_test_output") makes the model "sample" a given text, so tool calls are deterministic;
// the model still evaluates every token.
import { test as nodeTest, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, streamText, tool, jsonSchema, stepCountIs } from "ai";
import { startServer, postJson, metric, refEncode, BOS, EOS, USER, ASSISTANT } from "./harness.mjs";

// DS4_SDK_SKIP (optional regular expression): cases whose names match are reported as
// skipped (the run on the Vulkan backend, tests/server/CMakeLists.txt).
const skipPattern = process.env.DS4_SDK_SKIP ? new RegExp(process.env.DS4_SDK_SKIP) : null;
const test = (name, fn) => nodeTest(name, { skip: skipPattern?.test(name) ? "DS4_SDK_SKIP" : false }, fn);

let server;
let client;

before(async () => {
  refEncode("warm up");  // loading the reference tokenizer takes seconds
  server = await startServer();
  client = new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 0,
                       timeout: 60000 * Number(process.env.DS4_TEST_TIME_SCALE || 1) });
});
after(async () => {
  if (server) await server.stop();
});

// The prompt of [{user: text}] in non-thinking mode (docs/prompting.md): four control
// tokens around the BPE of the text.
function chatPromptTokens(text) {
  return 4 + refEncode(text).length;
}

test("health, models, tokenize round trip", async () => {
  const health = await fetch(server.base + "/health");
  assert.equal(health.status, 200);
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  assert.ok(ids.includes("deepseek-v4-flash"));
  assert.ok(ids.includes("deepseek-chat") && ids.includes("deepseek-reasoner"));
  const one = await client.models.retrieve("deepseek-v4-flash");
  assert.equal(one.context_length, 4096);
  await assert.rejects(client.models.retrieve("gpt-4"), (e) => e.status === 404);

  const text = "Hello, wörld! 123 tokens\n\tend";
  const tok = await postJson(server.base, "/tokenize", { content: text });
  assert.equal(tok.status, 200);
  assert.deepEqual(tok.json.tokens, refEncode(text));
  const detok = await postJson(server.base, "/detokenize", { tokens: tok.json.tokens });
  assert.equal(detok.json.content, text);
});

test("non-streaming chat: content, finish, usage", async () => {
  const out = "Hello there! How can I help?";
  const r = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "Hi" }],
    ds4_test_output: out,
  });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, "chat.completion");
  assert.equal(r.model, "deepseek-chat");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(r.choices[0].message.content, out);
  assert.equal(r.choices[0].message.reasoning_content, undefined);
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.usage.prompt_tokens, chatPromptTokens("Hi"));
  // The scripted tokens plus the EOS that ends them.
  assert.equal(r.usage.completion_tokens, refEncode(out).length + 1);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  const cached = r.usage.prompt_tokens_details.cached_tokens;
  assert.ok(cached >= 0 && cached < r.usage.prompt_tokens);
});

test("content parts arrays and the chat template", async () => {
  const r = await postJson(server.base, "/apply-template", {
    model: "deepseek-chat",
    messages: [
      { role: "system", content: [{ type: "text", text: "Be brief." }] },
      { role: "user", content: [{ type: "text", text: "Hi " }, { type: "text", text: "there" }] },
    ],
  });
  assert.equal(r.status, 200);
  assert.equal(r.json.prompt, `${BOS}Be brief.${USER}Hi there${ASSISTANT}</think>`);
  const thinking = await postJson(server.base, "/apply-template", {
    messages: [{ role: "user", content: "Hi" }],
  });
  assert.equal(thinking.json.prompt, `${BOS}${USER}Hi${ASSISTANT}<think>`);
});

test("developer and later system messages render as system text, prefix-stable", async () => {
  const template = async (messages) => (await postJson(server.base, "/apply-template", { model: "deepseek-chat", messages })).json.prompt;
  // OpenAI's developer role is system text; leading system texts join with a blank line.
  assert.equal(
    await template([{ role: "developer", content: "Be brief." }, { role: "system", content: "Use tools." }, { role: "user", content: "Hi" }]),
    `${BOS}Be brief.\n\nUse tools.${USER}Hi${ASSISTANT}</think>`,
  );
  // After a user turn (or at the end) a system message joins that turn, which keeps its
  // assistant transition; between an answer and the next user turn it stays in place.
  const turn1 = await template([{ role: "user", content: "Hi" }, { role: "system", content: "Env: linux." }]);
  assert.equal(turn1, `${BOS}${USER}Hi\n\nEnv: linux.${ASSISTANT}</think>`);
  const turn2 = await template([
    { role: "user", content: "Hi" },
    { role: "developer", content: "Env: linux." },
    { role: "assistant", content: "Hello." },
    { role: "system", content: "Be terse." },
    { role: "user", content: "Bye" },
  ]);
  assert.equal(turn2, `${turn1}Hello.${EOS}Be terse.${USER}Bye${ASSISTANT}</think>`);
});

test("a message without content is a 400 naming the field, unless it carries tool calls", async () => {
  for (const [messages, param] of [
    [[{ role: "user" }], "messages[0].content"],
    [[{ role: "system", content: "x" }, { role: "user", content: null }], "messages[1].content"],
    [[{ role: "user", content: "x" }, { role: "assistant" }, { role: "user", content: "y" }], "messages[1].content"],
    [[{ role: "user", content: "x" }, { role: "assistant", tool_calls: [] }, { role: "user", content: "y" }], "messages[1].content"],
  ]) {
    const r = await postJson(server.base, "/v1/chat/completions", { model: "deepseek-chat", messages });
    assert.equal(r.status, 400, JSON.stringify(messages));
    assert.equal(r.json.error.param, param);
    assert.match(r.json.error.message, new RegExp(param.replace(/[[\].]/g, "\\$&")));
  }
  const ok = await postJson(server.base, "/v1/chat/completions", {
    model: "deepseek-chat",
    messages: [
      { role: "user", content: "x" },
      { role: "assistant", tool_calls: [{ id: "call_1", type: "function", function: { name: "f", arguments: "{}" } }] },
      { role: "tool", tool_call_id: "call_1", content: "done" },
    ],
    ds4_test_output: "ok",
  });
  assert.equal(ok.status, 200, ok.text);
});

test("streaming chat with usage chunk", async () => {
  const out = "Streaming works, one token at a time.";
  const stream = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "Stream please" }],
    stream: true,
    stream_options: { include_usage: true },
    ds4_test_output: out,
  });
  let text = "";
  let finish = null;
  let usage = null;
  let chunks = 0;
  let firstRole = null;
  for await (const chunk of stream) {
    chunks++;
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    const c = chunk.choices[0];
    if (firstRole === null && c.delta.role) firstRole = c.delta.role;
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(firstRole, "assistant");
  assert.equal(text, out);
  assert.equal(finish, "stop");
  assert.ok(chunks > 3, "content arrives in several chunks");
  assert.ok(usage, "usage chunk present");
  assert.equal(usage.prompt_tokens, chatPromptTokens("Stream please"));
  assert.equal(usage.completion_tokens, refEncode(out).length + 1);
});

test("thinking mode: reasoning only in reasoning_content", async () => {
  const r = await client.chat.completions.create({
    model: "deepseek-v4-flash",
    messages: [{ role: "user", content: "2+2?" }],
    ds4_test_output: "Adding two and two.</think>It is 4.",
  });
  assert.equal(r.choices[0].message.reasoning_content, "Adding two and two.");
  assert.equal(r.choices[0].message.content, "It is 4.");

  const stream = await client.chat.completions.create({
    model: "deepseek-reasoner",
    messages: [{ role: "user", content: "2+3?" }],
    stream: true,
    ds4_test_output: "Two plus three is five.</think>5",
  });
  let reasoning = "";
  let content = "";
  for await (const chunk of stream) {
    const d = chunk.choices[0]?.delta ?? {};
    if (d.reasoning_content) reasoning += d.reasoning_content;
    if (d.content) content += d.content;
    assert.ok(!(d.content ?? "").includes("think>"), "no think tags in content");
    assert.ok(!(d.reasoning_content ?? "").includes("think>"), "no think tags in reasoning");
  }
  assert.equal(reasoning, "Two plus three is five.");
  assert.equal(content, "5");

  const off = await postJson(server.base, "/apply-template", {
    messages: [{ role: "user", content: "x" }],
    thinking: { type: "disabled" },
  });
  assert.ok(off.json.prompt.endsWith(`${ASSISTANT}</think>`));
  const bad = await postJson(server.base, "/v1/chat/completions", {
    messages: [{ role: "user", content: "x" }],
    reasoning_effort: "extreme",
  });
  assert.equal(bad.status, 400);
});

// The tools block (docs/prompting.md) and golden example E5.
const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get weather",
    parameters: {
      type: "object",
      properties: { location: { type: "string" }, days: { type: "integer" } },
      required: ["location"],
    },
  },
};
const TOOLS_BLOCK =
  "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"$TOOL_NAME\">\n<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n...\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"$TOOL_NAME2\">\n...\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>\n\nString parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\nIf thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\nOtherwise, output directly after </think> with tool calls or final response.\n\n### Available Tool Schemas\n\n" +
  '{"name": "get_weather", "description": "Get weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}, "days": {"type": "integer"}}, "required": ["location"]}}' +
  "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
const DSML_CALL =
  '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="location" string="true">Beijing</｜DSML｜parameter>\n<｜DSML｜parameter name="days" string="false">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';

test("tool call round trip: streamed call, rendered result, live cache hit", async () => {
  const question = "Weather in Beijing for 2 days?";
  const messages = [{ role: "user", content: question }];
  const stream = await client.chat.completions.create({
    model: "deepseek-v4-flash",
    messages,
    tools: [WEATHER_TOOL],
    stream: true,
    stream_options: { include_usage: true },
    ds4_test_output: "Use the tool." + "</think>" + DSML_CALL,
  });
  let reasoning = "";
  let content = "";
  let header = null;
  let args = "";
  let fragments = 0;
  let finish = null;
  let usage1 = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage1 = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    if (c.delta.reasoning_content) reasoning += c.delta.reasoning_content;
    if (c.delta.content) content += c.delta.content;
    for (const tc of c.delta.tool_calls ?? []) {
      assert.equal(tc.index, 0);
      if (tc.id) {
        assert.equal(header, null, "one header per call");
        header = { id: tc.id, name: tc.function.name };
        assert.equal(tc.function.arguments, "");
      } else {
        assert.ok(header, "fragments after the header");
        args += tc.function.arguments;
        fragments++;
      }
    }
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(reasoning, "Use the tool.");
  assert.equal(content, "");
  assert.ok(header, "tool call header streamed");
  assert.match(header.id, /^call_[0-9a-f]{32}$/);
  assert.equal(header.name, "get_weather");
  assert.ok(fragments >= 2, "arguments stream in fragments");
  assert.deepEqual(JSON.parse(args), { location: "Beijing", days: 2 });
  assert.equal(finish, "tool_calls");

  const followUp = [
    ...messages,
    {
      role: "assistant",
      content: "",
      reasoning_content: reasoning,
      tool_calls: [{ id: header.id, type: "function", function: { name: header.name, arguments: args } }],
    },
    { role: "tool", tool_call_id: header.id, content: '{"temperature":22}' },
  ];
  const rendered = await postJson(server.base, "/apply-template", { messages: followUp, tools: [WEATHER_TOOL] });
  assert.equal(rendered.status, 200);
  const expected =
    BOS + "\n\n" + TOOLS_BLOCK + USER + question + ASSISTANT + "<think>Use the tool.</think>" + DSML_CALL + EOS +
    USER + '<tool_result>{"temperature":22}</tool_result>' + ASSISTANT + "<think>";
  assert.equal(rendered.json.prompt, expected);

  const hitsBefore = await metric(server.base, "ds4_cache_hits_total");
  const r2 = await client.chat.completions.create({
    model: "deepseek-v4-flash",
    messages: followUp,
    tools: [WEATHER_TOOL],
    ds4_test_output: "Sunny.</think>It will be 22 degrees.",
  });
  assert.equal(r2.choices[0].message.content, "It will be 22 degrees.");
  assert.equal(r2.choices[0].finish_reason, "stop");
  assert.equal(r2.usage.prompt_tokens, rendered.json.tokens.length);
  // Everything the first turn left in the live session is reused: its prompt and every
  // generated token up to the end of the tool-call block.
  assert.equal(r2.usage.prompt_tokens_details.cached_tokens, usage1.prompt_tokens + usage1.completion_tokens);
  assert.equal(await metric(server.base, "ds4_cache_hits_total"), hitsBefore + 1);
});

test("AI SDK: generateText tool loop and streamText", async () => {
  const scripts = [];
  const bodies = [];
  const provider = createOpenAICompatible({
    name: "ds4",
    baseURL: server.baseURL,
    apiKey: "unused",
    includeUsage: true,
    fetch: async (url, init) => {
      const body = JSON.parse(init.body);
      if (scripts.length) body.ds4_test_output = scripts.shift();
      bodies.push(body);
      return fetch(url, { ...init, body: JSON.stringify(body) });
    },
  });
  const model = provider.chatModel("deepseek-v4-flash");
  let toolInput = null;
  scripts.push("Use the tool.</think>" + DSML_CALL, "Done.</think>It is 22 degrees in Beijing.");
  const result = await generateText({
    model,
    prompt: "Weather in Beijing for 2 days?",
    tools: {
      get_weather: tool({
        description: "Get weather",
        inputSchema: jsonSchema({
          type: "object",
          properties: { location: { type: "string" }, days: { type: "integer" } },
          required: ["location"],
        }),
        execute: async (input) => {
          toolInput = input;
          return { temperature: 22 };
        },
      }),
    },
    stopWhen: stepCountIs(3),
  });
  assert.deepEqual(toolInput, { location: "Beijing", days: 2 });
  assert.equal(result.text, "It is 22 degrees in Beijing.");
  assert.equal(result.steps.length, 2);
  assert.equal(result.steps[0].finishReason, "tool-calls");
  // The second request carried the call and its result back.
  const second = bodies[1];
  const assistant = second.messages.find((m) => m.role === "assistant");
  assert.equal(assistant.tool_calls[0].function.name, "get_weather");
  assert.equal(second.messages.at(-1).role, "tool");

  scripts.push("Counting: one, two, three.");
  const streamed = streamText({ model: provider.chatModel("deepseek-chat"), prompt: "Count to three" });
  let text = "";
  for await (const part of streamed.textStream) text += part;
  assert.equal(text, "Counting: one, two, three.");
  const usage = await streamed.usage;
  assert.equal(usage.inputTokens, chatPromptTokens("Count to three"));
});

test("stop sequences cut the output", async () => {
  const r = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "count" }],
    stop: ["three", "zzz"],
    ds4_test_output: "one two three four five",
  });
  assert.equal(r.choices[0].message.content, "one two ");
  assert.equal(r.choices[0].finish_reason, "stop");

  const stream = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "count" }],
    stop: "four",
    stream: true,
    ds4_test_output: "one two three four five",
  });
  let text = "";
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
    if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
  }
  assert.equal(text, "one two three ");
  assert.equal(finish, "stop");
});

test("max_tokens gives finish length; seeded sampling is reproducible", async () => {
  const r = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "go" }],
    max_tokens: 3,
    ds4_test_output: "a b c d e f g h i j k l",
  });
  assert.equal(r.choices[0].finish_reason, "length");
  assert.equal(r.usage.completion_tokens, 3);
  const ask = () =>
    client.chat.completions.create({
      model: "deepseek-chat",
      messages: [{ role: "user", content: "Say something" }],
      max_completion_tokens: 6,
      temperature: 1,
      seed: 1234,
    });
  const a = await ask();
  const b = await ask();
  assert.equal(a.usage.completion_tokens, b.usage.completion_tokens);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
});

test("logprobs", async () => {
  const r = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "go" }],
    max_tokens: 4,
    temperature: 0,
    logprobs: true,
    top_logprobs: 3,
  });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, 4);
  for (const e of lp) {
    assert.equal(e.top_logprobs.length, 3);
    assert.ok(e.logprob <= 0);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(e.logprob - e.top_logprobs[0].logprob) < 1e-5);
    assert.ok(e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob);
  }
});

test("legacy completions, streaming and not", async () => {
  const r = await client.completions.create({
    model: "deepseek-v4-flash",
    prompt: "Once upon a time",
    max_tokens: 20,
    ds4_test_output: " there was a server.",
  });
  assert.equal(r.object, "text_completion");
  assert.match(r.id, /^cmpl-/);
  assert.equal(r.choices[0].text, " there was a server.");
  assert.equal(r.choices[0].finish_reason, "stop");
  assert.equal(r.usage.prompt_tokens, 1 + refEncode("Once upon a time").length);

  const stream = await client.completions.create({
    model: "deepseek-v4-flash",
    prompt: "Once upon a time",
    max_tokens: 20,
    stream: true,
    ds4_test_output: " there were two.",
  });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
  assert.equal(text, " there were two.");
});

test("malformed requests get 400 with an error object", async () => {
  const raw = await postJson(server.base, "/v1/chat/completions", "{not json");
  assert.equal(raw.status, 400);
  assert.match(raw.json.error.message, /invalid JSON/);
  assert.equal(raw.json.error.type, "invalid_request_error");

  const missing = await postJson(server.base, "/v1/chat/completions", { model: "x" });
  assert.equal(missing.status, 400);
  assert.match(missing.json.error.message, /messages/);

  const cases = [
    { temperature: "hot" },
    { max_tokens: "ten" },
    { messages: "hello" },
    { messages: [{ role: "user", content: 5 }] },
    { messages: [{ role: "wizard", content: "x" }] },
    { stop: [1, 2] },
    { tools: [{ type: "function", function: {} }] },
    { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] },
    { response_format: { type: "xml" } },
    { n: 2 },
  ];
  for (const extra of cases) {
    const body = { model: "deepseek-chat", messages: [{ role: "user", content: "x" }], ...extra };
    await assert.rejects(client.chat.completions.create(body), (e) => {
      assert.equal(e.status, 400, JSON.stringify(extra));
      assert.ok(e.error?.message ?? e.message);
      return true;
    });
  }
  const deep = "[".repeat(300) + "]".repeat(300);
  const deepRes = await postJson(server.base, "/v1/chat/completions", `{"messages":${deep}}`);
  assert.equal(deepRes.status, 400);

  const unknown = await fetch(server.base + "/v1/nothing");
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json()).error.message, "unknown endpoint");
});

test("context overflow answers context_length_exceeded", async () => {
  const long = "lorem ipsum dolor sit amet ".repeat(1200);
  await assert.rejects(
    client.chat.completions.create({ model: "deepseek-chat", messages: [{ role: "user", content: long }] }),
    (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.code, "context_length_exceeded");
      // Phrases agents match to compact: opencode's ds4 pattern, Pi's OpenAI pattern.
      assert.match(e.message, /prompt has \d+ tokens, but the configured context size is 4096 tokens/i);
      assert.match(e.message, /exceeds the context window/);
      return true;
    },
  );
  const models = await (await fetch(server.base + "/v1/models")).json();
  for (const m of models.data) {
    assert.equal(m.context_length, 4096);
    assert.equal(m.max_input_tokens, 4096);
  }
});

// 400 scripted tokens (no early EOS), 50 ms each: 20 s unless cancelled.
const LONG_SCRIPT = " word".repeat(400);

test("a client that disconnects mid-stream cancels its job", async () => {
  const cancelledBefore = await metric(server.base, "ds4_cancelled_total");
  const controller = new AbortController();
  const res = await fetch(server.baseURL + "/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "deepseek-chat",
      messages: [{ role: "user", content: "Write a long story" }],
      stream: true,
      max_tokens: 400,
      ds4_test_output: LONG_SCRIPT,
      ds4_test_delay_ms: 50,
    }),
    signal: controller.signal,
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  let seen = "";
  while (!seen.includes('"content"')) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += new TextDecoder().decode(value);
  }
  controller.abort();
  // Without cancellation the worker would spend 400 x 50 ms on the abandoned job.
  const t0 = Date.now();
  const r = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "still there?" }],
    ds4_test_output: "Yes.",
  });
  assert.equal(r.choices[0].message.content, "Yes.");
  assert.ok(Date.now() - t0 < 8000, `next request waited ${Date.now() - t0} ms`);
  assert.ok((await metric(server.base, "ds4_cancelled_total")) >= cancelledBefore + 1);

  // The same for a non-streaming request abandoned while it runs.
  const c2 = new AbortController();
  const pending = fetch(server.baseURL + "/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      model: "deepseek-chat",
      messages: [{ role: "user", content: "Another long one" }],
      max_tokens: 400,
      ds4_test_output: LONG_SCRIPT,
      ds4_test_delay_ms: 50,
    }),
    signal: c2.signal,
  }).catch(() => null);
  await new Promise((r) => setTimeout(r, 500));
  c2.abort();
  await pending;
  const t1 = Date.now();
  const r3 = await client.chat.completions.create({
    model: "deepseek-chat",
    messages: [{ role: "user", content: "and now?" }],
    ds4_test_output: "Fine.",
  });
  assert.equal(r3.choices[0].message.content, "Fine.");
  assert.ok(Date.now() - t1 < 8000, `next request waited ${Date.now() - t1} ms`);
});

test("metrics expose counters", async () => {
  const text = await (await fetch(server.base + "/metrics")).text();
  for (const name of ["ds4_requests_total", "ds4_prompt_tokens_total", "ds4_completion_tokens_total",
                      "ds4_prefill_tokens_per_second", "ds4_decode_tokens_per_second", "ds4_queue_depth",
                      "ds4_cache_hits_total"]) {
    assert.match(text, new RegExp(`^${name} \\d`, "m"), name);
  }
  assert.ok((await metric(server.base, "ds4_completion_tokens_total")) > 0);
});

test("api key is required when configured", async () => {
  const secured = await startServer(["--api-key", "sekrit", "--cors", "--max-body-bytes", "65536"]);
  try {
    const bad = new OpenAI({ baseURL: secured.baseURL, apiKey: "wrong", maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => e.status === 401);
    const none = await fetch(secured.baseURL + "/models");
    assert.equal(none.status, 401);
    const good = new OpenAI({ baseURL: secured.baseURL, apiKey: "sekrit", maxRetries: 0 });
    const r = await good.chat.completions.create({
      model: "deepseek-chat",
      messages: [{ role: "user", content: "hi" }],
      ds4_test_output: "ok",
    });
    assert.equal(r.choices[0].message.content, "ok");
    const viaHeader = await fetch(secured.baseURL + "/models", { headers: { "x-api-key": "sekrit" } });
    assert.equal(viaHeader.status, 200);
    assert.equal(viaHeader.headers.get("access-control-allow-origin"), "*");
    const preflight = await fetch(secured.baseURL + "/chat/completions", { method: "OPTIONS" });
    assert.equal(preflight.status, 204);
    const big = await postJson(secured.base, "/v1/chat/completions",
                               { messages: [{ role: "user", content: "x".repeat(100000) }] },
                               { authorization: "Bearer sekrit" });
    assert.equal(big.status, 413);
    assert.equal(big.json.error.type, "invalid_request_error");
  } finally {
    await secured.stop();
  }
});
