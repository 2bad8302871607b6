// The request shapes real agents send (tests/server/fixtures/, recorded from the agents the
// agent suite pins, long texts shortened) are accepted and answered with complete protocol
// streams. Answers are scripted with "ds4_test_output" (--test-hooks).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { startServer, parseSse, dsmlCall, refEncode } from "./harness.mjs";

let server;

before(async () => {
  refEncode("warm up");
  server = await startServer();
});
after(async () => {
  if (server) await server.stop();
});

function fixture(name) {
  return JSON.parse(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), "utf8"));
}

async function send(fx, body) {
  const res = await fetch(server.base + fx.path, { method: fx.method, headers: fx.headers, body: JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, type: res.headers.get("content-type"), events: parseSse(text), text };
}

const inputTotal = (u) => u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens;

test("Claude Code: /v1/messages?beta=true with billing header, mid-conversation system, adaptive thinking, tools", async () => {
  const fx = fixture("claude_code_messages.json");
  // Claude Code's environment block is a system message after the user turn.
  assert.equal(fx.body.messages[1].role, "system");
  assert.match(fx.body.system[0].text, /^x-anthropic-billing-header/);
  const script = "I will list them.</think>" + dsmlCall("Bash", { command: "ls", description: "List files" });
  const r1 = await send(fx, { ...fx.body, ds4_test_output: script });
  assert.equal(r1.status, 200, r1.text);
  assert.match(r1.type, /text\/event-stream/);
  const names = r1.events.map((e) => e.event).filter((n) => n !== "ping");
  assert.equal(names[0], "message_start");
  assert.deepEqual(names.slice(-2), ["message_delta", "message_stop"]);
  const starts = r1.events.filter((e) => e.event === "content_block_start").map((e) => e.data.content_block);
  assert.deepEqual(starts.map((b) => b.type), ["thinking", "tool_use"]);
  assert.equal(starts[1].name, "Bash");
  const json = r1.events
    .filter((e) => e.event === "content_block_delta" && e.data.delta.type === "input_json_delta")
    .map((e) => e.data.delta.partial_json)
    .join("");
  assert.deepEqual(JSON.parse(json), { command: "ls", description: "List files" });
  const delta = r1.events.find((e) => e.event === "message_delta").data;
  assert.equal(delta.delta.stop_reason, "tool_use");
  const start = r1.events.find((e) => e.event === "message_start").data.message;

  // The next request carries a new billing line (it changes every request): it is dropped,
  // so the whole previous turn is still a live-cache hit.
  const body2 = structuredClone(fx.body);
  body2.system[0].text = "x-anthropic-billing-header: cc_version=2.1.3.ffff; cc_entrypoint=sdk-cli; cch=12345;";
  body2.messages.push(
    {
      role: "assistant",
      content: [
        { type: "thinking", thinking: "I will list them.", signature: start.id },
        { type: "tool_use", id: starts[1].id, name: "Bash", input: { description: "List files", command: "ls" } },
      ],
    },
    { role: "user", content: [{ type: "tool_result", tool_use_id: starts[1].id, content: "a.txt\nb.txt", cache_control: { type: "ephemeral" } }] },
  );
  const r2 = await send(fx, { ...body2, ds4_test_output: "Two files.</think>a.txt and b.txt." });
  assert.equal(r2.status, 200, r2.text);
  const start2 = r2.events.find((e) => e.event === "message_start").data.message;
  assert.equal(start2.usage.cache_read_input_tokens, inputTotal(start.usage) + delta.usage.output_tokens);
  const text = r2.events
    .filter((e) => e.event === "content_block_delta" && e.data.delta.type === "text_delta")
    .map((e) => e.data.delta.text)
    .join("");
  assert.equal(text, "a.txt and b.txt.");
});

test("Codex: /v1/responses with developer items, function + hosted tools, store=false", async () => {
  const fx = fixture("codex_responses.json");
  const script = "List them.</think>" + dsmlCall("exec_command", { cmd: "ls" });
  const r1 = await send(fx, { ...fx.body, ds4_test_output: script });
  assert.equal(r1.status, 200, r1.text);
  const events = r1.events.filter((e) => e.data);
  events.forEach((e, i) => assert.equal(e.data.sequence_number, i));
  const done = events.at(-1).data;
  assert.equal(done.type, "response.completed");
  const call = done.response.output.find((i) => i.type === "function_call");
  assert.equal(call.name, "exec_command");
  assert.deepEqual(JSON.parse(call.arguments), { cmd: "ls" });
  // Codex needs content_part.added before any output_text.delta, and calls as output items.
  const types = events.map((e) => e.data.type);
  assert.ok(types.includes("response.output_item.added"));

  // Codex replays the visible transcript (no reasoning) with the call's output.
  const body2 = structuredClone(fx.body);
  body2.input.push(
    { type: "function_call", name: "exec_command", arguments: call.arguments, call_id: call.call_id },
    { type: "function_call_output", call_id: call.call_id, output: "a.txt\nb.txt" },
  );
  const r2 = await send(fx, { ...body2, ds4_test_output: "Done.</think>Two files: a.txt and b.txt." });
  assert.equal(r2.status, 200, r2.text);
  const done2 = r2.events.filter((e) => e.data).at(-1).data;
  assert.equal(done2.type, "response.completed");
  // The reasoning Codex does not send back is still in the live state: all of it is reused.
  assert.equal(done2.response.usage.input_tokens_details.cached_tokens,
               done.response.usage.input_tokens + done.response.usage.output_tokens);
  const msg = done2.response.output.find((i) => i.type === "message");
  assert.equal(msg.content[0].text, "Two files: a.txt and b.txt.");
});

for (const name of ["opencode_chat.json", "pi_chat.json"]) {
  test(`${name.split("_")[0]}: streamed chat completion with tools`, async () => {
    const fx = fixture(name);
    const thinking = name.startsWith("pi") ? "Read it.</think>" : "";
    const args = name.startsWith("pi") ? { path: "README.md" } : { filePath: "README.md" };
    const r = await send(fx, { ...fx.body, ds4_test_output: thinking + dsmlCall("read", args) });
    assert.equal(r.status, 200, r.text);
    const chunks = r.events.filter((e) => e.data && e.data !== "[DONE]").map((e) => e.data);
    assert.equal(r.events.at(-1).data, "[DONE]");
    const calls = chunks.flatMap((c) => c.choices?.[0]?.delta?.tool_calls ?? []);
    assert.equal(calls[0].function.name, "read");
    assert.deepEqual(JSON.parse(calls.map((c) => c.function.arguments).join("")), args);
    assert.equal(chunks.find((c) => c.choices?.[0]?.finish_reason)?.choices[0].finish_reason, "tool_calls");
    assert.ok(chunks.at(-1).usage.prompt_tokens > 50, "usage chunk (stream_options.include_usage)");
  });
}
