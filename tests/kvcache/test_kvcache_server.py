#!/usr/bin/env python3
"""ds4-server with --kv-disk-dir on the tiny model: restart hits with logits identical to an
uncached run, evict + resume, SIGTERM shutdown save, kill -9 during saves (random times),
corrupt files rejected, the space limit.

Files are checked with an independent reader of the format (docs/kvcache.md, including the CRC-32C
described in src/kvcache/README.md), written here from the description, not from our C++.
The same for the CLI: `ds4 --kv-disk-dir` resumes an interactive chat after a restart with
the same greedy reply as an uninterrupted chat.
Env: DS4_SERVER_BIN, DS4_BIN (optional), DS4_TEST_MODEL, DS4_KV_TMP.
"""
import hashlib
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from server_process import TIME_SCALE, ServerProcess, request, system_text  # noqa: E402  (tests/server_process.py)

BIN = os.environ["DS4_SERVER_BIN"]
CLI = os.environ.get("DS4_BIN", "")
MODEL = os.environ["DS4_TEST_MODEL"]
TMP = os.path.join(os.environ.get("DS4_KV_TMP", "/tmp"), "server")

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


# ---- independent reader of the file format

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _crc32c_table()


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    t = _T
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def read_kv(path, verify_crc=True):
    """Returns a dict for a valid file, raises ValueError with the reason otherwise.
    verify_crc=False checks everything but the checksum (the pure-Python CRC is slow)."""
    data = open(path, "rb").read()
    if len(data) < 52:
        raise ValueError("short")
    if data[0:3] != b"KVC" or data[3] != 1:
        raise ValueError("magic/version")
    quant, reason, ext, rev = data[4], data[5], data[6], data[7]
    tokens, hits, ctx, crc = struct.unpack_from("<IIII", data, 8)
    created, last_used, payload_bytes = struct.unpack_from("<QQQ", data, 24)
    if quant not in (2, 4) or tokens == 0 or rev != 1:
        raise ValueError("header fields")
    (key_len,) = struct.unpack_from("<I", data, 48)
    key = data[52:52 + key_len]
    if len(key) != key_len:
        raise ValueError("key truncated")
    if hashlib.sha1(key).hexdigest() + ".kv" != os.path.basename(path):
        raise ValueError("name is not SHA1(key)")
    p = 52 + key_len
    if len(data) < p + payload_bytes:
        raise ValueError("payload truncated")
    hdr = struct.unpack_from("<13I", data, p)
    if hdr[0] != 0x34565344 or hdr[1] != 1 or hdr[7] != tokens:
        raise ValueError("payload header")
    toks = struct.unpack_from("<%dI" % tokens, data, p + 52)
    tail = data[p + payload_bytes:]
    tools = []
    if ext & 1:
        if tail[0:3] != b"KTM" or tail[3] != 1:
            raise ValueError("KTM header")
        (count,) = struct.unpack_from("<I", tail, 4)
        at = 8
        for _ in range(count):
            il, dl = struct.unpack_from("<II", tail, at)
            at += 8
            tools.append((tail[at:at + il], tail[at + il:at + il + dl]))
            at += il + dl
        if at != len(tail):
            raise ValueError("bytes after KTM")
    elif tail:
        raise ValueError("bytes after payload")
    stable = bytearray(data[:48])
    stable[12:16] = b"\0" * 4
    stable[20:24] = b"\0" * 4
    stable[32:40] = b"\0" * 8
    if verify_crc and crc32c(bytes(stable), crc32c(data[48:])) != crc:
        raise ValueError("checksum")
    return {"tokens": tokens, "reason": reason, "ext": ext, "key": key, "hits": hits, "ids": toks,
            "tools": tools, "size": len(data)}


# ---- server driving

class Server(ServerProcess):
    def __init__(self, kv_dir=None, extra=(), threads=1):
        args = [BIN, "-m", MODEL, "--port", "0", "--ctx", "4096", "--threads", str(threads),
                "--test-hooks"]
        if kv_dir:
            args += ["--kv-disk-dir", kv_dir, "--kv-cache-min-tokens", "64"]
        args += list(extra)
        super().__init__(args, start_timeout=60)


def test_seed(default, where):
    """The seed of a randomized step: `default`, or DS4_TEST_SEED mixed with it (as
    tests/test_seed.h does), printed so a failure can be replayed."""
    env = os.environ.get("DS4_TEST_SEED", "")
    seed = default
    if env:
        seed = (((int(env, 0) + default) * 0x9E3779B97F4A7C15) % (1 << 64)) >> 32
    print("[seed] %s seed %d (DS4_TEST_SEED=%s)" % (where, seed, env or "unset"), flush=True)
    return seed


def saved(lines_text, reason):
    return [int(m.group(1)) for m in
            re.finditer(r"kv cache: saved %s \S+ tokens=(\d+)" % reason, lines_text)]


def fresh_dir(name):
    d = os.path.join(TMP, name)
    shutil.rmtree(d, ignore_errors=True)
    return d


# ---- scenarios

def test_restart_evict_resume():
    d = fresh_dir("restart")
    sys_msg = {"role": "system", "content": system_text(1)}
    turn1 = [sys_msg, {"role": "user", "content": "What is two plus two?"}]
    a1 = "The answer is four."
    a = Server(d)
    r1 = a.chat(request(turn1, a1))
    check(r1["usage"]["prompt_tokens_details"]["cached_tokens"] == 0, "first request is cold")
    check(len(saved(a.log(), "cold")) == 1, "cold save after the first long prompt:\n" + a.log())
    rc = a.stop()
    check(rc == 0, "SIGTERM exits 0 (got %s)" % rc)
    shut = saved(a.log(), "shutdown")
    check(len(shut) == 1, "shutdown save on SIGTERM:\n" + a.log())
    files = sorted(os.listdir(d))
    check(len(files) == 2, "cold + shutdown files: %s" % files)
    for f in files:
        try:
            info = read_kv(os.path.join(d, f))
            check(info["reason"] in (1, 4), "reason cold or shutdown")
        except ValueError as e:
            check(False, "file %s invalid: %s" % (f, e))

    turn2 = turn1 + [{"role": "assistant", "content": a1},
                     {"role": "user", "content": "And three plus three?"}]
    a2 = "Six, of course."
    # The uncached reference first: one server at a time.
    c = Server(None)
    r2_plain = c.chat(request(turn2, a2, logprobs=True))
    c.stop()
    b = Server(d)
    r2 = b.chat(request(turn2, a2, logprobs=True))
    cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
    check(shut and cached == shut[0], "restart hit reuses the shutdown checkpoint: cached=%s "
          "shutdown=%s\n%s" % (cached, shut, b.log()))
    check("kv cache: hit" in b.log(), "hit logged")

    check(r2_plain["usage"]["prompt_tokens_details"]["cached_tokens"] == 0, "uncached run")
    check(r2_plain["usage"]["prompt_tokens"] == r2["usage"]["prompt_tokens"], "same prompt")
    lp_hit = r2["choices"][0]["logprobs"]["content"]
    lp_plain = r2_plain["choices"][0]["logprobs"]["content"]
    check(len(lp_hit) > 3 and lp_hit == lp_plain,
          "logprobs after a disk hit equal the uncached run exactly")

    # An unrelated request evicts the live conversation to disk ...
    other = [{"role": "system", "content": system_text(2)},
             {"role": "user", "content": "Something else entirely."}]
    b.chat(request(other, "Unrelated."))
    ev = saved(b.log(), "evict")
    check(len(ev) == 1 and "live miss" in b.log(), "evict save before the switch:\n" + b.log())
    # ... and the original conversation resumes from it.
    turn3 = turn2 + [{"role": "assistant", "content": a2},
                     {"role": "user", "content": "Thanks."}]
    r3 = b.chat(request(turn3, "You are welcome."))
    cached3 = r3["usage"]["prompt_tokens_details"]["cached_tokens"]
    check(ev and cached3 == ev[0], "resume from the evict checkpoint: cached=%s evict=%s\n%s"
          % (cached3, ev, b.log()))
    b.stop()


def test_slots_spill_to_disk():
    """--parallel 2 with three conversations: the third takes the least recently used slot
    after saving its state (evict); the displaced conversation returns and resumes from that
    file; SIGTERM saves every slot."""
    d = fresh_dir("slots")
    srv = Server(d, extra=["--parallel", "2"])
    convs = [[{"role": "system", "content": system_text(10 + k)},
              {"role": "user", "content": "Conversation %d, first question." % k}] for k in range(3)]
    answers = ["Answer zero.", "Answer one.", "Answer two."]
    for k in range(3):
        r = srv.chat(request(convs[k], answers[k]))
        check(r["usage"]["prompt_tokens_details"]["cached_tokens"] == 0, "conversation %d cold" % k)
        convs[k] += [{"role": "assistant", "content": answers[k]},
                     {"role": "user", "content": "A follow-up."}]
    ev = saved(srv.log(), "evict")
    check(len(ev) == 1, "the third conversation evicted one slot to disk:\n" + srv.log())
    # Conversation 0 returns: no slot holds it, so it loads its evict checkpoint.
    r = srv.chat(request(convs[0], "Back again."))
    cached = r["usage"]["prompt_tokens_details"]["cached_tokens"]
    check(ev and cached == ev[0], "resume from disk: cached=%s evict=%s\n%s" % (cached, ev, srv.log()))
    check(re.search(r"chat #3 slot=0 ", srv.log()) is not None,
          "the third conversation took the least recently used slot 0:\n" + srv.log())
    # Conversation 2 is still live in its slot: a whole-prefix hit without the disk.
    hits_before = srv.log().count("kv cache: hit")
    r2 = srv.chat(request(convs[2], "Still here."))
    check(r2["usage"]["prompt_tokens_details"]["cached_tokens"] > 0 and
          srv.log().count("kv cache: hit") == hits_before, "live slot hit for conversation 2")
    rc = srv.stop()
    check(rc == 0, "SIGTERM exits 0")
    check(len(saved(srv.log(), "shutdown")) == 2, "one shutdown save per slot:\n" + srv.log())


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["location"]}}}
DSML_CALL = ('\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="get_weather">\n'
             '<｜DSML｜parameter name="location" string="true">Beijing</｜DSML｜parameter>\n'
             '<｜DSML｜parameter name="days" string="false">2</｜DSML｜parameter>\n'
             '</｜DSML｜invoke>\n</｜DSML｜tool_calls>')


def test_tool_map_survives_restart():
    d = fresh_dir("ktm")
    msgs = [{"role": "system", "content": system_text(5)},
            {"role": "user", "content": "Weather in Beijing for 2 days?"}]
    a = Server(d)
    body = request(msgs, DSML_CALL)
    body["tools"] = [WEATHER_TOOL]
    r1 = a.chat(body)
    calls = r1["choices"][0]["message"].get("tool_calls") or []
    check(len(calls) == 1, "one tool call: %r" % r1["choices"][0])
    a.stop()
    shut = saved(a.log(), "shutdown")
    check(len(shut) == 1, "shutdown save:\n" + a.log())
    if not calls or not shut:
        return
    call_id = calls[0]["id"]
    maps = []
    for f in os.listdir(d):
        info = read_kv(os.path.join(d, f))
        maps += [(i.decode(), m.decode()) for i, m in info["tools"]]
        if info["reason"] == 4:
            check(DSML_CALL.encode() in info["key"], "the call's DSML is in the shutdown key")
    check((call_id, DSML_CALL) in maps, "KTM holds the call id and its sampled DSML: %r" % maps)
    # After a restart the client replays the call with its arguments reordered; the exact
    # bytes come from the KTM, so the prompt extends the shutdown checkpoint.
    follow = msgs + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": "get_weather", "arguments": '{"days":2,"location":"Beijing"}'}}]},
        {"role": "tool", "tool_call_id": call_id, "content": '{"temperature":22}'}]
    b = Server(d)
    body = request(follow, "It is 22 degrees.")
    body["tools"] = [WEATHER_TOOL]
    r2 = b.chat(body)
    cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
    check(cached == shut[0], "replayed call hits the shutdown checkpoint: cached=%d shutdown=%d\n%s"
          % (cached, shut[0], b.log()))
    check("tool replay entries from" in b.log(), "tool map loaded at startup")
    b.stop()


def test_thinking_chat_resumes_without_its_reasoning():
    d = fresh_dir("thinking")
    turn1 = [{"role": "system", "content": system_text(6)},
             {"role": "user", "content": "What is two plus two?"}]

    def body(msgs, out):
        b = request(msgs, out)
        b["thinking"] = True
        return b

    a = Server(d)
    r1 = a.chat(body(turn1, "Add them.</think>Four."))
    check(r1["choices"][0]["message"]["content"] == "Four.", "thinking answer")
    a.stop()
    shut = saved(a.log(), "shutdown")
    check(len(shut) == 1, "shutdown save:\n" + a.log())
    infos = [read_kv(os.path.join(d, f)) for f in os.listdir(d)]
    vis = [i for i in infos if i["reason"] == 4]
    check(vis and vis[0]["ext"] & 4 and b"Add them." not in vis[0]["key"] and
          vis[0]["key"].endswith("</think>Four.<｜end▁of▁sentence｜>".encode()),
          "shutdown checkpoint keyed by the visible transcript (ext bit 2)")
    # The client sends the history back without the reasoning (the drop rule).
    turn2 = turn1 + [{"role": "assistant", "content": "Four."},
                     {"role": "user", "content": "And three plus three?"}]
    b = Server(d)
    r2 = b.chat(body(turn2, "Add again.</think>Six."))
    cached = r2["usage"]["prompt_tokens_details"]["cached_tokens"]
    check(shut and cached == shut[0], "resumed with the hidden reasoning: cached=%s shutdown=%s\n%s"
          % (cached, shut, b.log()))
    b.stop()


def test_corrupt_files_rejected():
    d = fresh_dir("corrupt")
    msgs = [{"role": "system", "content": system_text(3)},
            {"role": "user", "content": "Tell me a fact."}]
    # An answer longer than the engine's cheap-rewind reach (EngineOptions::rewind_tokens,
    # 16): the live state cannot be rolled back to the prompt for free, so each retry
    # consults the disk file instead of reusing the live state.
    answer = "Water is wet, and it stays wet because its molecules cling to almost every surface they meet."
    s = Server(d)
    s.chat(request(msgs, answer))
    cold = [f for f in os.listdir(d) if read_kv(os.path.join(d, f))["reason"] == 1]
    check(len(cold) == 1, "one cold file")
    path = os.path.join(d, cold[0])
    good = open(path, "rb").read()
    rnd = random.Random(test_seed(4, "corrupt files"))
    cases = [("truncated", good[:len(good) // 2]), ("truncated header", good[:30]),
             ("truncated tail", good[:-1])]
    for _ in range(4):
        i = rnd.randrange(52, len(good))
        bad = bytearray(good)
        bad[i] ^= 1 << rnd.randrange(8)
        cases.append(("bit flip at %d" % i, bytes(bad)))
    for what, data in cases:
        with open(path, "wb") as f:
            f.write(data)
        before = len(s.lines)
        r = s.chat(request(msgs, answer))
        new_log = "\n".join(s.lines[before:])
        check(r["usage"]["prompt_tokens_details"]["cached_tokens"] == 0,
              "%s: not loaded\n%s" % (what, new_log))
        check("rejected" in new_log, "%s: rejection logged\n%s" % (what, new_log))
        # Rejected, removed, and the cold prefill wrote a valid file again.
        try:
            read_kv(path)
        except ValueError as e:
            check(False, "%s: rewritten file invalid: %s" % (what, e))
    # The intact file is used.
    with open(path, "wb") as f:
        f.write(good)
    r = s.chat(request(msgs, answer))
    check(r["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, "intact file hits")
    s.stop()


def test_space_limit():
    d = fresh_dir("space")
    s = Server(d, ["--kv-disk-space-mb", "2"])
    for i in range(4):
        s.chat(request([{"role": "system", "content": system_text(10 + i)},
                        {"role": "user", "content": "Question %d" % i}], "Answer."))
        total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        check(total <= 2 << 20, "total %d bytes within the 2 MiB budget" % total)
    check("evict: score" in s.log(), "eviction logged:\n" + s.log())
    s.stop()


def test_kill9_during_saves():
    d = fresh_dir("kill9")
    # Continued saves every 4 tokens keep the server writing (and, over the 2 MiB budget,
    # evicting) checkpoints through its prefill and decode.
    extra = ["--kv-cache-continued-interval-tokens", "4", "--kv-cache-boundary-align-tokens", "0",
             "--kv-disk-space-mb", "2"]
    msgs = [{"role": "system", "content": system_text(20)},
            {"role": "user", "content": "Count slowly."}]
    out = " ".join(str(i) for i in range(16))
    # Kill times differ per run unless DS4_TEST_SEED is set; the seed is printed either way.
    env = os.environ.get("DS4_TEST_SEED", "")
    seed = int(env, 0) if env else int(time.time())
    print("[seed] kill times seed %d (replay: DS4_TEST_SEED=%d)" % (seed, seed), flush=True)
    rnd = random.Random(seed)
    # One undisturbed run tells how long prefill + decode + saves take.
    s = Server(d, extra)
    t0 = time.time()
    s.chat(request(msgs, out))
    span = time.time() - t0
    s.stop()
    check(len(saved(s.log(), "continued")) >= 3, "continued saves while decoding:\n" + s.log())
    shutil.rmtree(d)
    leftovers = 0
    t_end = time.time() + 30 * TIME_SCALE
    iterations = 0
    while iterations < 20 and time.time() < t_end:
        iterations += 1
        s = Server(d, extra)
        th = threading.Thread(target=lambda: _quiet(s.chat, request(msgs, out)), daemon=True)
        th.start()
        t0 = time.time()
        time.sleep(rnd.uniform(0.0, span))
        t1 = time.time()
        s.proc.kill()
        s.proc.wait(30)
        th.join(10)
        leftovers += sum(".tmp." in f for f in os.listdir(d))
        for f in os.listdir(d):
            if f.endswith(".kv"):
                try:
                    read_kv(os.path.join(d, f), verify_crc=False)
                except ValueError as e:
                    check(False, "after kill -9 #%d: %s is invalid (%s)" % (iterations, f, e))
    # Every survivor passes the full check, checksum included.
    for f in os.listdir(d):
        if f.endswith(".kv"):
            try:
                read_kv(os.path.join(d, f))
            except ValueError as e:
                check(False, "after the kills: %s is invalid (%s)" % (f, e))
    print("kill -9: %d iterations over a %.2f s request, %d temporary files seen" %
          (iterations, span, leftovers), flush=True)
    # A restarted server cleans up and serves; nothing it loads is invalid.
    s = Server(d, extra)
    r = s.chat(request(msgs, "Done."))
    check(r["choices"][0]["message"]["content"] == "Done.", "served after the kills")
    check(not any(".tmp." in f for f in os.listdir(d)), "stale temporaries removed")
    check("rejected" not in s.log(), "no file needed rejecting:\n" + s.log())
    s.stop()


def test_two_servers_one_directory():
    d = fresh_dir("shared")
    # Room for every checkpoint, so each cold file stays for the other server to reuse.
    extra = ["--kv-disk-space-mb", "16"]
    servers = [Server(d, extra), Server(d, extra)]
    errors = []

    def client(k):
        try:
            for i in range(3):
                # Both servers see both conversations: each loads what the other saved.
                conv = [{"role": "system", "content": system_text(30 + (i + k) % 2)},
                        {"role": "user", "content": "Round %d" % i}]
                servers[k].chat(request(conv, "Reply %d from %d." % (i, k)))
        except Exception as e:  # noqa: BLE001 - reported as a failure below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    check(not errors, "both servers answered: %s" % errors)
    check(any("kv cache: hit" in srv.log() for srv in servers), "checkpoints were reused")
    for k, srv in enumerate(servers):
        srv.stop()
        check("rejected" not in srv.log(), "server %d rejected nothing:\n%s" % (k, srv.log()))
    files = [f for f in os.listdir(d) if f.endswith(".kv")]
    check(files and not any(".tmp." in f for f in os.listdir(d)), "files, no temporaries")
    total = 0
    for f in files:
        total += os.path.getsize(os.path.join(d, f))
        try:
            read_kv(os.path.join(d, f))
        except ValueError as e:
            check(False, "shared directory: %s invalid (%s)" % (f, e))
    check(total <= 16 << 20, "budget kept with two writers: %d" % total)


def test_bad_flags():
    r = subprocess.run([BIN, "-m", MODEL, "--kv-disk-dir", TMP, "--kv-cache-cold-max-tokens",
                        "100"], capture_output=True, timeout=30 * TIME_SCALE)
    check(r.returncode == 2 and b"cold-max" in r.stderr, "cold max < min rejected with exit 2")
    r = subprocess.run([BIN, "-m", MODEL, "--kv-disk-space-mb", "x"], capture_output=True,
                       timeout=30 * TIME_SCALE)
    check(r.returncode == 2, "bad number rejected")
    # A directory that cannot be created is a clear error, not a crash.
    blocker = os.path.join(TMP, "not-a-dir")
    open(blocker, "w").close()
    r = subprocess.run([BIN, "-m", MODEL, "--ctx", "4096", "--port", "0",
                        "--kv-disk-dir", os.path.join(blocker, "sub")],
                       capture_output=True, timeout=60 * TIME_SCALE)
    check(r.returncode == 1 and b"--kv-disk-dir" in r.stderr,
          "unusable directory reported: %r" % r.stderr[-300:])


def test_cli_resume():
    if not CLI:
        print("skipped: no DS4_BIN")
        return
    d = fresh_dir("cli")
    base = [CLI, "-m", MODEL, "--nothink", "--temp", "0", "-n", "8", "-t", "1", "--no-color"]
    kv = ["--kv-disk-dir", d, "--kv-cache-min-tokens", "8", "-v"]

    def repl(lines, extra):
        r = subprocess.run(base + extra, input=("\n".join(lines) + "\n/quit\n").encode(),
                           capture_output=True, timeout=120 * TIME_SCALE)
        check(r.returncode == 0, "ds4 exits 0: %s" % r.stderr.decode()[-2000:])
        out = [l for l in r.stdout.decode().split("\n")[1:] if l and not l.startswith("Resumed")]
        return out, r.stdout.decode(), r.stderr.decode()

    first, _, err1 = repl(["Hello there"], kv)
    check("saved agent-session" in err1, "the CLI saves the conversation:\n" + err1)
    files = os.listdir(d)
    check(len(files) == 1, "one conversation file: %s" % files)
    if files:
        check(read_kv(os.path.join(d, files[0]))["reason"] == 6, "saved as agent-session")
    second, out2, err2 = repl(["How are you?"], kv)
    m = re.search(r"Resumed the last conversation \((\d+) tokens\)", out2)
    check(m is not None, "resumed after restart:\n" + out2)
    check(m and ("reused %s tokens" % m.group(1)) in err2, "the resumed state is reused:\n" + err2)
    check(len(os.listdir(d)) == 1, "the previous turn's file is replaced")
    both, _, _ = repl(["Hello there", "How are you?"], [])
    check(len(both) == 2 and first == both[:1] and second == both[1:],
          "resumed replies equal one uninterrupted chat: %r + %r vs %r" % (first, second, both))


def _quiet(fn, *a):
    try:
        fn(*a)
    except Exception:
        pass


def main():
    os.makedirs(TMP, exist_ok=True)
    tests = [test_bad_flags, test_cli_resume, test_restart_evict_resume, test_slots_spill_to_disk,
             test_tool_map_survives_restart,
             test_thinking_chat_resumes_without_its_reasoning, test_corrupt_files_rejected,
             test_space_limit, test_two_servers_one_directory, test_kill9_during_saves]
    for t in tests:
        t0 = time.time()
        n = len(FAILURES)
        try:
            t()
        except Exception as e:  # a crash of the harness is a failure too
            import traceback
            traceback.print_exc()
            FAILURES.append("%s raised %r" % (t.__name__, e))
        print("%s %s (%.1f s)" % ("ok  " if len(FAILURES) == n else "FAIL", t.__name__,
                                  time.time() - t0), flush=True)
    if FAILURES:
        print("%d failures" % len(FAILURES))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
