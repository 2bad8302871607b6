// Several live sessions (--parallel N) on the tiny real-vocabulary model, driven by the real
// openai SDK: concurrent streams give exactly what each gives alone, alternating
// conversations keep their live prefixes, a disconnect frees only its own slot, and a full
// queue answers 429.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer, metric } from "./harness.mjs";

const servers = [];
after(async () => {
  for (const s of servers) await s.stop();
});
async function start(args) {
  const s = await startServer(["--quiet", ...args]);
  servers.push(s);
  return s;
}
function clientOf(server) {
  return new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 0, timeout: 120000 });
}
async function slots(server) {
  return (await fetch(server.base + "/slots")).json();
}
async function waitFor(pred, ms = 5000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await pred()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get weather",
    parameters: { type: "object", properties: { location: { type: "string" } }, required: ["location"] },
  },
};
const DSML_CALL =
  '\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n<｜DSML｜parameter name="location" string="true">Oslo</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>';

// Four different requests: greedy text with logprobs, seeded thinking (reasoning), a tool
// call, greedy text after a system prompt. The delay keeps all four generating at once.
const REQUESTS = [
  { model: "deepseek-chat", messages: [{ role: "user", content: "Tell me about slots." }],
    temperature: 0, max_tokens: 20, logprobs: true, top_logprobs: 2 },
  { model: "deepseek-reasoner", messages: [{ role: "user", content: "Think about batching." }],
    seed: 7, max_tokens: 20, logprobs: true },
  // The tokens are scripted; their logprobs are still the model's, so cross-talk would show.
  { model: "deepseek-v4-flash", messages: [{ role: "user", content: "Weather in Oslo?" }],
    tools: [WEATHER_TOOL], ds4_test_output: "I will call the tool.</think>" + DSML_CALL, logprobs: true },
  { model: "deepseek-chat",
    messages: [{ role: "system", content: "You are terse." }, { role: "user", content: "Name a color." }],
    temperature: 0, max_tokens: 20 },
];

async function streamOne(client, body, delayMs) {
  const stream = await client.chat.completions.create({
    ...body, stream: true, stream_options: { include_usage: true }, ds4_test_delay_ms: delayMs,
  });
  const out = { content: "", reasoning: "", calls: [], finish: null, usage: null, logprobs: [] };
  for await (const chunk of stream) {
    if (chunk.usage) out.usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    if (c.delta.content) out.content += c.delta.content;
    if (c.delta.reasoning_content) out.reasoning += c.delta.reasoning_content;
    for (const tc of c.delta.tool_calls ?? []) {
      if (tc.function?.name) out.calls.push({ name: tc.function.name, arguments: "" });
      if (tc.function?.arguments) out.calls[out.calls.length - 1].arguments += tc.function.arguments;
    }
    for (const lp of c.logprobs?.content ?? []) out.logprobs.push([lp.token, lp.logprob, lp.top_logprobs]);
    if (c.finish_reason) out.finish = c.finish_reason;
  }
  return { content: out.content, reasoning: out.reasoning, calls: out.calls, finish: out.finish,
           completion_tokens: out.usage?.completion_tokens, prompt_tokens: out.usage?.prompt_tokens,
           logprobs: out.logprobs };
}

test("4 concurrent streams on --parallel 4 equal each run alone on --parallel 1", async () => {
  const single = await start(["--parallel", "1"]);
  const alone = [];
  for (const body of REQUESTS) alone.push(await streamOne(clientOf(single), body, 0));
  assert.ok(alone[1].reasoning.length > 0, "the thinking request reasons");
  assert.equal(alone[2].finish, "tool_calls");
  assert.equal(alone[2].calls.length, 1);
  assert.deepEqual(JSON.parse(alone[2].calls[0].arguments), { location: "Oslo" });
  for (const i of [0, 1, 2]) assert.ok(alone[i].logprobs.length > 0, `request ${i} has logprobs`);

  const multi = await start(["--parallel", "4"]);
  const client = clientOf(multi);
  const together = await Promise.all(REQUESTS.map((body) => streamOne(client, body, 25)));
  for (let i = 0; i < REQUESTS.length; i++) assert.deepEqual(together[i], alone[i], `request ${i}`);
  // Each ran in a slot of its own (the closing token is evaluated after the answer is out).
  assert.ok(await waitFor(async () => (await slots(multi)).every((x) => x.state === "idle")));
  const s = await slots(multi);
  assert.equal(s.length, 4);
  assert.deepEqual(s.map((x) => x.requests), [1, 1, 1, 1]);
  assert.equal(new Set(s.map((x) => x.prefix_hash)).size, 4);
  const text = await (await fetch(multi.base + "/metrics")).text();
  assert.match(text, /^ds4_slot_requests_total\{slot="3"\} 1$/m);
  // Decode steps evaluated several slots' tokens in one batch.
  const steps = await metric(multi.base, "ds4_decode_steps_total");
  const rows = await metric(multi.base, "ds4_decode_step_rows_total");
  assert.ok(rows > 1.5 * steps, `rows ${rows} steps ${steps}`);
});

// Two conversations with one system prompt, taking turns (an agent's main thread and its
// sub-agent). Returns the per-turn usage.
async function alternate(server, turns) {
  const client = clientOf(server);
  const system = { role: "system", content: "You are a coding agent. Follow the repository rules." };
  const conv = [0, 1].map((c) => [system, { role: "user", content: `Task ${c}: list the files.` }]);
  const usage = [[], []];
  for (let t = 0; t < turns; t++) {
    for (let c = 0; c < 2; c++) {
      const answer = `Turn ${t} of conversation ${c}: done.`;
      const r = await client.chat.completions.create({
        model: "deepseek-chat", messages: conv[c], max_tokens: 32, ds4_test_output: answer,
      });
      assert.equal(r.choices[0].message.content, answer);
      usage[c].push(r.usage);
      conv[c].push({ role: "assistant", content: answer }, { role: "user", content: `Next step ${t}.` });
    }
  }
  return usage;
}

test("alternating conversations on --parallel 2 reuse their whole previous turn", async () => {
  const turns = 4;
  const two = await alternate(await start(["--parallel", "2"]), turns);
  const one = await alternate(await start(["--parallel", "1"]), turns);
  for (let c = 0; c < 2; c++) {
    for (let t = 1; t < turns; t++) {
      const prev = two[c][t - 1];
      assert.equal(two[c][t].prompt_tokens_details.cached_tokens, prev.prompt_tokens + prev.completion_tokens,
                   `conversation ${c} turn ${t}`);
    }
  }
  const ratio = (u) => {
    const all = u.flat().slice(2);  // after the warm-up turn of each conversation
    return all.reduce((a, x) => a + x.prompt_tokens_details.cached_tokens, 0) / all.reduce((a, x) => a + x.prompt_tokens, 0);
  };
  console.log(`# cached-token ratio after warm-up: --parallel 2 ${ratio(two).toFixed(3)}, --parallel 1 ${ratio(one).toFixed(3)}`);
  assert.ok(ratio(two) > ratio(one));
});

test("a disconnect mid-stream frees its slot; the other streams finish unchanged", async () => {
  // Streams 0 and 2 are the model's own greedy answers (with logprobs), decoded in one batch
  // with stream 1, which the client drops after 5 chunks; truth: each of them run alone.
  const bodies = [0, 1, 2].map((i) => ({
    model: "deepseek-chat", messages: [{ role: "user", content: `Stream ${i}: describe the weather.` }],
    temperature: 0, max_tokens: 24, logprobs: true,
  }));
  const single = await start(["--parallel", "1"]);
  const alone = {};
  for (const i of [0, 2]) alone[i] = await streamOne(clientOf(single), bodies[i], 0);
  assert.ok(alone[0].completion_tokens > 5 && alone[2].completion_tokens > 5, "long enough to overlap the cut");

  const server = await start(["--parallel", "3"]);
  const client = clientOf(server);
  const controller = new AbortController();
  const cut = async () => {
    const stream = await client.chat.completions.create(
      { ...bodies[1], max_tokens: 200, stream: true, ds4_test_delay_ms: 30 }, { signal: controller.signal });
    let chunks = 0;
    try {
      for await (const chunk of stream) if (chunk.choices[0] && ++chunks === 5) controller.abort();
    } catch (e) {
      if (!controller.signal.aborted) throw e;
    }
    return controller.signal.aborted;
  };
  const cancelledBefore = await metric(server.base, "ds4_cancelled_total");
  const [r0, aborted, r2] = await Promise.all([streamOne(client, bodies[0], 30), cut(), streamOne(client, bodies[2], 30)]);
  assert.equal(aborted, true);
  assert.deepEqual(r0, alone[0]);
  assert.deepEqual(r2, alone[2]);
  // The streams were decoded together (several rows per step), and the cut one's slot freed.
  const steps = await metric(server.base, "ds4_decode_steps_total");
  const rows = await metric(server.base, "ds4_decode_step_rows_total");
  assert.ok(rows > 1.5 * steps, `rows ${rows} steps ${steps}`);
  assert.ok(await waitFor(async () => (await slots(server)).every((s) => s.state === "idle")));
  assert.equal(await metric(server.base, "ds4_cancelled_total"), cancelledBefore + 1);
  const s = await slots(server);
  assert.equal(s.reduce((a, x) => a + x.cancelled, 0), 1);
  // The freed slot serves again.
  assert.deepEqual(await streamOne(client, bodies[0], 0), alone[0]);
});

test("a full queue answers 429 with Retry-After and the server stays healthy", async () => {
  const server = await start(["--parallel", "1", "--max-queue", "1"]);
  const client = clientOf(server);
  const slow = client.chat.completions.create({
    model: "deepseek-chat", messages: [{ role: "user", content: "slow" }], stream: true,
    ds4_test_output: "slow ".repeat(20).trim(), ds4_test_delay_ms: 50,
  });
  const slowText = (async () => {
    let t = "";
    for await (const chunk of await slow) t += chunk.choices[0]?.delta?.content ?? "";
    return t;
  })();
  assert.ok(await waitFor(async () => (await slots(server))[0].state !== "idle"));
  const queued = client.chat.completions.create({
    model: "deepseek-chat", messages: [{ role: "user", content: "queued" }], ds4_test_output: "queued ok",
  });
  assert.ok(await waitFor(async () => (await metric(server.base, "ds4_queue_depth")) === 2));
  const res = await fetch(server.baseURL + "/chat/completions", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "deepseek-chat", messages: [{ role: "user", content: "one too many" }] }),
  });
  assert.equal(res.status, 429);
  assert.ok(Number(res.headers.get("retry-after")) >= 1);
  assert.equal((await res.json()).error.code, "server_busy");
  assert.equal((await fetch(server.base + "/health")).status, 200);
  assert.equal((await queued).choices[0].message.content, "queued ok");
  assert.equal(await slowText, "slow ".repeat(20).trim());
  assert.equal(await metric(server.base, "ds4_queue_rejected_total"), 1);
  assert.equal(await metric(server.base, "ds4_queue_depth"), 0);
});
