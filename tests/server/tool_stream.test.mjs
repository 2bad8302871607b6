// Streamed and non-streamed answers agree on tool calls, on every protocol: a call goes out
// only once its DSML block is complete and valid. A block with one complete invoke followed
// by an invalid tag, or a block cut short by max_tokens, is no call at all (its bytes are
// text), streamed or not. Answers are scripted with "ds4_test_output" (--test-hooks).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, postJson, parseSse, dsmlCall } from "./harness.mjs";

let server;

before(async () => {
  server = await startServer();
  truncatedAt = (await postJson(server.base, "/tokenize", { content: TWO_CALLS })).json.tokens.length - 2;
});
after(async () => {
  if (server) await server.stop();
});

const BASH = { name: "bash", description: "Run a shell command", parameters: { type: "object", properties: { command: { type: "string" } }, required: ["command"] } };

const VALID = "I will run it." + dsmlCall("bash", { command: "touch marker" });
// One complete invoke, then a tag that is not an invoke: the whole block is rejected.
const INVALID =
  "I will run it.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n" +
  "<｜DSML｜parameter name=\"command\" string=\"true\">touch marker</｜DSML｜parameter>\n" +
  "</｜DSML｜invoke>\n<｜DSML｜oops>\n</｜DSML｜tool_calls>";
// Two complete invokes, cut inside the block's closing tag by max_tokens.
const TWO_CALLS =
  "Both.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n" +
  "<｜DSML｜parameter name=\"command\" string=\"true\">touch a</｜DSML｜parameter>\n" +
  "</｜DSML｜invoke>\n<｜DSML｜invoke name=\"bash\">\n" +
  "<｜DSML｜parameter name=\"command\" string=\"true\">touch b</｜DSML｜parameter>\n" +
  "</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
// The server's tokenization (DSML markers are special tokens), less two: inside the closing tag.
let truncatedAt = 0;
// A streamed call in each protocol's own shape.
const CALL_EVENT = { chat: /"tool_calls":\[/, messages: /"type":"tool_use"/, responses: /"type":"function_call"|function_call_arguments/ };

// Each protocol: a request body, and readers that reduce an answer to {text, calls, finish}.
const protocols = {
  chat: {
    path: "/v1/chat/completions",
    body: (script, extra) => ({
      model: "deepseek-chat",
      messages: [{ role: "user", content: "Make the marker." }],
      tools: [{ type: "function", function: BASH }],
      ds4_test_output: script,
      ...extra,
    }),
    whole(json) {
      const m = json.choices[0].message;
      const calls = (m.tool_calls ?? []).map((c) => ({ name: c.function.name, args: JSON.parse(c.function.arguments) }));
      return { text: m.content, calls, finish: json.choices[0].finish_reason };
    },
    streamed(events) {
      let text = "";
      let finish = null;
      const calls = [];
      for (const e of events) {
        if (!e.data || e.data === "[DONE]") continue;
        const ch = e.data.choices?.[0];
        if (!ch) continue;
        text += ch.delta?.content ?? "";
        for (const d of ch.delta?.tool_calls ?? []) {
          if (d.id) calls[d.index] = { name: d.function.name, args: "" };
          calls[d.index].args += d.function?.arguments ?? "";
        }
        finish = ch.finish_reason ?? finish;
      }
      return { text, calls: calls.map((c) => ({ name: c.name, args: JSON.parse(c.args) })), finish };
    },
  },
  messages: {
    path: "/v1/messages",
    body: (script, extra) => ({
      model: "deepseek-chat",
      max_tokens: extra.max_tokens ?? 200,
      messages: [{ role: "user", content: "Make the marker." }],
      tools: [{ name: BASH.name, description: BASH.description, input_schema: BASH.parameters }],
      ds4_test_output: script,
      ...extra,
    }),
    whole(json) {
      const text = json.content.filter((b) => b.type === "text").map((b) => b.text).join("");
      const calls = json.content.filter((b) => b.type === "tool_use").map((b) => ({ name: b.name, args: b.input }));
      return { text, calls, finish: json.stop_reason };
    },
    streamed(events) {
      const blocks = [];
      let finish = null;
      for (const { event, data } of events) {
        if (event === "content_block_start") blocks[data.index] = { ...data.content_block, json: "" };
        if (event === "content_block_delta" && data.delta.type === "text_delta") blocks[data.index].text += data.delta.text;
        if (event === "content_block_delta" && data.delta.type === "input_json_delta") blocks[data.index].json += data.delta.partial_json;
        if (event === "message_delta") finish = data.delta.stop_reason;
      }
      const text = blocks.filter((b) => b.type === "text").map((b) => b.text).join("");
      const calls = blocks.filter((b) => b.type === "tool_use").map((b) => ({ name: b.name, args: JSON.parse(b.json) }));
      return { text, calls, finish };
    },
  },
  responses: {
    path: "/v1/responses",
    body: (script, extra) => ({
      model: "deepseek-chat",
      input: "Make the marker.",
      tools: [{ type: "function", ...BASH }],
      ds4_test_output: script,
      ...(extra.max_tokens ? { max_output_tokens: extra.max_tokens } : {}),
      ...(extra.stream ? { stream: true } : {}),
    }),
    whole(json) {
      const text = json.output.filter((i) => i.type === "message").map((i) => i.content[0].text).join("");
      const calls = json.output.filter((i) => i.type === "function_call").map((i) => ({ name: i.name, args: JSON.parse(i.arguments) }));
      return { text, calls, finish: json.status };
    },
    streamed(events) {
      let text = "";
      const args = {};
      const names = {};
      let finish = null;
      for (const { data } of events) {
        if (!data?.type) continue;
        if (data.type === "response.output_text.delta") text += data.delta;
        if (data.type === "response.output_item.added" && data.item.type === "function_call") {
          names[data.item.id] = data.item.name;
          args[data.item.id] = "";
        }
        if (data.type === "response.function_call_arguments.delta") args[data.item_id] += data.delta;
        if (/^response\.(completed|incomplete|failed)$/.test(data.type)) finish = data.response.status;
      }
      const calls = Object.keys(args).map((id) => ({ name: names[id], args: JSON.parse(args[id]) }));
      return { text, calls, finish };
    },
  },
};

async function both(proto, script, extra = {}) {
  const p = protocols[proto];
  const whole = await postJson(server.base, p.path, p.body(script, extra));
  assert.equal(whole.status, 200, whole.text);
  const streamed = await postJson(server.base, p.path, p.body(script, { ...extra, stream: true }));
  assert.equal(streamed.status, 200, streamed.text);
  return { whole: p.whole(whole.json), streamed: p.streamed(parseSse(streamed.text)), raw: streamed.text };
}

for (const proto of Object.keys(protocols)) {
  test(`${proto}: a valid block is the same call streamed or not`, async () => {
    const { whole, streamed, raw } = await both(proto, VALID);
    assert.deepEqual(streamed, whole);
    assert.deepEqual(whole.calls, [{ name: "bash", args: { command: "touch marker" } }]);
    assert.equal(whole.text, "I will run it.");
    assert.match(raw, CALL_EVENT[proto]);
  });

  test(`${proto}: a complete invoke followed by an invalid tag is no call, streamed or not`, async () => {
    const { whole, streamed, raw } = await both(proto, INVALID);
    assert.deepEqual(streamed, whole);
    assert.deepEqual(whole.calls, []);
    assert.equal(whole.text, INVALID, "the rejected block comes back as text");
    assert.doesNotMatch(raw, CALL_EVENT[proto], "no call was ever streamed");
    assert.equal(whole.finish, { chat: "stop", messages: "end_turn", responses: "completed" }[proto]);
  });

  test(`${proto}: a block cut short by the token limit is no call, streamed or not`, async () => {
    const { whole, streamed, raw } = await both(proto, TWO_CALLS, { max_tokens: truncatedAt });
    assert.deepEqual(streamed, whole);
    assert.deepEqual(whole.calls, []);
    assert.ok(TWO_CALLS.startsWith(whole.text) && whole.text.length > "Both.".length, whole.text);
    assert.doesNotMatch(raw, CALL_EVENT[proto]);
    assert.equal(whole.finish, { chat: "length", messages: "max_tokens", responses: "incomplete" }[proto]);
  });
}
