#!/usr/bin/env python3
"""End-to-end tests of ds4-bench on a tiny synthetic model (real vocabulary, all four layer
kinds of the tiny schedule). Checks the CSV shape and the sweep's bookkeeping, never speed.

Environment (set by tests/bench/CMakeLists.txt):
  DS4_BENCH_BIN    the ds4-bench binary
  DS4_BENCH_MODEL  the tiny GGUF (made by the bench_make_model fixture)
  DS4_BENCH_TMP    scratch folder
"""
import csv
import io
import os
import subprocess
import sys
import unittest

BIN = os.environ.get("DS4_BENCH_BIN", "")
MODEL = os.environ.get("DS4_BENCH_MODEL", "")
TMP = os.environ.get("DS4_BENCH_TMP", "/tmp")
COLUMNS = ["ctx_tokens", "prefill_tokens", "prefill_tps", "gen_tokens", "gen_tps", "kvcache_bytes"]


def run(args, timeout=300):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout)


def text_file(name, words):
    # Distinct words, so the token count grows with the word count (>= 1 token per word).
    path = os.path.join(TMP, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(" ".join(f"word{i % 97} number {i}" for i in range(words)))
    return path


def parse_csv(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]


class Ds4BenchSweep(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.prompt = text_file("bench-prompt.txt", 200)
        cls.csv_path = os.path.join(TMP, "bench-sweep.csv")
        if os.path.exists(cls.csv_path):
            os.remove(cls.csv_path)
        cls.res = run(["-m", MODEL, "--prompt-file", cls.prompt, "--ctx-start", "40", "--ctx-max", "168",
                       "--step-incr", "64", "--gen-tokens", "5", "--csv", cls.csv_path, "-t", "2"])

    def test_exit_and_stderr_report(self):
        self.assertEqual(self.res.returncode, 0, self.res.stderr)
        self.assertEqual(self.res.stdout, "")  # the CSV went to the file
        self.assertIn("decode reads", self.res.stderr)
        self.assertIn("measured read bandwidth", self.res.stderr)
        self.assertIn("of the bandwidth bound", self.res.stderr)
        self.assertIn("memory: model file", self.res.stderr)

    def test_csv_columns_and_rows(self):
        with open(self.csv_path, encoding="utf-8") as f:
            text = f.read()
        header, rows = parse_csv(text)
        self.assertEqual(header, COLUMNS)
        # Frontiers 40, 104, 168: ctx-start, +64, then ctx-max.
        self.assertEqual([int(r["ctx_tokens"]) for r in rows], [40, 104, 168])
        self.assertEqual([int(r["prefill_tokens"]) for r in rows], [40, 64, 64])
        for r in rows:
            self.assertEqual(int(r["gen_tokens"]), 5)
            for col in ("prefill_tps", "gen_tps"):
                self.assertRegex(r[col], r"^\d+\.\d\d$")  # two decimals, as ds4 prints
                self.assertGreater(float(r[col]), 0.0)
        kv = [int(r["kvcache_bytes"]) for r in rows]
        # Each token adds its id plus, past a compression boundary, compressed rows.
        self.assertTrue(kv[0] < kv[1] < kv[2], kv)
        self.assertGreaterEqual(kv[1] - kv[0], 4 * 64)

    def test_snapshot_restore_leaves_the_prefix_intact(self):
        # After the generation probe the session is restored, so the state at 168 reached
        # through 40 -> 104 -> 168 must be the state of a direct prefill to 168: same size.
        direct = run(["-m", MODEL, "--prompt-file", self.prompt, "--ctx-start", "168", "--ctx-max", "168",
                      "--gen-tokens", "3", "-t", "1"])
        self.assertEqual(direct.returncode, 0, direct.stderr)
        header, rows = parse_csv(direct.stdout)  # no --csv: stdout
        self.assertEqual(header, COLUMNS)
        self.assertEqual(len(rows), 1)
        self.assertEqual(int(rows[0]["prefill_tokens"]), 168)
        with open(self.csv_path, encoding="utf-8") as f:
            _, sweep = parse_csv(f.read())
        self.assertEqual(rows[0]["kvcache_bytes"], sweep[-1]["kvcache_bytes"])

    def test_multiplicative_schedule_and_chat_prompt(self):
        res = run(["-m", MODEL, "--chat-prompt-file", self.prompt, "--ctx-start", "30", "--ctx-max", "100",
                   "--step-mul", "2", "-n", "2", "--prefill-chunk", "32"])
        self.assertEqual(res.returncode, 0, res.stderr)
        _, rows = parse_csv(res.stdout)
        self.assertEqual([int(r["ctx_tokens"]) for r in rows], [30, 60, 100])
        self.assertEqual([int(r["prefill_tokens"]) for r in rows], [30, 30, 40])


class Ds4BenchParallel(unittest.TestCase):
    PAR_COLUMNS = ["parallel", "ctx_tokens", "gen_tokens", "agg_tps", "ratio", "ratio_min", "ratio_max",
                   "cpu_agg_tps", "cpu_ratio"]

    def test_rows_per_n_and_baseline(self):
        prompt = text_file("bench-parallel.txt", 120)
        res = run(["-m", MODEL, "--prompt-file", prompt, "--ctx-start", "48", "-n", "3", "--parallel", "3,2",
                   "--rounds", "2", "-t", "2"])
        self.assertEqual(res.returncode, 0, res.stderr)
        header, rows = parse_csv(res.stdout)
        self.assertEqual(header, self.PAR_COLUMNS)
        self.assertEqual([int(r["parallel"]) for r in rows], [1, 2, 3])  # N = 1 added, ascending
        for r in rows:
            self.assertEqual(int(r["ctx_tokens"]), 48)
            self.assertEqual(int(r["gen_tokens"]), 3)
            self.assertGreater(float(r["agg_tps"]), 0.0)
            self.assertGreater(float(r["cpu_agg_tps"]), 0.0)
            self.assertLessEqual(float(r["ratio_min"]), float(r["ratio"]))
            self.assertLessEqual(float(r["ratio"]), float(r["ratio_max"]))
        self.assertEqual(rows[0]["ratio"], "1.000")
        self.assertEqual(rows[0]["cpu_ratio"], "1.000")
        self.assertEqual(res.stderr.count("--parallel round"), 2)
        self.assertIn("--parallel N=3: ms per pass: L0", res.stderr)

    def test_text_too_short_for_the_slices(self):
        prompt = text_file("bench-parallel-short.txt", 12)
        res = run(["-m", MODEL, "--prompt-file", prompt, "--ctx-start", "40", "-n", "1", "--parallel", "8"])
        self.assertEqual(res.returncode, 1)
        self.assertIn("--parallel 8 at --ctx-start 40 needs at least", res.stderr)


class Ds4BenchErrors(unittest.TestCase):
    def test_help(self):
        res = run(["--help"])
        self.assertEqual(res.returncode, 0)
        self.assertIn("--prompt-file", res.stdout)
        self.assertIn(",".join(COLUMNS), res.stdout)

    def test_bad_flags(self):
        for args, needle in ((["--frobnicate"], "unknown option: --frobnicate"),
                             (["--prompt-file", "x", "--ctx-max", "ten"], "--ctx-max"),
                             (["-m", MODEL], "exactly one of --prompt-file or --chat-prompt-file"),
                             (["--prompt-file", "x", "--ctx-start", "9", "--ctx-max", "8"], "--ctx-start")):
            res = run(args)
            self.assertEqual(res.returncode, 2, args)
            self.assertIn(needle, res.stderr)
            self.assertNotIn("ctx_tokens", res.stdout)

    def test_prompt_too_short(self):
        short = text_file("bench-short.txt", 5)
        res = run(["-m", MODEL, "--prompt-file", short, "--ctx-start", "16", "--ctx-max", "4000", "-n", "1"])
        self.assertEqual(res.returncode, 1)
        self.assertIn("--ctx-max 4000 needs at least", res.stderr)

    def test_missing_files(self):
        res = run(["-m", os.path.join(TMP, "no-such-model.gguf"), "--prompt-file", "x"])
        self.assertEqual(res.returncode, 1)
        self.assertIn("no-such-model.gguf", res.stderr)
        res = run(["-m", MODEL, "--prompt-file", os.path.join(TMP, "no-such-prompt.txt")])
        self.assertEqual(res.returncode, 1)
        self.assertIn("no-such-prompt.txt", res.stderr)

    def test_context_beyond_model_limit(self):
        prompt = text_file("bench-prompt-small.txt", 40)
        res = run(["-m", MODEL, "--prompt-file", prompt, "--ctx-start", "8", "--ctx-max", "16", "-n", "1",
                   "--ctx-alloc", "100000000"])
        self.assertEqual(res.returncode, 1)
        self.assertIn("context limit", res.stderr)


if __name__ == "__main__":
    if not BIN or not MODEL:
        sys.exit("DS4_BENCH_BIN and DS4_BENCH_MODEL must be set")
    unittest.main(verbosity=2)
