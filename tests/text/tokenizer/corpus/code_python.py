#!/usr/bin/env python3
"""Word-frequency report (corpus sample).

Usage:
    python3 wordfreq.py [--top N] [--min-len K] FILE...
"""
from __future__ import annotations

import argparse
import collections
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

WORD_RE = re.compile(r"[\w'-]+", re.UNICODE)


@dataclass(frozen=True)
class Options:
    top: int = 20
    min_len: int = 1
    files: tuple[Path, ...] = field(default_factory=tuple)


def iter_words(lines: Iterable[str], min_len: int = 1) -> Iterator[str]:
    for line in lines:
        for match in WORD_RE.finditer(line.lower()):
            word = match.group(0).strip("'-")
            if len(word) >= min_len:
                yield word


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--top", type=int, default=20, help="how many words to show (default: %(default)s)")
    p.add_argument("--min-len", type=int, default=1)
    p.add_argument("files", nargs="+", type=Path)
    ns = p.parse_args(argv)
    if ns.top <= 0:
        p.error(f"--top must be positive, got {ns.top!r}")
    return Options(top=ns.top, min_len=ns.min_len, files=tuple(ns.files))


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    counts: collections.Counter[str] = collections.Counter()
    for path in opts.files:
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                counts.update(iter_words(fh, opts.min_len))
        except OSError as exc:
            print(f"error: {path}: {exc.strerror}", file=sys.stderr)
            return 2
    total = sum(counts.values()) or 1
    width = max((len(w) for w, _ in counts.most_common(opts.top)), default=4)
    print(f"{'word':<{width}}  {'count':>8}  {'share':>7}")
    print("-" * (width + 19))
    for word, n in counts.most_common(opts.top):
        print(f"{word:<{width}}  {n:>8,d}  {n / total:>7.2%}")
    return 0


class Matrix:
    def __init__(self, rows: int, cols: int, fill: float = 0.0) -> None:
        self.rows, self.cols = rows, cols
        self._data = [[fill] * cols for _ in range(rows)]

    def __matmul__(self, other: "Matrix") -> "Matrix":
        assert self.cols == other.rows, "shape mismatch"
        out = Matrix(self.rows, other.cols)
        for i in range(self.rows):
            for j in range(other.cols):
                out._data[i][j] = sum(self._data[i][k] * other._data[k][j] for k in range(self.cols))
        return out

    def __repr__(self) -> str:
        return f"Matrix({self.rows}x{self.cols})"


squares = {n: n ** 2 for n in range(10) if n % 2 == 0}
lam = lambda x, *args, **kwargs: (x, args, kwargs)
bits = 0b1010_1010 | 0o755 ^ 0xDEAD_BEEF
fstr = f"{squares!r:>40} {bits=:#x} {{literal braces}}"
raw = rb"\d+\s*(?P<name>\w+)"
walrus = [y for x in range(5) if (y := x * x) > 3]

if __name__ == "__main__":
    sys.exit(main())
