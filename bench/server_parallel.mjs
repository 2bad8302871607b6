// Server benchmark: N streams one after another vs the same N streams at once, on one
// ds4-server with --parallel N, interleaved A/B over several rounds (same process, same
// machine state). Each stream decodes a fixed number of tokens (the test hook scripts the
// tokens; the model still evaluates every one), so both arms do the same work.
//
//   node bench/server_parallel.mjs --bin build/bin/ds4-server --model M.gguf \
//        [--parallel 4] [--tokens 32] [--rounds 3] [--threads 2] [--ctx 4096]
//
// Prints per round the wall seconds of both arms and the ratio together / one-by-one
// (lower is better; 1.0 = no gain), the same from the server process's CPU time (what the
// work costs on a shared machine) and the load average, then the medians and aggregate
// decode tokens/s.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import os from "node:os";
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
// The server's user + system CPU seconds (/proc/PID/stat fields 14 and 15, in clock ticks
// of 1/100 s on Linux).
function serverCpu() {
  const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}
// {wall, cpu} seconds of fn.
async function timed(fn) {
  const c0 = serverCpu();
  const t0 = process.hrtime.bigint();
  await fn();
  return { wall: Number(process.hrtime.bigint() - t0) / 1e9, cpu: serverCpu() - c0 };
}

await stream(-1);  // warm-up: weights paged in, scratch grown
const ratios = [], cpuRatios = [];
let seqTotal = 0, parTotal = 0;
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
for (let r = 0; r < ROUNDS; r++) {
  const seq = await timed(async () => { for (let k = 0; k < N; k++) await stream(k); });
  const par = await timed(() => Promise.all(Array.from({ length: N }, (_, k) => stream(k))));
  seqTotal += seq.wall;
  parTotal += par.wall;
  ratios.push(par.wall / seq.wall);
  cpuRatios.push(par.cpu / seq.cpu);
  console.log(`round ${r}: one-by-one ${seq.wall.toFixed(2)} s (CPU ${seq.cpu.toFixed(2)} s), together ` +
              `${par.wall.toFixed(2)} s (CPU ${par.cpu.toFixed(2)} s), ratio ${(par.wall / seq.wall).toFixed(3)} ` +
              `(CPU time ${(par.cpu / seq.cpu).toFixed(3)}), load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}`);
}
const tok = N * (TOKENS + 1) * ROUNDS;
console.log(`median ratio together / one-by-one: ${median(ratios).toFixed(3)} wall, ${median(cpuRatios).toFixed(3)} ` +
            `CPU time (N=${N}, ${TOKENS + 1} tokens per stream, ${ROUNDS} rounds); aggregate decode ` +
            `${(tok / seqTotal).toFixed(2)} t/s one-by-one vs ${(tok / parTotal).toFixed(2)} t/s together (incl. prefill)`);
child.kill("SIGTERM");
