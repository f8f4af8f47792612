"""Dynamic batching: requests that arrive together are answered by one call of a batch function."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

Query = TypeVar("Query")
Answer = TypeVar("Answer")


class DynamicBatcher(Generic[Query, Answer]):
    """Queues queries and answers them with `run(queries) -> answers` (one answer per query, in order),
    run in a worker thread so the event loop keeps reading requests meanwhile. A batch is every query
    waiting when the previous batch ends, up to `max_batch`; `max_wait_ms` > 0 waits that long after a
    batch's first query for more (latency traded for fuller batches: while one batch runs, the next
    one fills by itself). `batches` counts the calls of `run`, `queries` the queries answered."""

    def __init__(self, run: Callable[[list[Query]], list[Answer]], max_batch: int = 64, max_wait_ms: float = 0.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"batching needs max_batch >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.batches = self.queries = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        """Starts answering, in the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._answer())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def submit(self, query: Query) -> Answer:
        """The answer to `query`, from the batch it joins; an error of `run` is raised to every query of its batch."""
        if not self.running:
            raise RuntimeError("the batcher is not running")
        answer = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((query, answer))
        return await answer

    async def _answer(self) -> None:
        while True:
            waiting = [await self._queue.get()]
            await asyncio.sleep(self.max_wait)  # 0: lets the queries that arrived meanwhile be read first
            while len(waiting) < self.max_batch and not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            waiting = [(query, answer) for query, answer in waiting if not answer.cancelled()]  # clients gone
            if not waiting:
                continue
            try:
                answers = await asyncio.to_thread(self.run, [query for query, _ in waiting])
            except Exception as error:
                for _, answer in waiting:
                    if not answer.done():
                        answer.set_exception(error)
            else:
                for (_, answer), result in zip(waiting, answers):
                    if not answer.done():
                        answer.set_result(result)
            self.batches += 1
            self.queries += len(waiting)
