"""What an operator sets when starting `redline serve`: keys and the limits every request must fit."""

from __future__ import annotations

from dataclasses import dataclass

KEEP_ALIVE_S = 75
"""Seconds an idle client connection stays open. It must outlast the clients' own idle expiry
(httpx and the openai SDK: 5 s), so that the client, never the server, closes an idle connection:
when the server closes it first, a request the client sends at that instant fails with a connection
error. uvicorn's default (5 s) equals httpx's: that race dropped one request of our 500-request
load test on CI. 75 s is nginx's default."""


@dataclass(frozen=True)
class ServerSettings:
    """Server-wide limits; `None` means unlimited (only for the optional ones)."""

    api_keys: tuple[str, ...] = ()           # empty: no authentication
    max_body_bytes: int = 1_000_000          # 413 above this
    max_n: int = 8                           # 400 above this
    max_tokens_limit: int = 4096             # 400 when a request's max_tokens is higher
    max_request_tokens: int | None = 100_000  # token budget of one strategy request, all internal calls
    max_concurrency: int = 64                # requests in flight; 429 with Retry-After beyond it
    timeout_s: float = 300.0                 # 504 when a request takes longer
    retry_after_s: int = 1
