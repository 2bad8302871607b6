// A loopback proxy between a coding agent and ds4-server: it forwards every request as is,
// except that generation requests get the --test-hooks field "ds4_test_output" (the answer
// the tiny model is made to give), chosen by a script from the request body. It records
// each exchange (path, body, status, response text) so tests can read what the agent sent
// and what usage the server reported.
import http from "node:http";

const GENERATION = /^\/(v1\/)?(messages|chat\/completions|responses)(\?|$)/;

export async function startProxy(upstream, script) {
  const target = new URL(upstream);
  const records = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (d) => chunks.push(d));
    req.on("end", () => {
      let body = Buffer.concat(chunks);
      const record = { method: req.method, path: req.url, headers: req.headers, body: null, status: 0, response: "" };
      if (req.method === "POST" && GENERATION.test(req.url) && !req.url.includes("count_tokens")) {
        record.body = JSON.parse(body.toString("utf8"));
        const output = script(record);
        const sent = output === undefined ? record.body : { ...record.body, ds4_test_output: output };
        record.output = output;
        body = Buffer.from(JSON.stringify(sent));
      } else if (body.length) {
        try {
          record.body = JSON.parse(body.toString("utf8"));
        } catch {
          record.body = body.toString("utf8");
        }
      }
      records.push(record);
      const headers = { ...req.headers, host: target.host, "content-length": String(body.length) };
      delete headers["accept-encoding"];  // keep the recorded response readable
      const up = http.request(
        { host: target.hostname, port: target.port, path: req.url, method: req.method, headers },
        (upRes) => {
          record.status = upRes.statusCode;
          res.writeHead(upRes.statusCode, upRes.headers);
          upRes.on("data", (d) => {
            record.response += d.toString("utf8");
            res.write(d);
          });
          upRes.on("end", () => res.end());
        },
      );
      up.on("error", (e) => {
        record.status = 502;
        res.writeHead(502, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: `proxy: ${e.message}` } }));
      });
      up.end(body);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  return {
    base: `http://127.0.0.1:${port}`,
    records,
    stop: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(resolve);
    }),
  };
}

// Usage the server reported in one recorded answer (any protocol, streamed or not):
// {prompt, cached, completion}.
export function reportedUsage(record) {
  const frames = record.response.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
  const payloads = frames.length ? frames : [record.response];
  const usage = { prompt: null, cached: null, completion: null };
  for (const text of payloads) {
    let p;
    try {
      p = JSON.parse(text);
    } catch {
      continue;
    }
    // Anthropic: message_start (prompt) then message_delta (output); or a whole message.
    const a = p.type === "message_start" ? p.message.usage : p.type === "message" ? p.usage : p.type === "message_delta" ? p.usage : null;
    if (a) {
      if (a.cache_read_input_tokens !== undefined) {
        usage.cached = a.cache_read_input_tokens;
        usage.prompt = a.input_tokens + a.cache_read_input_tokens + a.cache_creation_input_tokens;
      }
      if (p.type !== "message_start") usage.completion = a.output_tokens;
    }
    // Responses: the final response object.
    const r = p.response?.usage ?? (p.object === "response" ? p.usage : null);
    if (r) {
      usage.prompt = r.input_tokens;
      usage.cached = r.input_tokens_details.cached_tokens;
      usage.completion = r.output_tokens;
    }
    // Chat completions: the usage chunk or the whole answer.
    if (p.usage?.prompt_tokens !== undefined) {
      usage.prompt = p.usage.prompt_tokens;
      usage.cached = p.usage.prompt_tokens_details.cached_tokens;
      usage.completion = p.usage.completion_tokens;
    }
  }
  return usage;
}
