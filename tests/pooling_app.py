"""A small server that speaks vLLM's /pooling JSON for a process reward model, for `remote-prm` tests.

The request and response models follow vLLM's own classes (vllm/entrypoints/pooling/pooling/protocol.py:
PoolingCompletionRequest's fields, PoolingResponseData, PoolingResponse; UsageInfo), and the rows
follow `StepPool`: one softmaxed [p_negative, p_positive] row per `<extra_0>` in the input. The
"model" scores a step by a rule the tests can recompute (`step_probability`); `PoolingControl`
makes it misbehave.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

STEP_TAG = "<extra_0>"
MODEL = "Qwen/Qwen2.5-Math-PRM-7B"


class PoolingCompletionRequest(BaseModel):
    model: str | None = None
    user: str | None = None
    input: list[int] | list[list[int]] | str | list[str]
    truncate_prompt_tokens: int | None = Field(None, ge=-1)
    add_special_tokens: bool = True
    encoding_format: Literal["float", "base64", "bytes", "bytes_only"] = "float"
    use_activation: bool | None = None
    task: str | None = None


class PoolingResponseData(BaseModel):
    index: int
    object: str = "pooling"
    data: list[list[float]] | list[float] | str


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0


class PoolingResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"pool-{uuid.uuid4().hex}")
    object: str = "list"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    data: list[PoolingResponseData]
    usage: UsageInfo


def step_probability(step: str) -> float:
    """The test model's P(step correct): low for steps that say 'wrong', else falling with length."""
    return 0.05 if "wrong" in step else round(1 / (1 + len(step) / 40), 6)


@dataclass
class PoolingControl:
    fault: Literal["", "drop_row", "drop_result", "no_data", "logits", "not_json"] = ""
    inputs: list[list[str]] = field(default_factory=list)  # the texts of each request
    computed: list[list[float]] = field(default_factory=list)  # p_positive per step, per input, in order

    def reset(self, fault: str = "") -> None:
        self.fault = fault  # type: ignore[assignment]
        self.inputs.clear()
        self.computed.clear()


def _rows(text: str) -> list[list[float]]:
    """StepPool on the test model: a row at each step tag, for the step text before it."""
    assistant = text.rsplit("<|im_start|>assistant\n", 1)[-1]
    steps = assistant.split(STEP_TAG)[:-1]
    return [[round(1 - p, 6), p] for p in (step_probability(s) for s in steps)]


def create_pooling_app(control: PoolingControl, model: str = MODEL) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "vllm"}]}

    @app.post("/pooling")
    async def pooling(request: PoolingCompletionRequest) -> Any:
        if request.model != model:
            return JSONResponse({"error": {"message": f"The model `{request.model}` does not exist.",
                                           "type": "NotFoundError", "code": 404}}, status_code=404)
        texts = [request.input] if isinstance(request.input, str) else request.input
        assert all(isinstance(t, str) for t in texts)
        control.inputs.append(list(texts))  # type: ignore[arg-type]
        rows = [_rows(t) for t in texts]  # type: ignore[arg-type]
        control.computed += [[r[1] for r in rs] for rs in rows]
        if control.fault == "not_json":
            return JSONResponse("oops", status_code=200)
        if control.fault == "no_data":
            return {"object": "list", "model": model, "results": rows}
        if control.fault == "drop_row":
            rows[-1] = rows[-1][:-1]
        if control.fault == "drop_result":
            rows = rows[:-1]
        if control.fault == "logits":
            rows = [[[-2.0, 3.5] for _ in rs] for rs in rows]
        tokens = sum(len(t.split()) for t in texts)  # type: ignore[union-attr]
        response = PoolingResponse(model=model, data=[PoolingResponseData(index=i, data=r) for i, r in enumerate(rows)],
                                   usage=UsageInfo(prompt_tokens=tokens, total_tokens=tokens))
        return response.model_dump()

    return app
