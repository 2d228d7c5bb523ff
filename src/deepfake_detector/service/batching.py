"""Batching across requests: images of requests that arrive together share forward passes.

One worker task takes the model's work of every request in turn. While it runs a batch,
new requests queue; when it is free it takes everything queued at once, groups it by
options (requests with the same options can share ``predict_many``; others cannot), runs
each group in the thread pool and hands every request its own predictions. Under no load a
request goes straight through (no waiting for company); under load the batches grow by
themselves, which is where the per-image cost of the network drops.

Results do not depend on the company a request keeps: ``predict_many`` judges each image
on its own, and only the forward passes are shared.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from ..detector import Detector
from ..results import Prediction


@dataclass
class _Job:
    detector: Detector
    images: list[np.ndarray]
    options: dict[str, Any]
    future: asyncio.Future = field(repr=False)

    @property
    def key(self) -> tuple[int, tuple[tuple[str, Any], ...]]:
        return id(self.detector), tuple(sorted(self.options.items()))


class RequestBatcher:
    """Queue of decoded images waiting for the model; see the module docstring.

    ``max_images`` bounds one ``predict_many`` call, so one burst cannot make a batch whose
    answers all wait for its slowest part.
    """

    def __init__(self, max_images: int = 64) -> None:
        self.max_images = max_images
        self._queue: asyncio.Queue[_Job] | None = None
        self._worker: asyncio.Task | None = None
        self.calls = 0  # predict_many calls made, for tests and logs

    async def predict(self, detector: Detector, images: list[np.ndarray], options: dict[str, Any]) -> list[Prediction]:
        """The predictions of ``images`` (in order), judged with ``options`` (predict_many's)."""
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        assert self._queue is not None
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(detector, images, options, future))
        return await future

    async def close(self) -> None:
        """Stop the worker (at shutdown); jobs still queued are cancelled."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().future.cancel()

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            while not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            try:
                await asyncio.gather(*(self._serve(group) for group in self._groups(jobs)))
            except BaseException as exc:  # stopped at shutdown, or a fault here: no request is left waiting
                cancelled = isinstance(exc, asyncio.CancelledError)
                for job in jobs:
                    if not job.future.done():
                        job.future.cancel() if cancelled else job.future.set_exception(exc)
                if cancelled or not isinstance(exc, Exception):
                    raise

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Jobs with equal options, in arrival order, cut at ``max_images``."""
        groups: dict[Any, list[list[_Job]]] = {}
        for job in jobs:
            chunks = groups.setdefault(job.key, [[]])
            if chunks[-1] and sum(len(j.images) for j in chunks[-1]) + len(job.images) > self.max_images:
                chunks.append([])
            chunks[-1].append(job)
        return [chunk for chunks in groups.values() for chunk in chunks]

    async def _serve(self, group: list[_Job]) -> None:
        images = [image for job in group for image in job.images]
        first = group[0]
        self.calls += 1
        try:
            predictions = await run_in_threadpool(lambda: list(first.detector.predict_many(images, **first.options)))
        except Exception as exc:  # noqa: BLE001 - each request answers with its own error handler
            for job in group:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        start = 0
        for job in group:
            if not job.future.done():  # a client that went away leaves a cancelled future
                job.future.set_result(predictions[start : start + len(job.images)])
            start += len(job.images)
