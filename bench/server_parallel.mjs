// Server benchmark: N streams one after another vs the same N streams at once, on one
// ds4-server with --parallel N, interleaved A/B over several rounds (same process, same
// machine state). Each stream decodes a fixed number of tokens (the test hook scripts the
// tokens; the model still evaluates every one), so both arms do the same work.
//
//   node bench/server_parallel.mjs --bin build/bin/ds4-server --model M.gguf \
//        [--parallel 4] [--tokens 32] [--rounds 3] [--threads 2] [--ctx 4096]
//
// Prints per round the wall seconds of both arms and the ratio together / one-by-one
// (lower is better; 1.0 = no gain), then the median ratio and aggregate decode tokens/s.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../tests/package.json"));
const OpenAI = require("openai").default ?? require("openai");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const bin = args.bin ?? "build/bin/ds4-server";
const model = args.model;
const N = Number(args.parallel ?? 4);
const TOKENS = Number(args.tokens ?? 32);
const ROUNDS = Number(args.rounds ?? 3);
if (!model) {
  console.error("usage: node bench/server_parallel.mjs --model M.gguf [--bin B] [--parallel N] [--tokens T] [--rounds R]");
  process.exit(2);
}

const child = spawn(bin, ["-m", model, "--port", "0", "--ctx", String(args.ctx ?? 4096), "--threads",
                          String(args.threads ?? 0), "--parallel", String(N), "--test-hooks", "--quiet"],
                    { stdio: ["ignore", "ignore", "pipe"] });
let log = "";
const port = await new Promise((resolve, reject) => {
  child.stderr.on("data", (d) => {
    log += d.toString();
    const m = log.match(/listening on http:\/\/[^:]+:(\d+)/);
    if (m) resolve(Number(m[1]));
  });
  child.on("exit", (code) => reject(new Error(`server exited ${code}:\n${log}`)));
});
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "x", maxRetries: 0, timeout: 3600000 });

// One token per word (" w" pieces of the real vocabulary); the answer is TOKENS tokens + EOS.
const answer = Array.from({ length: TOKENS }, (_, i) => (i ? " w" : "w")).join("");
let serial = 0;
async function stream(k) {
  const s = await client.chat.completions.create({
    model: "deepseek-chat", stream: true, max_tokens: TOKENS + 1, ds4_test_output: answer,
    messages: [{ role: "user", content: `Stream ${k} of request ${serial++}.` }],
  });
  let n = 0;
  for await (const c of s) if (c.choices[0]?.delta?.content) n++;
  return n;
}
async function timed(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

await stream(-1);  // warm-up: weights paged in, scratch grown
const ratios = [];
let seqTotal = 0, parTotal = 0;
for (let r = 0; r < ROUNDS; r++) {
  const seq = await timed(async () => { for (let k = 0; k < N; k++) await stream(k); });
  const par = await timed(() => Promise.all(Array.from({ length: N }, (_, k) => stream(k))));
  seqTotal += seq;
  parTotal += par;
  ratios.push(par / seq);
  console.log(`round ${r}: one-by-one ${seq.toFixed(2)} s, together ${par.toFixed(2)} s, ratio ${(par / seq).toFixed(3)}`);
}
ratios.sort((a, b) => a - b);
const tok = N * (TOKENS + 1) * ROUNDS;
console.log(`median ratio together / one-by-one: ${ratios[Math.floor(ratios.length / 2)].toFixed(3)} ` +
            `(N=${N}, ${TOKENS + 1} tokens per stream, ${ROUNDS} rounds); aggregate decode ` +
            `${(tok / seqTotal).toFixed(2)} t/s one-by-one vs ${(tok / parTotal).toFixed(2)} t/s together (incl. prefill)`);
child.kill("SIGTERM");
