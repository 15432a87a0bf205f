"""Group commit: reports that arrive together are written in one transaction on a worker thread.

A commit (the WAL write) costs more than everything else a report does, so under load the collector shares one
commit among the reports that queued while the previous one ran, and the event loop keeps parsing requests
meanwhile (the store runs every write on its one writer thread). With no load a batch is one report and the cost is
one thread hop. Each caller still gets its own answer (stored or duplicate) only after its report is committed.
"""
from __future__ import annotations

import asyncio
from typing import Optional

from agentd.protocol import Report

from .records import Ingested
from .store import Store

MAX_BATCH = 256


class GroupCommitter:
    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self.store, self.max_batch = store, max_batch
        self._pending: list[tuple[Report, float, asyncio.Future]] = []
        self._writer: Optional[asyncio.Task] = None

    async def ingest(self, report: Report, received_at: float) -> Ingested:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((report, received_at, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(0)  # let requests that are already parsed join this batch
                batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                try:
                    results = await self.store.ingest_many([item[:2] for item in batch])
                except Exception as exc:  # nothing of this batch was committed: every caller learns why
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for (*_, future), result in zip(batch, results):
                        if not future.done():
                            future.set_result(result)
        finally:
            self._writer = None
