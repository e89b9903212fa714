"""Every strategy end to end on the real embedded model (small settings): a result comes
back, the trace is JSON, and the usage by phase adds up to the ledger's records."""

from __future__ import annotations

import json

import pytest

from redline.loop import build_solver
from redline.runtime import Runtime
from redline.types import Problem, Result

SPECS = [
    "cot",
    "sc:n=3",
    "bon:n=2,mode=weighted",
    "stepco:max_iters=2,threshold=0.99",
    "beam:n=2,width=2,max_depth=2,step_tokens=40",
    "refine:iterations=1,critique_tokens=32",
    "adaptive:k=2,max_rounds=1,tau=1.0",
    "adaptive:mode=sample,k=2,max_samples=4",
]
PROBLEM = Problem("Sam has 3 bags with 4 apples each. How many apples does he have?", answer="12")


@pytest.fixture(scope="module")
def runtime(local_backend):
    return Runtime(backend=local_backend, max_tokens=48, seed=0)


@pytest.mark.model
@pytest.mark.parametrize("spec", SPECS)
async def test_strategy_runs_on_the_embedded_model(spec, runtime):
    records = []
    result = await build_solver(spec, runtime).solve(PROBLEM, on_record=records.append)
    assert isinstance(result, Result) and result.solution is not None and result.candidates
    assert result.stopped is None
    trace = json.loads(json.dumps(result.trace))
    assert trace["kind"] == "solve" and trace["children"]
    json.dumps(result.to_dict())
    total = result.total
    assert total.calls == len(records) > 0
    assert total.prompt_tokens == sum(r.prompt_tokens for r in records)
    assert total.completion_tokens == sum(r.completion_tokens for r in records)
    assert set(result.usage) == {r.phase for r in records}
    for phase, usage in result.usage.items():
        assert usage.calls == sum(1 for r in records if r.phase == phase)
