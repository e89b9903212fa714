"""Several HTTP endpoints serving one model, used as one: least-loaded routing, fail-over, health.

The rules, in the order a request meets them:
- it goes to the endpoint with the fewest requests in flight among those in service (ties: the one
  with fewer calls so far); when none is in service, among all of them, so work never stalls on a
  health check;
- a connection error, timeout or 5xx is a failure of that endpoint; `fail_after` failures in a row
  take it out of service, and from then on it is probed (`probe`, e.g. GET /v1/models) every
  `probe_interval_s` until a probe succeeds, which puts it back;
- a failed request is tried again at once on an endpoint it has not tried yet; once it has tried
  them all, it waits before the next round (0.5 s doubling to 8 s, with jitter, as the openai
  client does), at most `max_retries` retries in all. 408/409/429 are retried the same way but do
  not count against the endpoint (it is busy, not broken); other errors are the caller's to handle.

Counts per endpoint (calls, errors, in flight, latency) live in `EndpointStats`, which the server's
/metrics and the benches read; the ledger records which endpoint served each call.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Awaitable, Callable, Collection, Generic, Sequence, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")
C = TypeVar("C")

BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 8.0


class Outcome(Enum):
    """What an attempt's exception means for routing."""

    FAIL = "fail"    # the endpoint is broken (connection, timeout, 5xx): retry elsewhere, count against it
    BUSY = "busy"    # the endpoint is overloaded (408/409/429): retry elsewhere, do not count against it
    RAISE = "raise"  # the request itself is wrong (4xx): no retry


def normalise_base_url(url: str) -> str:
    """'http://host:8000' -> 'http://host:8000/v1'; URLs with a path are kept as given."""
    url = url.strip().rstrip("/")
    return url + "/v1" if urlsplit(url).path in ("", "/") else url


def parse_base_urls(value: str | Sequence[str] | None) -> list[str]:
    """Endpoints from a repeatable option and/or comma-separated text, normalised, duplicates dropped."""
    items = [value] if isinstance(value, str) else list(value or ())
    urls = [normalise_base_url(u) for item in items for u in item.split(",") if u.strip()]
    return list(dict.fromkeys(urls))


@dataclass
class EndpointStats:
    """One endpoint's counts (mean latency: `latency_sum_s / ok`)."""

    url: str
    calls: int = 0          # attempts started
    errors: int = 0         # attempts that failed (any error)
    in_flight: int = 0
    in_service: bool = True
    consecutive_failures: int = 0
    latency_sum_s: float = 0.0
    taken_out: int = 0      # times it was taken out of service

    @property
    def ok(self) -> int:
        return self.calls - self.errors - self.in_flight


@dataclass
class Endpoint(Generic[C]):
    client: C
    stats: EndpointStats


class AllAttemptsFailed(Exception):
    """Every attempt failed; `last` is the final error."""

    def __init__(self, last: BaseException, attempts: int) -> None:
        super().__init__(str(last))
        self.last, self.attempts = last, attempts


class EndpointPool(Generic[C]):
    """Routes attempts over endpoints (each with its own `client`) by the rules in the module doc."""

    def __init__(self, name: str, urls: Sequence[str], make_client: Callable[[str], C],
                 classify: Callable[[BaseException], Outcome], probe: Callable[[C], Awaitable[Any]],
                 max_retries: int = 4, fail_after: int = 3, probe_interval_s: float = 1.0) -> None:
        if not urls:
            raise ValueError("an endpoint pool needs at least one URL")
        self.name = name
        self.endpoints = [Endpoint(make_client(u), EndpointStats(u)) for u in urls]
        self.classify, self.probe = classify, probe
        self.max_retries, self.fail_after, self.probe_interval_s = max_retries, fail_after, probe_interval_s
        self._probes: dict[str, asyncio.Task[None]] = {}

    @property
    def urls(self) -> list[str]:
        return [e.stats.url for e in self.endpoints]

    def stats(self) -> list[EndpointStats]:
        return [e.stats for e in self.endpoints]

    def pick(self, exclude: Collection[str] = ()) -> Endpoint[C]:
        """The least-loaded endpoint in service not in `exclude` (see the module doc for fallbacks)."""
        fresh = [e for e in self.endpoints if e.stats.url not in exclude] or self.endpoints
        pool = [e for e in fresh if e.stats.in_service] or fresh
        return min(pool, key=lambda e: (e.stats.in_flight, e.stats.calls))

    async def call(self, attempt: Callable[[Endpoint[C]], Awaitable[T]]) -> T:
        """Run `attempt` on endpoints until one succeeds; raise `AllAttemptsFailed` after the last retry,
        or the attempt's own error when `classify` says RAISE."""
        tried: set[str] = set()
        delay = BACKOFF_START_S
        for n in range(self.max_retries + 1):
            if len(tried) >= len(self.endpoints):  # a full round failed: back off before the next
                await asyncio.sleep(min(delay, BACKOFF_MAX_S) * random.uniform(0.75, 1.0))
                delay *= 2
                tried.clear()
            endpoint = self.pick(tried)
            tried.add(endpoint.stats.url)
            try:
                return await self._attempt(endpoint, attempt)
            except Exception as e:
                outcome = self.classify(e)
                if outcome is Outcome.RAISE:
                    raise
                if n == self.max_retries:
                    raise AllAttemptsFailed(e, n + 1) from e
        raise AssertionError("unreachable")

    async def _attempt(self, endpoint: Endpoint[C], attempt: Callable[[Endpoint[C]], Awaitable[T]]) -> T:
        s = endpoint.stats
        s.calls += 1
        s.in_flight += 1
        t0 = time.perf_counter()
        try:
            result = await attempt(endpoint)
        except Exception as e:
            s.in_flight -= 1
            s.errors += 1
            if self.classify(e) is Outcome.FAIL:
                self._failed(endpoint)
            raise
        except BaseException:  # cancelled: neither a success nor the endpoint's fault
            s.in_flight -= 1
            s.calls -= 1
            raise
        s.in_flight -= 1
        s.latency_sum_s += time.perf_counter() - t0
        s.consecutive_failures = 0
        return result

    def _failed(self, endpoint: Endpoint[C]) -> None:
        s = endpoint.stats
        s.consecutive_failures += 1
        if s.in_service and s.consecutive_failures >= self.fail_after:
            s.in_service = False
            s.taken_out += 1
            self._start_probe(endpoint)

    def _start_probe(self, endpoint: Endpoint[C]) -> None:
        task = self._probes.get(endpoint.stats.url)
        if task is None or task.done():
            self._probes[endpoint.stats.url] = asyncio.get_running_loop().create_task(self._probe_until_up(endpoint))

    async def _probe_until_up(self, endpoint: Endpoint[C]) -> None:
        s = endpoint.stats
        while not s.in_service:
            await asyncio.sleep(self.probe_interval_s)
            try:
                await self.probe(endpoint.client)
            except Exception:
                continue
            s.in_service, s.consecutive_failures = True, 0

    async def aclose(self, close_client: Callable[[C], Awaitable[Any]]) -> None:
        for task in self._probes.values():
            task.cancel()
        self._probes.clear()
        for e in self.endpoints:
            await close_client(e.client)
