"""Group commit: concurrent requests for the same kind of write, made in one transaction.

A request hands its item to a :class:`GroupCommit` and waits. When a writer is free it takes
everything waiting (up to ``max_batch``) and writes it at once; requests that arrive meanwhile
wait for the next writer. Nothing waits on a timer: a lone request starts a batch of one at
once, and under load each transaction carries as many requests as arrived during the last
one, so the database's cost per transaction (its round trips, locks and commit) and the
session's are paid once per batch instead of once per request.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Writes one batch: an outcome for each item, in order (a result, or the exception that item
#: gets). An exception raised by the writer itself is every item's outcome.
Write = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


class GroupCommit(Generic[Item, Result]):
    """Batches items for ``write``: at most ``writers`` batches in flight, each of at most
    ``max_batch`` items."""

    def __init__(
        self, write: Write[Item, Result], *, writers: int = 2, max_batch: int = 64
    ) -> None:
        self._write = write
        self.writers = max(1, writers)
        self.max_batch = max(1, max_batch)
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._running: set[asyncio.Task[None]] = set()
        #: The writer started and not yet running (it takes its batch when it runs).
        self._starting: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """The outcome of ``item``, written in the next batch a writer takes."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        self._start_writers()
        return await future

    def _start_writers(self) -> None:
        # One writer started at a time: it takes everything waiting when it runs.
        if self._waiting and self._starting is None and len(self._running) < self.writers:
            # A context of its own: the batch belongs to no one request (its logs, request id).
            task = asyncio.get_running_loop().create_task(
                self._drain(), context=contextvars.Context()
            )
            self._starting = task
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._starting is task:  # cancelled before it ran
            self._starting = None
        self._start_writers()

    async def _drain(self) -> None:
        # The batch is taken when the writer runs, not when it was started: everything that
        # arrived in between goes with it. Whatever arrives during its write may start another.
        self._starting = None
        while self._waiting:
            taken = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            self._start_writers()
            # A request cancelled while it waited (its client went away) is not written.
            batch = [(item, future) for item, future in taken if not future.done()]
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        outcomes: Sequence[Result | BaseException]
        try:
            outcomes = await self._write([item for item, _ in batch])
        except Exception as exc:  # every item's answer; the writer goes on with the next batch
            outcomes = [exc] * len(batch)
        except BaseException:  # cancelled (the process stopping): no request waits forever
            for _, future in batch:
                future.cancel()
            raise
        if len(outcomes) != len(batch):
            outcomes = [RuntimeError("the batch's write answered the wrong number of items")] * len(
                batch
            )
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its request was cancelled during the write
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
