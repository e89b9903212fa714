"""A small server that speaks vLLM's /pooling JSON for a process reward model, for `remote-prm` tests.

The request and response models follow vLLM's own classes (vllm/entrypoints/pooling/pooling/protocol.py:
PoolingCompletionRequest's fields, PoolingResponseData, PoolingResponse; UsageInfo;
TokenizeCompletionRequest and TokenizeResponse for POST /tokenize, DetokenizeRequest for
/detokenize). Two models:
- by default a Qwen2.5-Math-PRM stand-in whose rows follow `StepPool`: one softmaxed
  [p_negative, p_positive] row per `<extra_0>` in the input; it scores a step by a rule the tests
  can recompute (`step_probability`);
- with `prm_dir`, a real token-classification folder (what `redline train prm --export vllm`
  writes) run with transformers, answering `token_classify` as vLLM's pooling runner does: one
  softmaxed row per token (ALL pooling), or with `PoolingControl.step_tag_id` set, only the rows
  at that token (STEP pooling, `--pooler-config '{"tok_pooling_type": "STEP", ...}'`). Inputs may
  be texts (tokenized with special tokens, as vLLM does) or token id lists.
`PoolingControl` makes either misbehave.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
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


class TokenizeCompletionRequest(BaseModel):
    model: str | None = None
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool | None = False


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(BaseModel):
    model: str | None = None
    tokens: list[int]


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
    inputs: list[list[Any]] = field(default_factory=list)  # the inputs (texts or token ids) of each request
    tasks: list[str | None] = field(default_factory=list)  # the task each request asked for
    computed: list[list[float]] = field(default_factory=list)  # p_positive per step, per input, in order
    step_tag_id: int | None = None  # real model: STEP pooling at this token (None: ALL pooling)

    def reset(self, fault: str = "", step_tag_id: int | None = None) -> None:
        self.fault = fault  # type: ignore[assignment]
        self.step_tag_id = step_tag_id
        self.inputs.clear()
        self.tasks.clear()
        self.computed.clear()


def _rows(text: str) -> list[list[float]]:
    """StepPool on the test model: a row at each step tag, for the step text before it."""
    assistant = text.rsplit("<|im_start|>assistant\n", 1)[-1]
    steps = assistant.split(STEP_TAG)[:-1]
    return [[round(1 - p, 6), p] for p in (step_probability(s) for s in steps)]


class TokenClassifier:
    """A real token-classification PRM folder on transformers, float32 on CPU."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        quantisation = json.loads((path / "config.json").read_text()).get("quantization_config") or {}
        if quantisation.get("quant_method") == "gguf":  # as vLLM refuses it at start-up
            raise ValueError("Unknown quantization method: gguf")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForTokenClassification.from_pretrained(path, dtype="float32").eval()

    def rows(self, ids: list[int], step_tag_id: int | None) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            probs = torch.softmax(self.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
        return [[round(float(p), 6) for p in row] for i, row in zip(ids, probs) if step_tag_id in (None, i)]


def create_pooling_app(control: PoolingControl, model: str = MODEL, prm_dir: Path | None = None) -> FastAPI:
    app = FastAPI()
    real = TokenClassifier(prm_dir) if prm_dir is not None else None

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "vllm"}]}

    @app.post("/pooling")
    async def pooling(request: PoolingCompletionRequest) -> Any:
        if request.model != model:
            return JSONResponse({"error": {"message": f"The model `{request.model}` does not exist.",
                                           "type": "NotFoundError", "code": 404}}, status_code=404)
        single = isinstance(request.input, str) or (request.input and isinstance(request.input[0], int))
        inputs = [request.input] if single else request.input
        control.inputs.append(list(inputs))  # type: ignore[arg-type]
        control.tasks.append(request.task)
        if real is not None:
            ids = [real.tokenizer(t)["input_ids"] if isinstance(t, str) else t for t in inputs]
            rows = [real.rows(i, control.step_tag_id) for i in ids]  # type: ignore[arg-type]
        else:
            assert all(isinstance(t, str) for t in inputs)
            rows = [_rows(t) for t in inputs]  # type: ignore[arg-type]
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
        tokens = sum(len(t.split()) if isinstance(t, str) else len(t) for t in inputs)  # type: ignore[union-attr]
        response = PoolingResponse(model=model, data=[PoolingResponseData(index=i, data=r) for i, r in enumerate(rows)],
                                   usage=UsageInfo(prompt_tokens=tokens, total_tokens=tokens))
        return response.model_dump()

    @app.post("/tokenize")
    async def tokenize(request: TokenizeCompletionRequest) -> Any:
        if real is None or request.model != model:
            return JSONResponse({"error": {"message": f"The model `{request.model}` does not exist.",
                                           "type": "NotFoundError", "code": 404}}, status_code=404)
        tokens = real.tokenizer(request.prompt, add_special_tokens=request.add_special_tokens)["input_ids"]
        strs = real.tokenizer.convert_ids_to_tokens(tokens) if request.return_token_strs else None
        return TokenizeResponse(count=len(tokens), max_model_len=real.model.config.max_position_embeddings,
                                tokens=tokens, token_strs=strs).model_dump()

    @app.post("/detokenize")
    async def detokenize(request: DetokenizeRequest) -> Any:
        if real is None or request.model != model:
            return JSONResponse({"error": {"message": f"The model `{request.model}` does not exist.",
                                           "type": "NotFoundError", "code": 404}}, status_code=404)
        return {"prompt": real.tokenizer.decode(request.tokens)}

    return app
