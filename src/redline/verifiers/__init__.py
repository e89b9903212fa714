"""Judging steps. Verifier modules register themselves in `registry.VERIFIERS`."""

from redline.verifiers import arith, ensemble, hf_prm, judge, learned, remote_prm  # noqa: F401  (register)
from redline.verifiers.base import (AGGREGATIONS, StepVerifier, aggregate, clamp01, first_error,
                                    run_in_pool)

__all__ = ["AGGREGATIONS", "StepVerifier", "aggregate", "clamp01", "first_error", "run_in_pool"]
