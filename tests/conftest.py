"""Shared fixtures. The embedded model is loaded once per test session and shared."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def local_backend():
    """The real embedded SmolLM2-135M behind the ledger (loaded once, about 20 s)."""
    from redline.backends import create_backend

    backend = create_backend("local")
    backend.load()  # here, so no test's ledger latency includes the load
    return backend


@pytest.fixture()
def local_runtime(local_backend):
    from redline.runtime import Runtime

    return Runtime(backend=local_backend, max_tokens=96, seed=0)


def scripted_runtime(script, **kwargs):
    """A Runtime over the scripted backend, for deterministic control-flow tests."""
    from redline.backends.base import LedgeredBackend
    from redline.backends.scripted import ScriptedBackend
    from redline.runtime import Runtime

    return Runtime(backend=LedgeredBackend(ScriptedBackend(script)), **kwargs)
