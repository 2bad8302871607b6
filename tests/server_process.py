"""What the Python tests that start ds4-server share: the process with its stderr log and
port, chat requests, shutdown, and the seeded request texts they send.

Import it with tests/ on sys.path (the tests do that from their own folder)."""
import json
import os
import random
import re
import signal
import subprocess
import threading
import urllib.request

# Sanitizer builds run slower (scripts/sanitize.sh): waits are scaled by this.
TIME_SCALE = float(os.environ.get("DS4_TEST_TIME_SCALE", "1"))


class ServerProcess:
    """ds4-server started with `argv` (which asks for --port 0): waits for its "listening on"
    line, keeps every stderr line, and raises when it does not start within `start_timeout`
    seconds (scaled)."""

    def __init__(self, argv, start_timeout=60):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.lines = []
        self.port = None
        ready = threading.Event()

        def pump():
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(line)
                m = re.search(r"listening on http://[^:]+:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self.pump = threading.Thread(target=pump, daemon=True)
        self.pump.start()
        ready.wait(start_timeout * TIME_SCALE)
        if self.port is None:
            raise RuntimeError("server did not start:\n" + self.log())

    def log(self):
        return "\n".join(self.lines)

    def chat(self, body, timeout=120):
        req = urllib.request.Request("http://127.0.0.1:%d/v1/chat/completions" % self.port,
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout * TIME_SCALE) as r:
            return json.loads(r.read())

    def stop(self, sig=signal.SIGTERM, timeout=60, pid=None):
        """Sends `sig` to `pid` (default: the started process; 0: none) and waits for the
        started process to exit: its exit code, or "hang" (then it is killed)."""
        target = self.proc.pid if pid is None else pid
        if target:
            os.kill(target, sig)
        try:
            rc = self.proc.wait(timeout * TIME_SCALE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "hang"
        self.pump.join(10)
        return rc


def system_text(seed, n=40):
    """A system prompt of n seeded sentences: different seeds give different prefixes."""
    rnd = random.Random(seed)
    words = ["alpha", "river", "stone", "orbit", "cedar", "quartz", "signal", "harbor", "ember"]
    return " ".join("%s %d." % (rnd.choice(words), i) for i in range(n))


def request(messages, output, logprobs=False, max_tokens=64):
    """A non-thinking chat request whose answer is forced to `output` (--test-hooks)."""
    body = {"messages": messages, "thinking": False, "max_tokens": max_tokens,
            "ds4_test_output": output}
    if logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = 5
    return body
