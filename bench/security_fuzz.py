"""Fuzz a live `redline serve` (scripted backend, in its own process) with random and mutated requests.

Each request is one of: a valid strategy spec; a valid spec mutated by inserting, deleting or
replacing pieces (grammar characters, control characters, huge numbers, NaN, paths, operator-only
verifiers, `trust_remote_code`); the same in `extra_body.redline`; a body whose fields have random
JSON types; a valid body with flipped bytes; or a deep / huge spec. Among the paths is a pickle whose
payload would create a marker file.

Prints status counts by class and by code, the most common error messages, and requests/s. Exits 1
if any request got a 5xx (or an in-band server_error in a stream) or no answer, if a response or the
server's log holds a traceback, or if the marker file exists (a client made the server run code).

    .venv/bin/python bench/security_fuzz.py [N=5000] [--seed 0] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import pathlib
import pickle
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from redline.backends.base import LedgeredBackend
from redline.backends.scripted import ScriptedBackend
from redline.runtime import Runtime
from redline.server import ServerSettings
from redline.server.background import running_server

KEY = "fuzz-key"
ANSWER = "Step 1: 2 + 2 = 4.\nStep 2: 4 * 3 = 12.\nThe answer is 12."
MESSAGES = [{"role": "user", "content": "What is (2 + 2) * 3?"}]
SPECS = ["cot", "sc:n=3", "bon:n=2", "bon:n=2,verifier=arith,agg=prod", "bon:n=2,verifier=mine", "refine",
         "beam:n=2,width=1,max_depth=2", "stepco:max_iters=1", "adaptive:k=2,max_rounds=1",
         "mcts:sims=2,k=2,max_depth=2",
         "bon:n=2,verifier=(ensemble:arith+judge,mode=mean,weights=(1;2))", "cot:max_tokens_total=500", "none"]
PIECES = ["(", ")", "((", "))", ",", "+", ":", "=", "/", "\\", " ", "\x00", "\x1f", "\x7f", "é", "n=", "=-1", "=nan",
          "=inf", "=1e400", "=" + "9" * 40, ",n=3", "verifier=", "learned:", "learned:EVIL", "hf-prm:/",
          "hf-prm:Qwen/Qwen2.5-Math-PRM-7B", "trust_remote_code=true", "remote-prm:m,base_url=http://10.0.0.1",
          "../..", "~/x", "ensemble:", "mine", "mine:path=x", "judge", "arith", "+boost", "+principles:k=2"]
JSON_VALUES = [None, True, False, 0, -1, 2**70, 1.5, -1e308, "", "x", "\u0000", [], [1, "a"], {}, {"a": {"b": []}}]
FIELDS = ["model", "messages", "n", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stream", "stop",
          "seed", "redline", "prompt", "tools", "stream_options"]


def serve(log_path: str, urls: "multiprocessing.Queue[str]", stop: "multiprocessing.Event") -> None:
    """The server process: scripted backend, an operator-declared verifier, every log line to `log_path`."""
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logging.getLogger("redline").addHandler(handler)
    logging.getLogger("redline").setLevel(logging.INFO)
    runtime = Runtime(backend=LedgeredBackend(ScriptedBackend([ANSWER])), max_tokens=48)
    runtime.declare_verifier("mine", "arith:neutral=0.5")
    settings = ServerSettings(api_keys=(KEY,), max_n=3, max_tokens_limit=256, timeout_s=30, max_concurrency=256)
    with running_server(runtime, settings) as url:
        logging.getLogger("uvicorn").addHandler(handler)  # after uvicorn configured its loggers (no propagation)
        urls.put(url)
        stop.wait()


def mutate(rng: random.Random, text: str, evil: str) -> str:
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(text))
        piece = rng.choice(PIECES).replace("EVIL", evil)
        action = rng.random()
        if action < 0.5:
            text = text[:at] + piece + text[at:]
        elif action < 0.75:
            text = text[:at] + text[at + rng.randint(1, 4):]
        else:
            text = text[:at] + piece + text[at + len(piece):]
    return text


def make_request(rng: random.Random, evil: str) -> tuple[str, bytes]:
    """(kind, body bytes) of one random request."""
    kind = rng.choice(["valid", "mutated", "mutated", "mutated", "redline", "types", "bytes", "extreme"])
    spec = rng.choice(SPECS)
    body: dict = {"model": spec + "/scripted", "messages": MESSAGES}
    if kind == "mutated":
        body["model"] = mutate(rng, spec, evil) + rng.choice(["/scripted", "/scripted", "", "/other"])
    elif kind == "redline":
        body["model"] = "scripted"
        body["redline"] = {"strategy": mutate(rng, spec, evil) if rng.random() < 0.7 else spec}
        if rng.random() < 0.5:
            body["redline"]["params"] = {rng.choice(["n", "verifier", "trust_remote_code", "n=1,verifier", "path"]):
                                         rng.choice([2, "mine", True, f"learned:{evil}", "x" * 5000, 1.5])}
    elif kind == "types":
        for field in rng.sample(FIELDS, rng.randint(1, 3)):
            body[field] = rng.choice(JSON_VALUES)
    elif kind == "extreme":
        depth = rng.choice([17, 1000, 10_000])
        body["model"] = rng.choice([
            "bon:verifier=" + "(" * depth + "arith" + ")" * depth + "/scripted",
            "bon:n=1,verifier=" + "a" * rng.choice([5000, 999_000]) + "/scripted",
            f"bon:n=1,verifier=(learned:{evil})/scripted"])
    data = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        raw = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        data = bytes(raw)
    if kind != "bytes" and rng.random() < 0.3:
        data = data.replace(b'"model"', b'"stream": true, "model"', 1)
    return kind, data


def fuzz(url: str, n: int, seed: int, concurrency: int, evil: str) -> tuple[Counter, Counter, Counter, list[str]]:
    """Send `n` requests; (status counts, counts by kind and class, error messages, problems found)."""
    statuses: Counter = Counter()
    by_kind: Counter = Counter()
    messages: Counter = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def one(i: int, client: httpx.Client) -> None:
        kind, data = make_request(random.Random(seed * 1_000_003 + i), evil)
        try:
            response = client.post("/v1/chat/completions", content=data, headers=headers)
            status, text = response.status_code, response.text
        except httpx.HTTPError as e:
            status, text = 0, f"no answer: {type(e).__name__}"
        with lock:
            statuses[status] += 1
            by_kind[kind, f"{status // 100}xx" if status else "none"] += 1
            if 400 <= status < 500:
                try:
                    messages[response.json()["error"]["message"][:70]] += 1
                except (ValueError, KeyError, TypeError):
                    problems.append(f"request {i}: a {status} without an OpenAI error body")
            if status >= 500 or status == 0 or "server_error" in text or "Traceback" in text:
                problems.append(f"request {i} ({kind}): {status} {text[:200]}")

    def worker(indices: range) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in indices:
                one(i, client)

    chunks = [range(k, n, concurrency) for k in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, chunks))
    return statuses, by_kind, messages, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("n", nargs="?", type=int, default=5000, help="how many requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    args = parser.parse_args()

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="redline-fuzz-"))
    marker, evil, log_path = tmp / "pwned", tmp / "evil.joblib", tmp / "server.log"
    evil.write_bytes(pickle.dumps(_Touch(marker)))
    urls: multiprocessing.Queue[str] = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(str(log_path), urls, stop), daemon=True)
    server.start()
    try:
        url = urls.get(timeout=120)
        t0 = time.perf_counter()
        statuses, by_kind, messages, problems = fuzz(url, args.n, args.seed, args.concurrency, str(evil))
        wall = time.perf_counter() - t0
        alive = httpx.get(url + "/health", timeout=10).json() == {"status": "ok"}
    finally:
        stop.set()
        server.join(timeout=15)
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    if "Traceback" in log_text:
        problems.append(f"the server log holds {log_text.count('Traceback')} traceback(s)")
    if marker.exists():
        problems.append("the pickle payload ran: the marker file exists")
    if not alive:
        problems.append("the server did not answer /health after the run")

    classes = Counter({f"{s // 100}xx" if s else "no answer": 0 for s in (200, 400, 500, 0)})
    for status, count in statuses.items():
        classes[f"{status // 100}xx" if status else "no answer"] += count
    print(f"{args.n} requests in {wall:.1f} s ({args.n / wall:.0f}/s, {args.concurrency} client threads, "
          f"seed {args.seed})")
    print("by class: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())))
    print("by status: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    kinds = sorted({k for k, _ in by_kind})
    print("by kind: " + "; ".join(f"{k}: " + ", ".join(f"{c} {v}" for (kk, c), v in sorted(by_kind.items()) if kk == k)
                                  for k in kinds))
    print("most common 4xx messages:")
    for message, count in messages.most_common(8):
        print(f"  {count:>5}  {message}")
    print(f"server alive after the run: {alive}; marker file created: {marker.exists()}; "
          f"tracebacks in the server log: {log_text.count('Traceback')}")
    for problem in problems[:20]:
        print("PROBLEM:", problem)
    return 1 if problems else 0


class _Touch:
    """Unpickling it creates `marker`: what an attacker's payload would do."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.marker,))


if __name__ == "__main__":
    sys.exit(main())
