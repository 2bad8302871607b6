// Hostile and odd clients: malformed bodies, ambiguous framing, pipelining, half-closed
// sockets, huge prompts, slow or idle connections by the hundred, and SIGTERM under load.
// Raw sockets (node:net) where an HTTP library would hide what is tested.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { startServer, postJson, metric, parseSse } from "./harness.mjs";

let server;
let port;

before(async () => {
  // Short connection timeouts so the slow-client test sees them act within seconds.
  server = await startServer(["--quiet", "--header-timeout", "2", "--keep-alive-timeout", "2",
                              "--max-client-connections", "64"]);
  port = Number(new URL(server.base).port);
});
after(async () => {
  if (server) await server.stop();
});

// Sends `data` on a fresh connection and collects everything the server sends until it
// closes the connection (or `ms` pass). `end` half-closes the socket after sending.
function raw(data, { end = false, ms = 15000, localAddress, port: p = port } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port: p, localAddress });
    const chunks = [];
    let settled = false;
    const finish = (how) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ text: Buffer.concat(chunks).toString("latin1"), how });
    };
    const timer = setTimeout(() => finish("timeout"), ms);
    sock.on("connect", () => {
      sock.write(data);
      if (end) sock.end();
    });
    sock.on("data", (d) => chunks.push(d));
    sock.on("end", () => finish("closed"));
    sock.on("error", () => finish("error"));
    sock.on("close", () => finish("closed"));
  });
}

function post(path, body, extraHeaders = "") {
  const b = Buffer.from(body, "latin1");
  return `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
         `Content-Length: ${b.length}\r\n${extraHeaders}\r\n` + body;
}

// The body of a chunked response in a raw byte stream.
function dechunk(text) {
  let rest = text.slice(text.indexOf("\r\n\r\n", text.lastIndexOf("HTTP/1.1 2")) + 4);
  let out = "";
  while (rest.length) {
    const eol = rest.indexOf("\r\n");
    const n = parseInt(rest.slice(0, eol), 16);
    if (!(n > 0)) break;
    out += rest.slice(eol + 2, eol + 2 + n);
    rest = rest.slice(eol + 4 + n);
  }
  return out;
}

// Status lines of the (final) responses in a raw byte stream, interim 1xx ones skipped.
function statuses(text) {
  return [...text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => Number(m[1])).filter((s) => s >= 200);
}

test("every malformed body is a 400 naming the problem", async () => {
  const cases = [
    ["/tokenize", '{"content":"x","n":1e400}', /number overflow/],
    ["/detokenize", '{"tokens":[1],"x":-1e999}', /number overflow/],
    ["/apply-template", '{"messages":[{"role":"user","content":"hi"}],"t":1e400}', /number overflow/],
    ["/v1/chat/completions", '{"messages":[{"role":"user","content":"hi"}],"temperature":1e400}',
     /number overflow/],
    ["/v1/messages/count_tokens", '{"messages":[{"role":"user","content":"x"}],"a":1e309}',
     /number overflow/],
    ["/tokenize", '{"content":"x"} trailing', /parse error/],
    ["/tokenize", '{"content":"x"}\u0000{"content":"hidden"}', /NUL byte at offset 15/],
    ["/v1/chat/completions", '{"messages":[{"role":"user","content":"hi"}]}\u0000', /NUL byte/],
  ];
  for (const [path, body, why] of cases) {
    const r = await postJson(server.base, path, body);
    assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}: ${r.text}`);
    const err = r.json.error;
    assert.match(typeof err === "string" ? err : err.message, why);
  }
});

test("integers out of range are a 400 naming the field", async () => {
  const chat = (extra) => `{"model":"deepseek-chat","messages":[{"role":"user","content":"hi"}],${extra}}`;
  const cases = [
    ["/v1/chat/completions", chat('"max_tokens":18446744073709551615'), "max_tokens"],
    ["/v1/chat/completions", chat('"max_completion_tokens":9223372036854775808'), "max_completion_tokens"],
    ["/v1/chat/completions", chat('"max_tokens":1e300'), "max_tokens"],
    ["/v1/chat/completions", chat('"seed":18446744073709551615'), "seed"],
    ["/v1/completions", '{"prompt":"hi","max_tokens":18446744073709551615}', "max_tokens"],
    ["/v1/messages", chat('"max_tokens":18446744073709551615'), null],
    ["/v1/responses", '{"input":"hi","max_output_tokens":18446744073709551615}', "max_output_tokens"],
    ["/detokenize", '{"tokens":[18446744073709551615]}', "tokens"],
  ];
  for (const [path, body, field] of cases) {
    const r = await postJson(server.base, path, body);
    assert.equal(r.status, 400, `${path} ${body}: ${r.text}`);
    if (field) assert.equal(r.json.error.param, field, r.text);
    const msg = r.json.error.message;
    assert.match(msg, /out of range/, msg);
  }
  // In range, the request still works (max_tokens is clamped to the room in the context).
  const ok = await postJson(server.base, "/v1/chat/completions",
                            chat('"max_tokens":9223372036854775807,"ds4_test_output":"ok"'));
  assert.equal(ok.status, 200, ok.text);
  assert.equal(ok.json.choices[0].message.content, "ok");
});

test("ambiguous body framing is a 400 and ends the connection", async () => {
  const body = '{"content":"x"}';
  const dup = `POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n` +
              `Content-Length: 3\r\n\r\n${body}GET /health HTTP/1.1\r\nHost: x\r\n\r\n`;
  let r = await raw(dup);
  assert.equal(r.how, "closed");
  assert.deepEqual(statuses(r.text), [400], r.text);  // the smuggled GET is never answered
  assert.match(r.text, /more than one Content-Length/);
  assert.match(r.text, /Connection: close/i);
  const both = `POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n` +
               `Transfer-Encoding: chunked\r\n\r\n${body}`;
  r = await raw(both);
  assert.deepEqual(statuses(r.text), [400], r.text);
  assert.match(r.text, /both Content-Length and Transfer-Encoding/);
  r = await raw(`POST /tokenize HTTP/1.1\r\nHost: x\r\nContent-Length: 1x5\r\n\r\n${body}`);
  assert.deepEqual(statuses(r.text), [400], r.text);
});

test("pipelined requests are answered in order", async () => {
  const words = Array.from({ length: 30 }, (_, i) => `word${i}`);
  const one = await postJson(server.base, "/tokenize", { content: words[7] });
  let data = "";
  for (const w of words) data += post("/tokenize", JSON.stringify({ content: w }));
  data += "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  const r = await raw(data);
  assert.equal(r.how, "closed");
  assert.deepEqual(statuses(r.text), [...words.map(() => 200), 200]);
  const bodies = [...r.text.matchAll(/\{"tokens":\[[^\]]*\]\}/g)].map((m) => JSON.parse(m[0]));
  assert.equal(bodies.length, words.length);
  assert.deepEqual(bodies[7].tokens, one.json.tokens);
  // Different words, different answers, in the order asked.
  const distinct = new Set(bodies.map((b) => JSON.stringify(b.tokens)));
  assert.equal(distinct.size, words.length);
});

test("a client that half-closes after its request gets the answer", async () => {
  const body = JSON.stringify({ model: "deepseek-chat", messages: [{ role: "user", content: "hi" }],
                                ds4_test_output: "half closed but here", ds4_test_delay_ms: 100 });
  const r = await raw(post("/v1/chat/completions", body, "Connection: close\r\n"), { end: true });
  assert.deepEqual(statuses(r.text), [200], r.text);
  assert.match(r.text, /half closed but here/);
  // Streaming too.
  const s = JSON.stringify({ model: "deepseek-chat", messages: [{ role: "user", content: "hi" }],
                             stream: true, ds4_test_output: "streamed anyway", ds4_test_delay_ms: 100 });
  const rs = await raw(post("/v1/chat/completions", s), { end: true });
  assert.deepEqual(statuses(rs.text), [200], rs.text);
  const events = parseSse(Buffer.from(dechunk(rs.text), "latin1").toString("utf8"));
  assert.equal(events.at(-1).data, "[DONE]");
  const content = events.map((e) => e.data?.choices?.[0]?.delta?.content ?? "").join("");
  assert.equal(content, "streamed anyway");
});

test("a prompt far beyond the context is refused before it is tokenized", async () => {
  // 4 MiB of text for a 4096-token context: more than 4096 x the longest token (128 bytes).
  const big = "lorem ipsum ".repeat(350000);
  const chat = await postJson(server.base, "/v1/chat/completions",
                              { messages: [{ role: "user", content: big }] });
  assert.equal(chat.status, 400);
  assert.equal(chat.json.error.code, "context_length_exceeded");
  assert.match(chat.json.error.message, /at least \d+ tokens/);
  assert.ok(chat.json.error.n_prompt_tokens > 4096);
  const comp = await postJson(server.base, "/v1/completions", { prompt: big });
  assert.equal(comp.status, 400);
  assert.match(comp.json.error.message, /at least/);
  const msgs = await postJson(server.base, "/v1/messages",
                              { max_tokens: 5, messages: [{ role: "user", content: big }] });
  assert.equal(msgs.status, 400);
  assert.match(msgs.json.error.message, /^prompt is too long: \d+ tokens > 4096 maximum/);
  // Near the limit the count is exact.
  const near = await postJson(server.base, "/v1/chat/completions",
                              { messages: [{ role: "user", content: "lorem ipsum ".repeat(3000) }] });
  assert.equal(near.status, 400);
  assert.match(near.json.error.message, /^Prompt has \d+ tokens/);
});

// Opens a connection from `localAddress` and keeps it open: "trickle" sends a request's
// bytes one at a time, "idle" sends nothing, "keepalive" completes one request and idles.
function slowClient(localAddress, mode) {
  return new Promise((resolve) => {
    const sock = net.connect({ host: "127.0.0.1", port, localAddress });
    const state = { sock, closedAt: 0, text: "", opened: Date.now() };
    let timer = null;
    sock.on("connect", () => {
      if (mode === "trickle") {
        const req = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + "y".repeat(200) + "\r\n\r\n";
        let i = 0;
        timer = setInterval(() => {
          if (i < req.length && !sock.destroyed) sock.write(req[i++]);
        }, 150);
      } else if (mode === "keepalive") {
        sock.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
      }
      resolve(state);
    });
    sock.on("data", (d) => (state.text += d.toString("latin1")));
    const done = () => {
      if (!state.closedAt) state.closedAt = Date.now();
      clearInterval(timer);
    };
    sock.on("close", done);
    sock.on("error", done);
  });
}

// /health on a fresh connection, as a new client or a monitor asks it (a pooled connection
// would already own a thread); milliseconds from connect to the whole answer.
async function timedHealth() {
  const t0 = performance.now();
  const r = await raw("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", { ms: 5000 });
  assert.deepEqual(statuses(r.text), [200], r.text);
  return performance.now() - t0;
}

test("200 slow or idle connections do not stop the server", async () => {
  // 200 connections from four addresses (50 each, under the per-address cap of 64).
  const modes = ["trickle", "idle", "keepalive", "trickle"];
  const clients = [];
  for (let a = 0; a < 4; a++) {
    for (let i = 0; i < 50; i++) clients.push(slowClient(`127.0.0.${a + 2}`, modes[a]));
  }
  const slow = await Promise.all(clients);
  let open = 0;
  for (let i = 0; i < 30 && open < 200; i++) {
    await new Promise((r) => setTimeout(r, 100));
    open = await metric(server.base, "ds4_open_connections");
  }
  assert.ok(open >= 200, `${open} connections open`);
  const waits = [];
  for (let i = 0; i < 5; i++) waits.push(await timedHealth());
  console.log(`# /health with 200 slow connections open: ${waits.map((w) => w.toFixed(1)).join(", ")} ms`);
  for (const w of waits) assert.ok(w < 1000, `/health took ${w} ms`);
  const r = await postJson(server.base, "/v1/chat/completions", {
    model: "deepseek-chat", messages: [{ role: "user", content: "still serving?" }],
    ds4_test_output: "Yes, still serving.",
  });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.choices[0].message.content, "Yes, still serving.");

  // One address over its cap: the extra connections are refused at once with a 429.
  const capped = [];
  for (let i = 0; i < 70; i++) capped.push(slowClient("127.0.0.9", "idle"));
  const held = await Promise.all(capped);
  await new Promise((r) => setTimeout(r, 500));
  const refused = held.filter((c) => c.closedAt && /HTTP\/1\.1 429/.test(c.text));
  assert.equal(refused.length, 6, `refused ${refused.length} of 70`);
  assert.match(refused[0].text, /too many connections from this address/);

  // The header timeout (2 s here) ends trickling and silent connections, the keep-alive
  // timeout idle ones; then everything is back to normal.
  const all = [...slow, ...held];
  const deadline = Date.now() + 10000;
  while (all.some((c) => !c.closedAt) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(all.filter((c) => !c.closedAt).length, 0, "slow connections still open");
  for (const c of slow.slice(0, 50)) assert.ok(c.closedAt - c.opened < 6000, "trickler closed late");
  assert.match(slow[100].text, /HTTP\/1\.1 200/);  // the keep-alive one was answered first
  await new Promise((r) => setTimeout(r, 700));  // lingering closes finish
  // This test's own pooled fetch connections may still be open.
  assert.ok((await metric(server.base, "ds4_open_connections")) <= 4);
  assert.ok((await metric(server.base, "ds4_refused_connections_total")) >= 6);
  const again = await postJson(server.base, "/v1/chat/completions", {
    model: "deepseek-chat", messages: [{ role: "user", content: "recovered?" }],
    ds4_test_output: "Recovered.",
  });
  assert.equal(again.json.choices[0].message.content, "Recovered.");
  assert.ok((await timedHealth()) < 1000);
  for (const c of all) c.sock.destroy();
});

test("SIGTERM: queued requests get 503 + Retry-After, the running stream ends cleanly", async () => {
  const s = await startServer(["--quiet"]);
  try {
    const body = (text, stream) => ({
      model: "deepseek-chat", messages: [{ role: "user", content: text }], stream,
      max_tokens: 400, ds4_test_output: " word".repeat(400), ds4_test_delay_ms: 50,
    });
    const res = await fetch(s.base + "/v1/chat/completions", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify(body("long", true)),
    });
    assert.equal(res.status, 200);
    const reader = res.body.getReader();
    let text = "";
    while (!text.includes('"content"')) text += new TextDecoder().decode((await reader.read()).value);
    const queued = [postJson(s.base, "/v1/chat/completions", body("queued 1", false)),
                    postJson(s.base, "/v1/messages", { ...body("queued 2", false), stream: false })];
    const depthDeadline = Date.now() + 5000;
    while ((await metric(s.base, "ds4_queue_depth")) < 3 && Date.now() < depthDeadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const code = s.stop();
    for (const q of await Promise.all(queued)) {
      assert.equal(q.status, 503, q.text);
      assert.ok(Number(q.headers.get("retry-after")) > 0);
    }
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const events = parseSse(text);
    assert.equal(events.at(-1).data, "[DONE]");
    const finish = events.map((e) => e.data?.choices?.[0]?.finish_reason).filter(Boolean);
    assert.deepEqual(finish, ["error"]);
    assert.equal(await code, 0);
  } finally {
    await s.stop();
  }
});
