"""redline against the real engines (vLLM's CPU build, llama.cpp's server): `bench/real_engines.py --quick`.

Runs only where `make peers` set the engines up (they live outside the project's environment, and
CI does not install them); skipped with that reason elsewhere. Select it alone with `-k real_engines`.
Engine start-ups and all make it many CPU-minutes, so it also waits for REDLINE_REAL_ENGINES=1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from peers import default_dir  # noqa: E402


@pytest.mark.skipif(not (default_dir() / "peers.json").exists(),
                    reason=f"the real engines are not installed ({default_dir()}/peers.json missing): run `make peers`")
@pytest.mark.skipif(os.environ.get("REDLINE_REAL_ENGINES") != "1",
                    reason="the real engines take many CPU-minutes: set REDLINE_REAL_ENGINES=1 to run them")
def test_real_engines_quick(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "real_engines.py"), "--quick", "--logs", str(tmp_path)],
                         capture_output=True, text=True, timeout=1200)
    table = run.stdout[run.stdout.find("redline against real engines"):]
    assert run.returncode == 0, f"{table}\n{run.stderr[-2000:]}"
    passed = [line for line in table.splitlines() if " PASS " in line]
    for check in ("strategy cot", "strategy mcts", "n=4", "logprobs top=3", "stop", "seed", "cache same prompt",
                  "redline serve", "serve pass-through", "replica kill eval", "replica comes back", "prm pooling"):
        assert any(line.startswith(check) for line in passed), f"{check} did not pass:\n{table}"
