"""Handling one completion request: admit, read, validate, route, then run a strategy or pass
it through, under the request's deadline and with cancellation when the client leaves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any, AsyncIterator, Callable, Sequence

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from redline.errors import SpecError
from redline.ledger import Budget, CallRecord
from redline.loop import Solver, build_solver
from redline.runtime import Runtime
from redline.server import passthrough, streaming
from redline.server.errors import APIError, spec_error
from redline.server.limits import ClientDisconnected, ConcurrencyGate, Guard, check_limits, read_json
from redline.server.metrics import Metrics
from redline.server.record import RequestRecord
from redline.server.responses import (Kind, ResponseBuilder, answer_text, finish_reason, redline_extra, total_of,
                                      usage_dict)
from redline.server.routing import Route, chat_question, resolve_route
from redline.server.schemas import ChatRequest, CompletionBase, CompletionRequest, parse_request
from redline.server.settings import ServerSettings
from redline.types import Problem, Result


@dataclass
class ServerState:
    runtime: Runtime
    settings: ServerSettings
    gate: ConcurrencyGate
    metrics: Metrics


def plan_solvers(route: Route, runtime: Runtime, request: CompletionBase, settings: ServerSettings) -> list[Solver]:
    """One solver per requested choice (seeds differ), each within its share of the token budget.

    The client's max_tokens caps every internal generation call; a spec may lower the token
    budget (max_tokens_total=...) but not raise it above the server's. The runtime is marked as
    serving clients, so every verifier spec is checked (`redline.trust`) before it is built.
    """
    assert route.spec is not None
    base = replace(runtime, max_tokens=request.token_limit or runtime.max_tokens, clients=True)
    cap = settings.max_request_tokens // request.n if settings.max_request_tokens else None
    solvers = [build_solver(route.spec, replace(base, seed=base.seed + i), Budget(max_tokens_total=cap))
               for i in range(request.n)]
    asked = solvers[0].budget.max_tokens_total
    if cap is not None and asked is not None and asked > cap:
        raise APIError(400, f"max_tokens_total={asked} exceeds this server's per-request token budget of "
                            f"{settings.max_request_tokens} (split over n={request.n} choices: {cap} each)", "model")
    return solvers


async def solve_all(solvers: Sequence[Solver], problem: Problem,
                    on_record: Callable[[CallRecord], None] | None = None) -> list[Result]:
    return list(await asyncio.gather(*(s.solve(problem, on_record) for s in solvers)))


def question_of(request: CompletionBase) -> str:
    if isinstance(request, ChatRequest):
        return chat_question(request.messages)
    assert isinstance(request, CompletionRequest)
    if not request.prompt_text.strip():
        raise APIError(400, "prompt: a strategy needs a non-empty prompt (the question)", "prompt")
    return request.prompt_text.strip()


async def handle(request: Request, state: ServerState, kind: Kind) -> Response:
    record: RequestRecord = request.scope["redline.record"]
    settings = state.settings
    record.release = state.gate.enter()
    body = await read_json(request, settings.max_body_bytes)
    req = parse_request(ChatRequest if kind == "chat" else CompletionRequest, body)
    record.model, record.stream = req.model, req.stream
    check_limits(req, settings)
    try:
        route = resolve_route(req.model, req.redline, state.runtime)
        record.strategy = route.label
        solvers = [] if route.passthrough else plan_solvers(route, state.runtime, req, settings)
    except SpecError as e:
        raise spec_error(e) from None
    builder = ResponseBuilder(kind, req.model)
    if route.passthrough:
        return await _passthrough(request, state, req, passthrough.forward_body(body), builder, record)
    problem = Problem(question_of(req))
    guard = Guard(request, settings.timeout_s)
    if req.stream:
        chunks = _strategy_stream(guard, solvers, problem, req, builder, record)
        return StreamingResponse(streaming.event_stream(chunks, record, guard), media_type="text/event-stream",
                                 headers=streaming.HEADERS)
    try:
        results = await guard.run(solve_all(solvers, problem))
    except ClientDisconnected:
        record.cancelled = True
        return Response(status_code=499)
    finally:
        guard.close()
    record.count_usage(usage_dict(total_of(results)))
    return JSONResponse(builder.from_results(solvers[0].spec, results, req.wants_trace))


async def _strategy_stream(guard: Guard, solvers: Sequence[Solver], problem: Problem, req: CompletionBase,
                           builder: ResponseBuilder, record: RequestRecord) -> AsyncIterator[bytes]:
    for chunk in streaming.opening(builder, req.n):
        yield chunk
    results: list[Result] = []
    async for item in streaming.relay(guard, lambda emit: solve_all(solvers, problem, emit)):
        if isinstance(item, streaming.Finished):
            results = item.value
        else:
            yield streaming.progress(builder, item)
    usage = total_of(results)
    record.count_usage(usage_dict(usage))
    extra = redline_extra(solvers[0].spec, results, req.wants_trace)
    for chunk in streaming.closing(builder, [answer_text(r) for r in results], [finish_reason(r) for r in results],
                                   usage, req.include_usage, extra):
        yield chunk


async def _passthrough(request: Request, state: ServerState, req: CompletionBase, body: dict[str, Any],
                       builder: ResponseBuilder, record: RequestRecord) -> Response:
    backend = state.runtime.backend
    native = passthrough.native(backend, req)
    generation = None if native else passthrough.generation_request(req, state.runtime.max_tokens)
    guard = Guard(request, state.settings.timeout_s)
    if req.stream:
        chunks = (_native_stream(guard, backend, body, record) if native
                  else _generated_stream(guard, backend, generation, req, builder, record))
        return StreamingResponse(streaming.event_stream(chunks, record, guard), media_type="text/event-stream",
                                 headers=streaming.HEADERS)
    try:
        if native:
            data = await guard.run(passthrough.call_native(backend, body))
        else:
            completions, usage = await guard.run(passthrough.generate(backend, generation))
            data = passthrough.completion_body(builder, completions, usage)
    except ClientDisconnected:
        record.cancelled = True
        return Response(status_code=499)
    finally:
        guard.close()
    record.count_usage(data.get("usage"))
    return JSONResponse(data)


async def _native_stream(guard: Guard, backend: Any, body: dict[str, Any],
                         record: RequestRecord) -> AsyncIterator[bytes]:
    async for item in streaming.relay(guard, lambda emit: passthrough.pump_native(backend, body, emit)):
        if not isinstance(item, streaming.Finished):
            record.count_usage(item.get("usage"))
            yield streaming.sse(item)


async def _generated_stream(guard: Guard, backend: Any, generation: Any, req: CompletionBase,
                            builder: ResponseBuilder, record: RequestRecord) -> AsyncIterator[bytes]:
    for chunk in streaming.opening(builder, req.n):
        yield chunk
    completions, usage = await guard.run(passthrough.generate(backend, generation))
    record.count_usage(usage_dict(usage))
    for chunk in streaming.closing(builder, [c.text for c in completions], [c.finish_reason for c in completions],
                                   usage, req.include_usage):
        yield chunk
