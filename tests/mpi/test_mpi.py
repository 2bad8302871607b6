#!/usr/bin/env python3
"""The MPI pipeline (docs/mpi.md) against one process, with mpirun on this machine.

- 2 and 3 ranks give logits bit-identical to one process: every prefill position (chunks
  split into micro-batches), decode steps and the oracle's greedy continuation, on the
  oracle GGUFs (f32 and q2) and on a q2 synthetic model; --layer-split overrides the split.
- A disk KV cache file written by a 2-rank ds4-server is hit by a 1-rank server and the other
  way round, with logprobs equal to an uncached run.
- Resident memory of each rank, model split in two, against one process.
- Faults: a rank that cannot load its part, a bad --layer-split, a rank killed mid-request:
  every rank exits, with an error that names the rank, never a hang.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import server_process  # noqa: E402  (tests/server_process.py)
from server_process import TIME_SCALE, ServerProcess, system_text  # noqa: E402

MPIEXEC = os.environ["DS4_MPIEXEC"]
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    else:
        print("ok:", what.split("\n")[0], flush=True)
    return cond


def mpirun(n, argv, extra=()):
    return [MPIEXEC, "--oversubscribe", "-np", str(n), *extra, *argv]


def run(cmd, timeout=600):
    return subprocess.run(cmd, capture_output=True, timeout=timeout * TIME_SCALE)


# ---- logits identity ------------------------------------------------------------------

def dump_logits(ds4, model, tokens_file, out, decode_from, ranks, extra=()):
    argv = [ds4, "-m", model, "--tokens-file", tokens_file, "--dump-logits", out, "--all-logits",
            "--decode-from", str(decode_from), "--chunk", "40", "-t", "1", *extra]
    r = run(argv if ranks == 1 else mpirun(ranks, argv))
    if r.returncode != 0:
        check(False, "%s ranks on %s: exit %d\n%s" % (ranks, model, r.returncode, r.stderr.decode()))
        return None
    with open(out, "rb") as f:
        return f.read(), r.stderr.decode()


def identity(ds4, tmp, model, tokens, decode_from, label, splits=()):
    tf = os.path.join(tmp, label + ".tokens.json")
    with open(tf, "w") as f:
        json.dump(tokens, f)
    one = dump_logits(ds4, model, tf, os.path.join(tmp, label + ".1.bin"), decode_from, 1)
    if one is None:
        return
    check(len(one[0]) > 0, "%s: one process wrote logits" % label)
    runs = [(2, ()), (3, ())] + [(len(s.split(",")), ("--layer-split", s)) for s in splits]
    for ranks, extra in runs:
        got = dump_logits(ds4, model, tf, os.path.join(tmp, "%s.%d.bin" % (label, ranks)), decode_from,
                          ranks, extra)
        if got is None:
            continue
        check("MPI pipeline: rank 0" in got[1], "%s: %d ranks ran as a pipeline\n%s" % (label, ranks, got[1]))
        check(got[0] == one[0], "%s: %d ranks %s: logits bit-identical to one process (%d bytes)"
              % (label, ranks, " ".join(extra), len(one[0])))


def test_identity(a):
    tmp = os.path.join(a.tmp, "identity")
    os.makedirs(tmp, exist_ok=True)
    ds4 = os.path.join(a.bin_dir, "ds4")
    rnd = random.Random(5)
    for cfg, recipe in [("tiny-a", "f32"), ("tiny-b", "f32"), ("tiny-q", "f32"), ("tiny-q", "q2")]:
        model = os.path.join(a.oracle, "%s-%s.gguf" % (cfg, recipe))
        if not os.path.exists(model):
            print("skip: %s absent" % model)
            continue
        with open(os.path.join(a.shared, "oracle", cfg, "tokens.json")) as f:
            prompt = json.load(f)
        prompt = prompt["tokens"] if isinstance(prompt, dict) else prompt
        with open(os.path.join(a.shared, "oracle", cfg, "greedy.json")) as f:
            greedy = json.load(f)["greedy_tokens"]
        # Prefill of the prompt (chunks of 40, split into micro-batches), then decode the
        # reference's greedy continuation one token at a time.
        identity(ds4, tmp, model, prompt + greedy, len(prompt), "%s-%s" % (cfg, recipe),
                 splits=("1,%d" % (n_layers(model) - 1),) if recipe == "f32" else ())
    # A q2 synthetic model of Flash's layer schedule shape.
    model = synthetic_q2(a)
    toks = [rnd.randrange(1000) for _ in range(90)]
    identity(ds4, tmp, model, toks, 80, "synth-q2", splits=("3,1",))


def n_layers(model):
    # blk.<i> tensors of the GGUF's tensor table, read with the engine's own tool would be
    # circular: count them from the file's names instead.
    data = open(model, "rb").read(1 << 22)
    return len(set(re.findall(rb"blk\.(\d+)\.", data)))


def synthetic_q2(a):
    out = os.path.join(a.tmp, "synth-q2.gguf")
    if os.path.exists(out):
        return out
    with open(os.path.join(a.configs, "tiny-synth.json")) as f:
        cfg = json.load(f)
    # Large enough that the weights, not the process, dominate resident memory; every
    # matrix row a multiple of 256 for the q2 formats.
    cfg.update({"vocab_size": 1024, "dim": 1024, "moe_inter_dim": 1024, "n_routed_experts": 16,
                "n_activated_experts": 2, "n_layers": 4, "n_hash_layers": 1,
                "compress_ratios": [0, 4, 16, 4, 0], "q_lora_rank": 256, "o_lora_rank": 256})
    cj = os.path.join(a.tmp, "synth-q2.json")
    with open(cj, "w") as f:
        json.dump(cfg, f)
    r = run([os.path.join(a.bin_dir, "ds4-quantize"), "--synthetic", cj, "--recipe", "q2", "--no-mtp",
             "--seed", "3", "--out", out])
    if r.returncode != 0:
        raise RuntimeError("synthetic model: " + r.stderr.decode())
    return out


# ---- resident memory ------------------------------------------------------------------

def rank_pids(launcher_pid):
    """Rank number -> pid of the processes mpirun started."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != launcher_pid:
                continue
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            if b"OMPI_COMM_WORLD_RANK" in env:
                out[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
        except (OSError, ValueError, IndexError):
            pass
    return out


def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Server(ServerProcess):
    def __init__(self, a, ranks, extra=(), model=None):
        argv = [os.path.join(a.bin_dir, "ds4-server"), "-m", model or a.server_model, "--port", "0",
                "--ctx", "4096", "--threads", "1", "--test-hooks", *extra]
        self.ranks = ranks
        super().__init__(argv if ranks == 1 else mpirun(ranks, argv), start_timeout=120)

    def pids(self):
        return {0: self.proc.pid} if self.ranks == 1 else rank_pids(self.proc.pid)

    def chat(self, body, timeout=300):
        return super().chat(body, timeout)

    def stop(self):
        # SIGTERM to rank 0: the server shuts down as usual and the other ranks follow it.
        return super().stop(timeout=120, pid=self.pids().get(0, 0))


def request(messages, output, logprobs=False):
    return server_process.request(messages, output, logprobs, max_tokens=48)


def test_disk_cache_crosses(a):
    turn1 = [{"role": "system", "content": system_text(1)}, {"role": "user", "content": "What is two plus two?"}]
    turn2 = turn1 + [{"role": "assistant", "content": "The answer is four."},
                     {"role": "user", "content": "And three plus three?"}]
    plain = Server(a, 1)
    ref = plain.chat(request(turn2, "Six, of course.", logprobs=True))
    plain.stop()
    files = {}
    for writer, reader in [(2, 1), (1, 2)]:
        d = os.path.join(a.tmp, "kv-%d-to-%d" % (writer, reader))
        shutil.rmtree(d, ignore_errors=True)
        kv = ["--kv-disk-dir", d, "--kv-cache-min-tokens", "64"]
        w = Server(a, writer, kv)
        w.chat(request(turn1, "The answer is four."))
        rc = w.stop()
        check(rc == 0, "%d-rank server with a disk cache exits 0 on SIGTERM to rank 0 (got %s)\n%s"
              % (writer, rc, w.log()))
        saved = [int(m.group(1)) for m in re.finditer(r"kv cache: saved \S+ \S+ tokens=(\d+)", w.log())]
        check(len(saved) >= 1, "%d-rank server saved a checkpoint\n%s" % (writer, w.log()))
        files[writer] = {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}
        r = Server(a, reader, kv)
        got = r.chat(request(turn2, "Six, of course.", logprobs=True))
        r.stop()
        cached = got["usage"]["prompt_tokens_details"]["cached_tokens"]
        check(cached > 0 and cached in saved, "file written by %d rank(s) hit by %d rank(s): cached=%d saved=%s\n%s"
              % (writer, reader, cached, saved, r.log()))
        lp, lp_ref = got["choices"][0]["logprobs"]["content"], ref["choices"][0]["logprobs"]["content"]
        check(len(lp) > 3 and lp == lp_ref, "%d -> %d ranks: logprobs after the hit equal an uncached run" % (writer, reader))
    # Same conversation, same checkpoints: the files of both runs are the same bytes after the
    # 48-byte header (which holds the creation time and a CRC over it).
    check(files[1] and [v[48:] for v in files[1].values()] == [v[48:] for v in files[2].values()]
          and list(files[1]) == list(files[2]),
          "checkpoint files of the 1-rank and 2-rank servers are identical past the header (%s)" % list(files[1]))


def mapped_kib(pid, path):
    """Resident KiB of the process's mappings of `path` (the model's weights)."""
    total, inside = 0, False
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                inside = line.rstrip("\n").endswith(path)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


def test_live_reuse(a):
    """A conversation continued on a live pipeline session (prefix reuse, rewinds of the
    last turn's tail decided from rank 0's bookkeeping) answers like a fresh 1-process run."""
    turn1 = [{"role": "system", "content": system_text(3)}, {"role": "user", "content": "Name a colour."}]
    turn2 = turn1 + [{"role": "assistant", "content": "Blue, like the sea."},
                     {"role": "user", "content": "Another one?"}]
    plain = Server(a, 1)
    ref = plain.chat(request(turn2, "Green.", logprobs=True))
    plain.stop()
    for ranks in (2, 3):
        s = Server(a, ranks)
        s.chat(request(turn1, "Blue, like the sea."))
        got = s.chat(request(turn2, "Green.", logprobs=True))
        s.stop()
        check(got["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, "%d ranks: the live prefix was reused" % ranks)
        check(got["choices"][0]["logprobs"]["content"] == ref["choices"][0]["logprobs"]["content"],
              "%d ranks: logprobs of the continued conversation equal a fresh 1-process run" % ranks)


def test_parallel_sessions(a):
    """Two sessions decoded together (--parallel 2) under 2 ranks: each decode batch is cut
    between the sessions so both stages work at once; every answer's logprobs equal the same
    request run alone in one process."""
    convs = [[{"role": "system", "content": system_text(10 + i)}, {"role": "user", "content": q}]
             for i, q in enumerate(["Count to five.", "Name three rivers."])]
    outs = ["One, two, three, four, five, and that is all.", "The Nile, the Amazon and the Danube."]
    plain = Server(a, 1)
    refs = [plain.chat(request(c, o, logprobs=True)) for c, o in zip(convs, outs)]
    plain.stop()
    s = Server(a, 2, extra=("--parallel", "2"))
    got = [None, None]

    def run(i):
        got[i] = s.chat(request(convs[i], outs[i], logprobs=True))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300 * TIME_SCALE)
    rc = s.stop()
    for i in range(2):
        check(got[i] is not None and got[i]["choices"][0]["logprobs"]["content"] ==
              refs[i]["choices"][0]["logprobs"]["content"],
              "2 ranks, 2 parallel sessions: answer %d's logprobs equal a 1-process run alone" % i)
    m = re.search(r"(\d+) evaluations in (\d+) micro-batches, (\d+) of them batches of several sessions", s.log())
    check(rc == 0 and m is not None and int(m.group(3)) > 0,
          "decode batches of the two sessions were spread over the stages (%s)" % (m.group(0) if m else s.log()[-1500:]))


def test_resident_memory(a):
    """The weights each rank keeps resident (its mapping of the model file), model split in
    two, against one process; the whole process's peak is printed beside it (Open MPI itself
    adds ~16 MiB per rank, noise on a real model, not on this small one). The mapping is read
    while the processes run (polled): after the warm-up it only grows until exit."""
    model = synthetic_q2(a)
    tokens = [random.Random(9).randrange(1000) for _ in range(200)]
    tf = os.path.join(a.tmp, "rss.tokens.json")
    with open(tf, "w") as f:
        json.dump(tokens, f)
    weights, peaks = {}, {}
    for ranks in (1, 2):
        # --warm-weights: each process first reads every page of what it evaluates with (all
        # of it, or its rank's stage), so the figures are the steady state of a long run
        # (every routed expert read), not which experts a short prompt happened to pick.
        argv = [os.path.join(a.bin_dir, "ds4"), "-m", model, "--tokens-file", tf, "--dump-logits",
                os.path.join(a.tmp, "rss.bin"), "--decode-from", "190", "-t", "1", "--warm-weights"]
        p = subprocess.Popen(argv if ranks == 1 else mpirun(ranks, argv), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        w, hwm = {}, {}
        while p.poll() is None:  # read while the ranks live: they keep their pages until exit
            pids = {0: p.pid} if ranks == 1 else rank_pids(p.pid)
            for r, pid in pids.items():
                try:
                    w[r] = max(w.get(r, 0), mapped_kib(pid, model))
                    hwm[r] = max(hwm.get(r, 0), rss_kib(pid, "VmHWM"))
                except OSError:
                    pass
            time.sleep(0.01)
        err = p.stderr.read().decode()
        check(p.returncode == 0, "%d rank(s) ran for the memory check\n%s" % (ranks, err))
        weights[ranks], peaks[ranks] = w, hwm
    print("resident weights KiB: one process %s, two ranks %s; peak resident KiB: %s, %s"
          % (weights[1], weights[2], peaks[1], peaks[2]))
    one = weights[1].get(0, 0)
    for r in (0, 1):
        got = weights[2].get(r, 0)
        check(one > 0 and 0 < got <= 0.6 * one, "rank %d of 2 keeps %d KiB of weights resident, one process %d KiB "
              "(%.0f%%; <= 60%%)" % (r, got, one, 100.0 * got / max(one, 1)))


# ---- faults ---------------------------------------------------------------------------

def test_rank_cannot_load(a):
    # Two "machines" (working directories) where the model's relative path is the model on
    # one and a truncated copy on the other.
    good, bad = os.path.join(a.tmp, "host-a"), os.path.join(a.tmp, "host-b")
    for d in (good, bad):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    model = synthetic_q2(a)
    shutil.copy(model, os.path.join(good, "m.gguf"))
    with open(model, "rb") as f, open(os.path.join(bad, "m.gguf"), "wb") as g:
        g.write(f.read(os.path.getsize(model) // 2))
    tf = os.path.join(a.tmp, "fault.tokens.json")
    with open(tf, "w") as f:
        json.dump([1, 2, 3, 4], f)
    ds4 = os.path.join(a.bin_dir, "ds4")
    argv = [ds4, "-m", "m.gguf", "--tokens-file", tf, "--dump-logits", os.path.join(a.tmp, "fault.bin")]
    cmd = [MPIEXEC, "--oversubscribe", "-np", "1", "-wdir", good, *argv, ":", "-np", "1", "-wdir", bad, *argv]
    r = run(cmd, timeout=120)
    err = r.stderr.decode()
    check(r.returncode != 0 and re.search(r"rank 1 \([^)]*\): cannot load layers \d+\.\.\d+", err) is not None,
          "a rank that cannot load its part: every rank exits, the error names it (exit %d)\n%s" % (r.returncode, err))
    r = run(mpirun(2, [*argv[:2], model, *argv[3:], "--layer-split", "4,1"]), timeout=120)
    err = r.stderr.decode()
    check(r.returncode != 0 and "--layer-split counts add up to 5" in err,
          "a --layer-split that does not add up is refused (exit %d)\n%s" % (r.returncode, err))


def test_kill_rank_mid_request(a):
    s = Server(a, 2)
    pids = s.pids()
    check(sorted(pids) == [0, 1], "two ranks found: %s" % pids)
    body = {"messages": [{"role": "user", "content": system_text(4, 30)}], "max_tokens": 4000,
            "temperature": 1.0, "stream": False}
    errors = []

    def client():
        try:
            s.chat(body, timeout=120)
        except Exception as e:  # the server goes away mid-answer
            errors.append(e)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    time.sleep(2 * TIME_SCALE)  # the answer is being generated
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.time()
    try:
        s.proc.wait(60 * TIME_SCALE)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
        s.proc.kill()
    s.pump.join(10)
    exited = time.time() - t0

    def rank_alive(p):
        try:
            return open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    # mpirun can return while the surviving rank is still being torn down (its SIGTERM/SIGKILL
    # sequence runs asynchronously), so give the remaining ranks a bounded grace period.
    deadline = time.time() + 15 * TIME_SCALE
    while any(rank_alive(p) for p in pids.values()) and time.time() < deadline:
        time.sleep(0.1)
    alive = [r for r, p in pids.items() if rank_alive(p)]
    check(not hung and not alive, "all ranks exit after rank 1 is killed (mpirun after %.1f s, ranks after %.1f s; alive: %s)"
          % (exited, time.time() - t0, alive))
    check(re.search(r"rank 1\b", s.log()) is not None and s.proc.returncode != 0,
          "the error names rank 1 (exit %s)\n%s" % (s.proc.returncode, s.log()[-2000:]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--oracle", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared"))
    ap.add_argument("--server-model", default=None)
    ap.add_argument("--only", default="")
    a = ap.parse_args()
    for k in ("bin_dir", "tmp", "oracle", "configs", "shared"):
        setattr(a, k, os.path.abspath(getattr(a, k)))
    os.makedirs(a.tmp, exist_ok=True)
    a.server_model = a.server_model or os.path.join(a.oracle, "..", "synth", "tiny-real-vocab.gguf")
    tests = [test_identity, test_disk_cache_crosses, test_live_reuse, test_parallel_sessions, test_resident_memory,
             test_rank_cannot_load,
             test_kill_rank_mid_request]
    for t in tests:
        if a.only and a.only not in t.__name__:
            continue
        print("==", t.__name__, flush=True)
        try:
            t(a)
        except Exception as e:
            check(False, "%s raised %r" % (t.__name__, e))
    if FAILURES:
        print("%d failure(s)" % len(FAILURES))
        sys.exit(1)
    print("all passed")


if __name__ == "__main__":
    main()
