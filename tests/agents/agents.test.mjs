// The agent suite: the real coding agents from npm (pinned in tests/agents/package.json)
// run whole tool loops against a live ds4-server on the tiny synthetic model. Each agent
// gets a private HOME and working directory; run.sh keeps the network to loopback. A
// scripted proxy (scripted_proxy.mjs) answers through the --test-hooks field
// "ds4_test_output": first a call of the agent's own shell tool that creates a marker file,
// then, once the tool result is back, a final text the agent must print. Turn two must reuse
// the whole of turn one from the live KV (cached tokens reported). A malformed call (one
// complete invoke, then an invalid tag) must run nothing.
//
// Env: DS4_SERVER_BIN, DS4_TEST_MODEL (a long-context tiny GGUF), DS4_AGENTS_TMP (scratch),
// DS4_SERVER_LOG (optional), DS4_AGENTS_FIXTURES=DIR (optional: write each agent's first
// request there as a fixture), DS4_AGENTS_ONLY=name,name (optional subset).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startServer, dsmlCall } from "../server/harness.mjs";
import { startProxy, reportedUsage } from "./scripted_proxy.mjs";
import { writeFixture } from "./fixture.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.join(HERE, "node_modules", ".bin");
const TMP = process.env.DS4_AGENTS_TMP ?? path.join(HERE, "..", "..", "build", "test-tmp", "agents");
const MODEL = "deepseek-v4-flash";
const PROMPT = "Create the marker file with your shell tool, then tell me you are done.";
const MARKER = "ds4_marker.txt";
const FINAL = "ds4 agent suite: the marker file is there.";
// One complete invoke followed by a tag that is not an invoke: the block is rejected whole.
const malformed = (name, args) =>
  dsmlCall(name, args).replace("\n</｜DSML｜tool_calls>", "\n<｜DSML｜oops>\n</｜DSML｜tool_calls>");

// Which requests of a protocol carry tools / a tool result.
const protocol = {
  messages: {
    tools: (b) => (b.tools ?? []).length > 0,
    result: (b) => b.messages.some((m) => Array.isArray(m.content) && m.content.some((c) => c.type === "tool_result")),
  },
  chat: {
    tools: (b) => (b.tools ?? []).length > 0,
    result: (b) => b.messages.some((m) => m.role === "tool"),
  },
  responses: {
    tools: (b) => (b.tools ?? []).length > 0,
    result: (b) => Array.isArray(b.input) && b.input.some((i) => /_call_output$/.test(i.type ?? "")),
  },
};

const agents = {
  "claude-code": {
    package: "@anthropic-ai/claude-code",
    fixture: "claude_code_messages.json",
    protocol: "messages",
    tool: "Bash",
    args: (cmd) => ({ command: cmd, description: "Create the marker file" }),
    run: (home, base) => ({
      cmd: path.join(BIN, "claude"),
      args: ["-p", PROMPT, "--model", MODEL, "--allowedTools", "Bash"],
      env: {
        ANTHROPIC_BASE_URL: base,
        ANTHROPIC_API_KEY: "ds4-test",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
        DISABLE_AUTOUPDATER: "1",
        DISABLE_TELEMETRY: "1",
        DISABLE_ERROR_REPORTING: "1",
      },
    }),
  },
  codex: {
    package: "@openai/codex",
    fixture: "codex_responses.json",
    protocol: "responses",
    tool: "exec_command",
    args: (cmd) => ({ cmd }),
    run(home, base) {
      mkdirSync(path.join(home, ".codex"), { recursive: true });
      writeFileSync(
        path.join(home, ".codex", "config.toml"),
        [
          `model = "${MODEL}"`,
          `model_provider = "ds4"`,
          `[model_providers.ds4]`,
          `name = "ds4"`,
          `base_url = "${base}/v1"`,
          `wire_api = "responses"`,
          `env_key = "DS4_API_KEY"`,
          `request_max_retries = 0`,
          `stream_max_retries = 0`,
          "",
        ].join("\n"),
      );
      return {
        cmd: path.join(BIN, "codex"),
        args: ["exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", PROMPT],
        env: { DS4_API_KEY: "ds4-test" },
      };
    },
  },
  opencode: {
    package: "opencode-ai",
    fixture: "opencode_chat.json",
    protocol: "chat",
    tool: "bash",
    args: (cmd) => ({ command: cmd }),
    run: (home, base) => ({
      cmd: path.join(BIN, "opencode"),
      args: ["run", PROMPT],
      env: {
        OPENCODE_CONFIG_CONTENT: JSON.stringify({
          provider: {
            ds4: {
              npm: "@ai-sdk/openai-compatible",
              name: "ds4",
              options: { baseURL: `${base}/v1`, apiKey: "ds4-test" },
              models: { [MODEL]: { name: "DeepSeek V4 Flash", tool_call: true, reasoning: true, limit: { context: 32768, output: 4096 } } },
            },
          },
          model: `ds4/${MODEL}`,
          permission: { bash: "allow", edit: "allow" },
          autoupdate: false,
          share: "disabled",
        }),
        OPENCODE_DISABLE_MODELS_FETCH: "1",
        OPENCODE_DISABLE_AUTOUPDATE: "1",
        OPENCODE_DISABLE_LSP_DOWNLOAD: "1",
        OPENCODE_DISABLE_SHARE: "1",
      },
    }),
  },
  pi: {
    package: "@mariozechner/pi-coding-agent",
    fixture: "pi_chat.json",
    protocol: "chat",
    tool: "bash",
    args: (cmd) => ({ command: cmd }),
    run(home, base) {
      // Pi's own DeepSeek provider, pointed at the server: its DeepSeek request shape.
      mkdirSync(path.join(home, ".pi", "agent"), { recursive: true });
      writeFileSync(path.join(home, ".pi", "agent", "models.json"), JSON.stringify({ providers: { deepseek: { baseUrl: `${base}/v1` } } }));
      return {
        cmd: path.join(BIN, "pi"),
        args: ["--provider", "deepseek", "--model", MODEL, "--offline", "--no-session", "-p", PROMPT],
        env: { DEEPSEEK_API_KEY: "ds4-test", PI_OFFLINE: "1" },
      };
    },
  },
};

const only = process.env.DS4_AGENTS_ONLY?.split(",");
let server;
const summary = {};

before(async () => {
  // The disk KV cache keeps each agent's long system prompt: a later run of the same agent
  // (and opencode's main request after its title request) loads it instead of a cold prefill.
  const kvDir = path.join(TMP, "kv");
  rmSync(kvDir, { recursive: true, force: true });
  // On a fresh build nothing has made the test folder yet; the server makes only the last level.
  mkdirSync(kvDir, { recursive: true });
  server = await startServer(["--kv-disk-dir", kvDir], { ctx: 32768, threads: 2 });
});
after(async () => {
  if (server) await server.stop();
  if (Object.keys(summary).length) {
    console.log("agent suite summary: " + JSON.stringify(summary));
    writeFileSync(path.join(TMP, "summary.json"), JSON.stringify(summary, null, 2));
  }
});

// Runs one agent in a fresh HOME and working directory; resolves with its exit and output.
// Both scenarios use the same paths: they appear in the agents' prompts, and equal prompts
// let the second run start from the first one's disk checkpoint.
function runAgent(name, spec, base) {
  const root = path.join(TMP, name);
  rmSync(root, { recursive: true, force: true });
  const home = path.join(root, "home");
  const work = path.join(root, "work");
  mkdirSync(home, { recursive: true });
  mkdirSync(work, { recursive: true });
  // The scratch dir lies inside this repository's checkout, which the agents would describe
  // in their prompts (Claude Code reads it whatever GIT_CEILING_DIRECTORIES says): each works
  // in an empty repository of its own instead.
  execFileSync("git", ["init", "-q", work]);
  const { cmd, args, env } = spec.run(home, base);
  const childEnv = {
    PATH: process.env.PATH,
    HOME: home,
    USER: "ds4",
    LANG: "C.UTF-8",
    TERM: "dumb",
    NO_COLOR: "1",
    CI: "1",
    XDG_CONFIG_HOME: path.join(home, ".config"),
    XDG_DATA_HOME: path.join(home, ".local", "share"),
    XDG_CACHE_HOME: path.join(home, ".cache"),
    XDG_STATE_HOME: path.join(home, ".local", "state"),
    TMPDIR: path.join(root, "tmp"),
    // Whatever escapes the network namespace (or runs without one) goes nowhere.
    HTTP_PROXY: "http://127.0.0.1:9",
    HTTPS_PROXY: "http://127.0.0.1:9",
    NO_PROXY: "127.0.0.1,localhost",
    ...env,
  };
  mkdirSync(childEnv.TMPDIR, { recursive: true });
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: work, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 600000);  // a cold 12k-token prefill on a busy machine
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, root, work, marker: existsSync(path.join(work, MARKER)) });
    });
  });
}

// Keeps what was sent and answered, for reading a failure.
function saveExchanges(name, scenario, records) {
  writeFileSync(path.join(TMP, `${name}-${scenario}-exchanges.json`), JSON.stringify(records, null, 1));
}

function describeRun(run, records) {
  const exchanges = records.map((r) => `${r.method} ${r.path} -> ${r.status} ${r.status >= 400 ? r.response.slice(0, 400) : ""}`);
  return `exit ${run.code} ${run.signal ?? ""}\n--- exchanges\n${exchanges.join("\n")}\n--- stdout\n${run.stdout.slice(-3000)}\n--- stderr\n${run.stderr.slice(-3000)}`;
}

for (const [name, spec] of Object.entries(agents)) {
  const skip = only && !only.includes(name) ? "not in DS4_AGENTS_ONLY" : false;
  const proto = protocol[spec.protocol];

  test(`${name}: tool loop through its shell tool, turn two reuses turn one`, { skip }, async () => {
    const script = (rec) => {
      if (!proto.tools(rec.body)) return "A title.";  // side requests (opencode's title)
      if (proto.result(rec.body)) return "The marker exists.</think>" + FINAL;
      return "Use the shell.</think>" + dsmlCall(spec.tool, spec.args(`touch ${MARKER}`));
    };
    const proxy = await startProxy(server.base, script);
    let run;
    try {
      run = await runAgent(name, spec, proxy.base);
    } finally {
      await proxy.stop();
      saveExchanges(name, "loop", proxy.records);
    }
    const gen = proxy.records.filter((r) => r.output !== undefined);
    const info = describeRun(run, proxy.records);
    assert.equal(run.code, 0, info);
    assert.ok(run.marker, `the shell tool ran: ${MARKER} exists\n${info}`);
    assert.ok(run.stdout.includes(FINAL), `the scripted final answer is printed\n${info}`);
    for (const r of gen) assert.equal(r.status, 200, info);

    const first = gen.find((r) => proto.tools(r.body) && !proto.result(r.body));
    const second = gen.find((r) => proto.tools(r.body) && proto.result(r.body));
    assert.ok(first && second, info);
    const u1 = reportedUsage(first);
    const u2 = reportedUsage(second);
    const version = JSON.parse(readFileSync(path.join(HERE, "node_modules", spec.package, "package.json"), "utf8")).version;
    summary[name] = {
      version,
      endpoint: first.path,
      first_prompt_tokens: u1.prompt,
      second_prompt_tokens: u2.prompt,
      second_cached_tokens: u2.cached,
      requests: proxy.records.map((r) => `${r.method} ${r.path}`),
    };
    if (process.env.DS4_AGENTS_FIXTURES) writeFixture(path.join(process.env.DS4_AGENTS_FIXTURES, spec.fixture), `${spec.package}@${version}`, first, run.root);
    // Everything turn one left in the live state (its prompt and every generated token) is
    // reused by turn two.
    assert.equal(u2.cached, u1.prompt + u1.completion, `turn two cached ${JSON.stringify(u2)} after ${JSON.stringify(u1)}`);
  });

  if (name === "claude-code") {
    test("claude-code: ToolSearch loads a deferred tool in place, the prefix survives", { skip }, async () => {
      // Claude Code sends most tools deferred (defer_loading) and loads them through its
      // ToolSearch tool, whose result holds tool_reference blocks; the next request lists
      // the loaded tool (still deferred). Then the loop goes on as usual.
      const script = (rec) => {
        if (!proto.tools(rec.body)) return "A title.";
        const results = rec.body.messages.flatMap((m) => (Array.isArray(m.content) ? m.content : [])).filter((c) => c.type === "tool_result");
        if (results.length === 0) return "Load WebFetch first.</think>" + dsmlCall("ToolSearch", { query: "select:WebFetch", max_results: 1 });
        if (results.length === 1) return "Now the shell.</think>" + dsmlCall(spec.tool, spec.args(`touch ${MARKER}`));
        return "The marker exists.</think>" + FINAL;
      };
      const proxy = await startProxy(server.base, script);
      let run;
      try {
        run = await runAgent(name, spec, proxy.base);
      } finally {
        await proxy.stop();
        saveExchanges(name, "toolsearch", proxy.records);
      }
      const info = describeRun(run, proxy.records);
      const gen = proxy.records.filter((r) => r.output !== undefined);
      for (const r of gen) assert.equal(r.status, 200, info);
      assert.equal(run.code, 0, info);
      assert.ok(run.marker && run.stdout.includes(FINAL), info);
      const loaded = gen.find((r) => JSON.stringify(r.body.messages).includes('"tool_reference"'));
      assert.ok(loaded, `a tool_reference came back\n${info}`);
      assert.ok(loaded.body.tools.some((t) => t.name === "WebFetch" && t.defer_loading), info);
      const before = reportedUsage(gen[gen.indexOf(loaded) - 1]);
      assert.equal(reportedUsage(loaded).cached, before.prompt + before.completion, info);
    });
  }

  test(`${name}: a malformed tool call runs nothing`, { skip }, async () => {
    const script = (rec) => {
      if (!proto.tools(rec.body)) return "A title.";
      if (proto.result(rec.body)) return "The marker exists.</think>" + FINAL;
      return "Use the shell.</think>" + malformed(spec.tool, spec.args(`touch ${MARKER}`));
    };
    const proxy = await startProxy(server.base, script);
    let run;
    try {
      run = await runAgent(name, spec, proxy.base);
    } finally {
      await proxy.stop();
      saveExchanges(name, "malformed", proxy.records);
    }
    const info = describeRun(run, proxy.records);
    assert.ok(!run.marker, `no command ran\n${info}`);
    assert.ok(!proxy.records.some((r) => r.body && r.output !== undefined && proto.result(r.body)), `no tool result was sent back\n${info}`);
    assert.ok(!run.stdout.includes(FINAL), info);
  });
}
