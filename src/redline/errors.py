"""Errors a user can cause and fix; the CLI prints them as one line (exit 2), the server as a 4xx."""

from __future__ import annotations


class RedlineError(Exception):
    """Base for every error caused by input or configuration, not by a bug."""

    exit_code = 2
    http_status = 400


class SpecError(RedlineError):
    """A strategy, verifier, provider or backend spec that does not parse or validate."""


class BackendError(RedlineError):
    """A backend that cannot be built (bad name, missing model file) or reached after retries."""

    http_status = 502


class BudgetExceeded(RedlineError):
    """Raised inside a solve when a budget runs out; the loop turns it into a graceful stop."""

    http_status = 400
