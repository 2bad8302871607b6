#!/usr/bin/env python3
"""Writes the generated part of the tokenizer reference corpus (deterministic).

    python3 gen_corpus.py corpus/

generated_*.txt: random documents built from many Unicode classes, code points sampled
across all assigned planes, and long pieces (for the heap merge). edge_cases.json: every
length-1..3 sequence over representative characters of the pre-tokenizer classes, each as
its own text. U+0085 and U+FEFF are left out: JavaScript's \\s (the reference) differs from
Oniguruma's exactly there; those two are tested by hand-derived expectations instead.
"""
import itertools
import json
import random
import sys
import unicodedata
from pathlib import Path

EXCLUDED = {0x85, 0xFEFF}


def assigned(cp):
    if cp in EXCLUDED or 0xD800 <= cp <= 0xDFFF:
        return False
    return unicodedata.category(chr(cp)) != "Cn"


def chars_in(ranges, cats=None):
    out = []
    for lo, hi in ranges:
        for cp in range(lo, hi + 1):
            if assigned(cp) and (cats is None or unicodedata.category(chr(cp))[0] in cats):
                out.append(chr(cp))
    return out


SCRIPTS = {
    "latin": chars_in([(0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F)], "L"),
    "greek": chars_in([(0x370, 0x3FF)], "L"),
    "cyrillic": chars_in([(0x400, 0x4FF)], "L"),
    "armenian": chars_in([(0x531, 0x587)], "L"),
    "hebrew": chars_in([(0x5D0, 0x5EA)], "L"),
    "arabic": chars_in([(0x620, 0x64A), (0x671, 0x6D3)], "L"),
    "devanagari": chars_in([(0x904, 0x939)], "L"),
    "thai": chars_in([(0xE01, 0xE30)], "L"),
    "georgian": chars_in([(0x10D0, 0x10FA)], "L"),
    "hangul": chars_in([(0xAC00, 0xD7A3)], "L"),
    "cjk": chars_in([(0x4E00, 0x9FA5)], "L"),
    "cjk_ext": chars_in([(0x9FA6, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF)], "L"),
    "hiragana": chars_in([(0x3041, 0x3096)], "L"),
    "katakana": chars_in([(0x30A1, 0x30FA)], "L"),
    "gothic": chars_in([(0x10330, 0x1034A)], "L"),
    "ethiopic": chars_in([(0x1200, 0x1357)], "L"),
}
MARKS = chars_in([(0x300, 0x36F), (0x483, 0x489), (0x591, 0x5BD), (0x64B, 0x65F), (0x900, 0x903),
                  (0x93A, 0x94F), (0xE31, 0xE3A), (0x1AB0, 0x1AFF), (0x20D0, 0x20F0), (0x3099, 0x309A),
                  (0xFE20, 0xFE2F)], "M")
DIGITS = chars_in([(0x30, 0x39), (0x660, 0x669), (0x966, 0x96F), (0xFF10, 0xFF19), (0xB2, 0xB3),
                   (0xB9, 0xB9), (0xBC, 0xBE), (0x2070, 0x2079), (0x2080, 0x2089), (0x2150, 0x2189),
                   (0x2460, 0x249B), (0x1D7CE, 0x1D7FF)], "N")
PUNCT = chars_in([(0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E), (0xA1, 0xBF),
                  (0x2010, 0x205E), (0x3001, 0x3003), (0x3008, 0x3011), (0xFF01, 0xFF0F), (0x30FB, 0x30FB)],
                 "PS")
SYMBOLS = chars_in([(0x2190, 0x23FF), (0x2500, 0x27BF), (0x20A0, 0x20C0), (0x1F300, 0x1F64F),
                    (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF)], "S")
SPACES = [" ", " ", " ", " ", "  ", "   ", "    ", "\t", "\n", "\n", "\n\n", "\r\n", "\r", " \n",
          "\n ", "\u00a0", "\u3000", "\u2009", "\u202f", "\u2028", "\u000b", "\u000c"]
FORMAT = ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u00ad", "\u2060", "\u2066", "\u2069",
          "\u061c", "\U000E0041"]
CONTROLS = [chr(c) for c in list(range(1, 9)) + [0x0e, 0x1b, 0x1f, 0x7f, 0x80, 0x9f]]
EMOJI_SEQ = ["👩‍💻", "👍🏽", "🇮🇹", "❤️", "🏳️‍🌈", "👨‍👩‍👧‍👦", "1️⃣", "🐻‍❄️", "☀️"]


def word(rng, script):
    chars = SCRIPTS[script]
    w = "".join(rng.choice(chars) for _ in range(rng.randint(1, 9)))
    if rng.random() < 0.15:
        w += rng.choice(MARKS)
    return w


def mixed_document(rng, n_items):
    out = []
    scripts = list(SCRIPTS)
    for _ in range(n_items):
        r = rng.random()
        if r < 0.45:
            out.append(word(rng, rng.choice(scripts)))
        elif r < 0.55:
            out.append("".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 7))))
        elif r < 0.65:
            out.append("".join(rng.choice(PUNCT) for _ in range(rng.randint(1, 3))))
        elif r < 0.70:
            out.append(rng.choice(SYMBOLS))
        elif r < 0.72:
            out.append(rng.choice(EMOJI_SEQ))
        elif r < 0.74:
            out.append(rng.choice(FORMAT))
        elif r < 0.75:
            out.append(rng.choice(CONTROLS))
        elif r < 0.77:
            out.append(rng.choice(MARKS))
        else:
            out.append(rng.choice(SPACES))
    return "".join(out)


def random_codepoints(rng, n):
    pool = [cp for cp in range(0x20, 0x32000) if assigned(cp) and unicodedata.category(chr(cp)) not in ("Cs",)]
    out = []
    for _ in range(n):
        out.append(chr(rng.choice(pool)))
        if rng.random() < 0.2:
            out.append(rng.choice(SPACES))
    return "".join(out)


def long_pieces(rng):
    out = []
    for n in (49, 50, 64, 100, 257, 600, 1500):
        out.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)))
        out.append(" " + "".join(rng.choice("etaoinshrdlu") for _ in range(n)))
        out.append("\n" + "-" * n + "\n" + "=" * n + "\n" + "*" * (n // 3) + "#" * (n // 3) + "\n")
        out.append(" " * n + "x\n" + "\t" * (n // 4) + "y\n")
        out.append("".join(rng.choice(SCRIPTS["cyrillic"]) for _ in range(n // 2)) + "\n")
        out.append("".join(rng.choice(SCRIPTS["cjk"]) for _ in range(n // 3)) + "\n")
        out.append("😀" * (n // 10) + " " + "🙂🙃" * (n // 20) + "\n")
        out.append("".join(rng.choice("0123456789") for _ in range(n)) + "\n")
        out.append("ab" * (n // 2) + " " + "the" * (n // 3) + " " + "aaaa" * (n // 4) + "\n")
        out.append("".join(rng.choice("ACGT") for _ in range(n)) + "\n")
        out.append("https://example.com/" + "/".join(word(rng, "latin") for _ in range(n // 8)) + "\n")
    b64 = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                  for _ in range(3000))
    out.append("data:image/png;base64," + b64 + "==\n")
    out.append("".join(f"{rng.getrandbits(32):08x}" for _ in range(200)) + "\n")
    return "".join(out)


def edge_cases():
    reps = [" ", "  ", "\t", "\n", "\r", "a", "Z", "é", "\u0301", "1", "٣", "²", ".", "'", "—", "$",
            "🙂", "中", "ア", "・", "\u00a0", "\u3000", "\u200d", "\u0001", "ß", "Ω"]
    texts = []
    for n in (1, 2, 3):
        for combo in itertools.product(reps, repeat=n):
            texts.append("".join(combo))
    # Common code idioms with context on both sides.
    for pre, mid, post in itertools.product(["", "x", " ", "\n"], ["'s", "'S", " 's", "._x", "@a1", "#!"],
                                            ["", "y", " ", "\n", "1"]):
        texts.append(pre + mid + post)
    return texts


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240315)
    docs = [mixed_document(rng, rng.randint(200, 2500)) for _ in range(12)]
    (out_dir / "generated_mixed.txt").write_text("\n\n".join(docs), encoding="utf-8", newline="")
    (out_dir / "generated_codepoints.txt").write_text(random_codepoints(rng, 12000), encoding="utf-8",
                                                      newline="")
    (out_dir / "generated_long_pieces.txt").write_text(long_pieces(rng), encoding="utf-8", newline="")
    (out_dir / "edge_cases.json").write_text(json.dumps(edge_cases(), ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
