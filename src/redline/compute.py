"""One thread for every torch computation in the process: model loads, generation, PRM
scoring and sentence embeddings.

torch's CPU kernels run on OpenMP, and libgomp keeps a team of worker threads per thread
that calls into it. When models run from several threads (`asyncio.to_thread` hands out any
pool thread), the teams together outnumber the cores, libgomp stops spin-waiting between
kernels, and every call gets slower: on 2 cores, 48 greedy tokens took 2.56 s instead of
1.60 s (`bench/backend_throughput.py`). Running all of it here, one call at a time, keeps a
single team, and also serialises each model's use without per-model locks.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_THREAD_NAME = "redline-torch"
_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_THREAD_NAME)


def _on_compute_thread() -> bool:
    return threading.current_thread().name.startswith(_THREAD_NAME)


def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` on the compute thread and wait for it (inline when already there)."""
    if _on_compute_thread():
        return fn(*args)
    return _EXECUTOR.submit(fn, *args).result()


async def run_async(fn: Callable[..., T], *args: Any) -> T:
    """Await `fn` on the compute thread; the event loop stays free meanwhile."""
    return await asyncio.wrap_future(_EXECUTOR.submit(fn, *args))
