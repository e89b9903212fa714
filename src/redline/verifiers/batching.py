"""Scoring calls made at the same moment go out as one batch.

A strategy scores its candidates with `asyncio.gather`, one `score` call each; a PRM is far
cheaper per solution when those calls become one padded forward pass (`hf-prm`) or one HTTP
request (`remote-prm`). `MicroBatcher` queues the calls and flushes them after a short wait
(or at once when `batch_size` are waiting), so the candidates of one problem share a batch.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher(Generic[Item, Result]):
    """`await submit(item)` -> its result; `run(items)` gets each batch and returns one result (or
    the exception for that item alone) per item, in order. An exception raised by `run` fails the
    whole batch."""

    def __init__(self, run: Callable[[list[Item]], Awaitable[Sequence[Result | BaseException]]],
                 batch_size: int, wait_s: float = 0.002) -> None:
        self.run, self.batch_size, self.wait_s = run, batch_size, wait_s
        self._queue: list[_Pending[Item, Result]] = []
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()  # held, so the loop cannot drop a batch in flight

    async def submit(self, item: Item) -> Result:
        pending: _Pending[Item, Result] = _Pending(item)
        self._queue.append(pending)
        if len(self._queue) >= self.batch_size:
            self._send_queued()
        elif self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.wait_s, self._send_queued)
        return await pending.future

    def _send_queued(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        while self._queue:
            batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size:]
            task = asyncio.get_running_loop().create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending[Item, Result]]) -> None:
        try:
            results = await self.run([p.item for p in batch])
        except Exception as e:  # handed to every caller of the batch
            results = [e] * len(batch)
        for pending, result in zip(batch, results):
            if pending.future.done():  # its caller gave up (cancelled)
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)
