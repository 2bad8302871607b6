// Load: 8 concurrent streaming clients x 20 requests each. Every request scripts its own
// output, so a stream carrying anything but its own text would show cross-talk.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer, metric } from "./harness.mjs";

const CLIENTS = 8;
const REQUESTS = 20;
let server;

before(async () => {
  server = await startServer(["--quiet"]);
});
after(async () => {
  if (server) await server.stop();
});

test(`${CLIENTS} concurrent streaming clients x ${REQUESTS} requests`, async () => {
  const before = await metric(server.base, "ds4_generation_requests_total");
  const runClient = async (c) => {
    const client = new OpenAI({ baseURL: server.baseURL, apiKey: "unused", maxRetries: 0, timeout: 120000 });
    for (let r = 0; r < REQUESTS; r++) {
      const expected = `c${c} r${r} ok`;
      const stream = await client.chat.completions.create({
        model: "deepseek-chat",
        messages: [{ role: "user", content: `client ${c} request ${r}` }],
        stream: true,
        stream_options: { include_usage: true },
        max_tokens: 16,
        ds4_test_output: expected,
      });
      let text = "";
      let finish = null;
      let usage = null;
      let id = null;
      for await (const chunk of stream) {
        id ??= chunk.id;
        assert.equal(chunk.id, id, "one id per stream");
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices[0];
        if (!choice) continue;
        if (choice.delta.content) text += choice.delta.content;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      assert.equal(text, expected);
      assert.equal(finish, "stop");
      assert.ok(usage && usage.completion_tokens > 0);
    }
  };
  const t0 = Date.now();
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => runClient(c)));
  const seconds = (Date.now() - t0) / 1000;
  console.log(`# ${CLIENTS * REQUESTS} streamed requests in ${seconds.toFixed(1)} s`);
  assert.equal(await metric(server.base, "ds4_generation_requests_total"), before + CLIENTS * REQUESTS);
  assert.equal(await metric(server.base, "ds4_queue_depth"), 0);
});
