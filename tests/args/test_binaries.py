#!/usr/bin/env python3
"""Every ds4 binary answers --help and --version alike and rejects bad command lines with
exit code 2 and one line on stderr (src/args).

Usage: test_binaries.py VERSION NAME=PATH[,ARG...] ...
VERSION is CMake's project version; ARGs are put before the tested ones (a mode switch such
as ds4's check mode)."""
import subprocess
import sys
import unittest

VERSION = sys.argv[1]
BINARIES = []  # (name, path, prefix arguments)
for spec in sys.argv[2:]:
    name, rest = spec.split("=", 1)
    path, *prefix = rest.split(",")
    BINARIES.append((name, path, prefix))
del sys.argv[1:]


def run(path, args):
    return subprocess.run([path] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60, text=True)


class Binaries(unittest.TestCase):
    def test_help(self):
        for name, path, prefix in BINARIES:
            with self.subTest(binary=name, prefix=prefix):
                p = run(path, prefix + ["--help"])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stderr, "")
                out = p.stdout
                self.assertTrue(out.startswith("Usage: %s " % name), out[:80])
                # The common tail: help and version under General, then the exit codes.
                self.assertIn("\nGeneral:\n  -h, --help              Show this help and exit.\n"
                              "      --version           Show the version and exit.\n", out)
                self.assertTrue(out.endswith("\nExit status: 0 success, 1 failure, 2 bad command line.\n"))
                # Every option line is indented by 2 and its description starts at column 26.
                for line in out.splitlines():
                    if line.startswith("  -") and len(line) > 26 and line[24:26] == "  ":
                        self.assertNotEqual(line[26], " ", line)
                self.assertEqual(run(path, prefix + ["-h"]).stdout, out)

    def test_version(self):
        for name, path, prefix in BINARIES:
            with self.subTest(binary=name, prefix=prefix):
                p = run(path, prefix + ["--version"])
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertEqual(p.stdout, "%s %s\n" % (name, VERSION))
                self.assertEqual(p.stderr, "")

    def check_usage_error(self, path, args, expected_start):
        p = run(path, args)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertEqual(p.stdout, "")
        self.assertTrue(p.stderr.startswith(expected_start), p.stderr)
        self.assertEqual(p.stderr.count("\n"), 1, p.stderr)  # one line
        self.assertTrue(p.stderr.endswith(" --help)\n"), p.stderr)

    def test_unknown_flag(self):
        for name, path, prefix in BINARIES:
            with self.subTest(binary=name, prefix=prefix):
                self.check_usage_error(path, prefix + ["--no-such-flag"],
                                       "%s: unknown option: --no-such-flag" % name)
                self.check_usage_error(path, prefix + ["stray"], "%s: unexpected argument: stray" % name)

    def test_bad_and_missing_values(self):
        # Every binary has --threads N.
        for name, path, prefix in BINARIES:
            with self.subTest(binary=name, prefix=prefix):
                self.check_usage_error(path, prefix + ["--threads", "many"],
                                       "%s: invalid value for --threads: 'many' (expected an integer)" % name)
                self.check_usage_error(path, prefix + ["--threads"],
                                       "%s: missing value for --threads" % name)

    def test_engine_flags_alike(self):
        # The binaries that open a model describe the engine flags with the same lines
        # (src/args/engine_options.cpp); only the default model path may differ.
        engine = ["--model", "--threads", "--layer-split", "--backend", "--cpu", "--device",
                  "--cpu-moe", "--n-cpu-moe", "--list-devices"]
        seen = {}
        for name, path, prefix in BINARIES:
            if prefix or name not in ("ds4", "ds4-server", "ds4-bench"):
                continue
            lines = run(path, ["--help"]).stdout.splitlines()
            entries = []
            for flag in engine:
                starts = [i for i, l in enumerate(lines)
                          if l.startswith("  ") and not l.startswith(" " * 26) and
                          flag in l[:26].replace(",", " ").split()]
                self.assertEqual(len(starts), 1, "%s --help: %s" % (name, flag))
                i = starts[0]
                entry = [lines[i]]
                while i + 1 < len(lines) and lines[i + 1].startswith(" " * 26):
                    i += 1
                    entry.append(lines[i])
                entries.append(entry)
            seen[name] = entries
        self.assertGreaterEqual(len(seen), 2, "fewer than two engine binaries were given")
        first = next(iter(seen.values()))
        for name, entries in seen.items():
            self.assertEqual(entries[1:], first[1:], name)


if __name__ == "__main__":
    unittest.main(verbosity=2)
