// Speculative decoding through the server's API (docs/speculative.md): with --mtp-draft N,
// N = 1..4 fixed and 4 adaptive, every greedy answer is byte-identical to plain decode's,
// logprobs included. Requests: completions; chat with a stop string, whole and streamed;
// DSML tool calls (a scripted prefix that opens a call, then the model's own tokens inside
// the call's syntax; a whole scripted call); drafts from the model's MTP block (random
// weights: nearly all rejected) and drafts given by the "ds4_test_drafts" hook (the plain
// answer's tokens with every fourth spoiled: accepted and rejected ones). Two models with an
// MTP block: the tiny synthetic model and one of the tiny-a oracle configuration's shapes,
// both with the real vocabulary (env DS4_TEST_MODEL, DS4_TEST_MODEL_B).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { startServer, postJson, parseSse, metric, dsmlCall } from "./harness.mjs";

const servers = [];
after(async () => {
  for (const s of servers) await s.stop();
});

const BASH = { type: "function", function: { name: "bash", description: "Run a shell command",
  parameters: { type: "object", properties: { command: { type: "string" } }, required: ["command"] } } };
const OPEN_CALL = "I will run it.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"bash\">\n" +
  "<｜DSML｜parameter name=\"command\" string=\"true\">";

// What an answer is, without the per-request fields (ids, timestamps).
function chatAnswer(json) {
  assert.ok(json?.choices, JSON.stringify(json));
  const c = json.choices[0];
  // Tool-call ids are random per request.
  const message = { ...c.message, tool_calls: c.message.tool_calls?.map(({ id, ...call }) => call) };
  return { message, logprobs: c.logprobs ?? null, finish: c.finish_reason, usage: json.usage.completion_tokens };
}
function streamedAnswer(text) {
  let content = "", reasoning = "", finish = null;
  for (const e of parseSse(text)) {
    const ch = e.data?.choices?.[0];
    if (!ch) continue;
    content += ch.delta?.content ?? "";
    reasoning += ch.delta?.reasoning_content ?? "";
    finish = ch.finish_reason ?? finish;
  }
  return { content, reasoning, finish };
}

// Every request of the check, on one server; `plain` (the answers of plain decode) supplies
// the stop string and the hook's drafts.
async function answers(server, plain) {
  const out = {};
  const comp = await postJson(server.base, "/v1/completions", {
    model: "m", prompt: "The quick brown fox", temperature: 0, max_tokens: 32, logprobs: 2 });
  assert.equal(comp.status, 200, comp.text);
  out.completion = { text: comp.json.choices[0].text, logprobs: comp.json.choices[0].logprobs,
                     finish: comp.json.choices[0].finish_reason };

  const chat = { model: "deepseek-chat", messages: [{ role: "user", content: "Tell me a story." }],
                 temperature: 0, max_tokens: 32, logprobs: true, top_logprobs: 2 };
  out.chat = chatAnswer((await postJson(server.base, "/v1/chat/completions", chat)).json);
  // A stop string from the middle of the plain answer (its first occurrence ends the answer).
  const text = (plain ?? out).chat.message.content;
  const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
  assert.ok(stop.trim().length > 0, `no usable stop string in ${JSON.stringify(text)}`);
  out.stopped = chatAnswer((await postJson(server.base, "/v1/chat/completions", { ...chat, stop: [stop] })).json);
  const sse = await postJson(server.base, "/v1/chat/completions", { ...chat, stop: [stop], stream: true, logprobs: false });
  out.stoppedStream = streamedAnswer(sse.text);

  const tools = { model: "deepseek-chat", messages: [{ role: "user", content: "Make a marker file." }],
                  tools: [BASH], temperature: 0, max_tokens: 32 };
  out.openCall = chatAnswer((await postJson(server.base, "/v1/chat/completions",
                                            { ...tools, ds4_test_output_prefix: OPEN_CALL })).json);
  out.wholeCall = chatAnswer((await postJson(server.base, "/v1/chat/completions",
    { ...tools, max_tokens: 200, ds4_test_output: "I will run it." + dsmlCall("bash", { command: "touch marker" }) })).json);

  // Drafts from the hook: the plain completion's tokens (its text tokenized again: mostly
  // the same tokens), every fourth one spoiled.
  const ids = (await postJson(server.base, "/tokenize", { content: (plain ?? out).completion.text })).json.tokens;
  const drafts = ids.map((t, i) => (i % 4 === 3 ? (t + 1) % 1000 : t));
  const accepted0 = await metric(server.base, "ds4_mtp_accepted_tokens_total");
  const hooked = await postJson(server.base, "/v1/completions", {
    model: "m", prompt: "The quick brown fox", temperature: 0, max_tokens: 32, logprobs: 2, ds4_test_drafts: drafts });
  assert.equal(hooked.status, 200, hooked.text);
  out.hooked = { text: hooked.json.choices[0].text, logprobs: hooked.json.choices[0].logprobs,
                 finish: hooked.json.choices[0].finish_reason };
  out.hookAccepted = (await metric(server.base, "ds4_mtp_accepted_tokens_total")) - accepted0;
  return out;
}

for (const [name, model] of [["synthetic", process.env.DS4_TEST_MODEL], ["tiny-a shapes", process.env.DS4_TEST_MODEL_B]]) {
  test(`${name}: --mtp-draft 1..4 answers equal plain decode`, { skip: !model && "model not built" }, async () => {
    const start = async (args) => {
      process.env.DS4_TEST_MODEL = model;  // the harness's -m
      const s = await startServer(args, { threads: 1 });
      servers.push(s);
      return s;
    };
    const plainServer = await start([]);
    const plain = await answers(plainServer);
    await plainServer.stop();
    const { hookAccepted, ...want } = plain;
    assert.equal(hookAccepted, 0);  // no speculation: the hook changes nothing
    assert.equal(want.stopped.finish, "stop");
    assert.ok(want.stopped.message.content.length < want.chat.message.content.length);
    assert.equal(want.wholeCall.message.tool_calls?.length, 1, JSON.stringify(want.wholeCall));

    for (const args of [["--mtp-draft", "1", "--mtp-fixed"], ["--mtp-draft", "2", "--mtp-fixed"],
                        ["--mtp-draft", "3", "--mtp-fixed"], ["--mtp-draft", "4", "--mtp-fixed"],
                        ["--mtp-draft", "4"]]) {
      const s = await start(args);
      const { hookAccepted: accepted, ...got } = await answers(s, plain);
      for (const k of Object.keys(want)) assert.deepEqual(got[k], want[k], `${args.join(" ")}: ${k}`);
      const drafted = await metric(s.base, "ds4_mtp_drafted_tokens_total");
      if (args.includes("--mtp-fixed")) {
        assert.ok(drafted > 0, `${args.join(" ")}: nothing drafted`);
        assert.ok(accepted > 0, `${args.join(" ")}: no hook draft accepted`);
        // Only here: the adaptive controller may draft nothing until the last request, whose
        // log line can come after its answer (and so after this check).
        assert.match(s.stderr(), /mtp drafted=[1-9][0-9]* accepted=[0-9]+/);
      }
      await s.stop();
    }
  });
}
