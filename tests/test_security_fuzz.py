"""bench/security_fuzz.py with a small N: random and mutated requests against a live server (its own
process, real HTTP) get no 5xx, no traceback, and never run the planted pickle."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "security_fuzz.py"


def test_fuzzing_a_live_server_finds_no_5xx_and_no_traceback():
    run = subprocess.run([sys.executable, str(SCRIPT), "200", "--seed", "7"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    counts = dict(re.findall(r"(\dxx|no answer) (\d+)", run.stdout.split("by class:")[1].splitlines()[0]))
    assert counts["5xx"] == "0" and counts["no answer"] == "0"
    assert int(counts["2xx"]) > 10 and int(counts["4xx"]) > 50  # both the happy path and the refusals ran
    assert "marker file created: False" in run.stdout and "tracebacks in the server log: 0" in run.stdout
