"""Detector: a loaded bundle that turns images into Predictions.

``predict`` takes one input; ``predict_many`` streams any number of inputs, decoding in
a thread pool while the model runs on batches, and yields results in input order. A bad
input becomes a failed Prediction naming the reason; the rest are still scored.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from .bundle import BundleConfig, load_bundle
from .devices import pick_device
from .errors import DeepfakeDetectorError, InvalidArgumentError
from .media.image import load_image
from .results import Prediction
from .threshold import confidence_for, label_for

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]
Loader = Callable[[Any], np.ndarray]


def source_name(source: Any) -> str | None:
    """The name a result carries for its input: the path for files, else ``None``."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return None


class Detector:
    """A model bundle ready to score images.

    Thread-safe for prediction: the threshold is an argument of ``predict``, never state
    changed per call, so one Detector can serve many users.
    """

    def __init__(self, config: BundleConfig, model: nn.Module, *, device: str | torch.device = "cpu",
                 name: str | None = None) -> None:
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.name = name or config.name or config.arch
        self.preprocessing = config.preprocessing

    @classmethod
    def load(cls, bundle_dir: str | Path, *, device: str = "auto") -> Detector:
        """Load a bundle folder (``config.json`` + ``model.safetensors``)."""
        config, model = load_bundle(bundle_dir)
        return cls(config, model, device=pick_device(device), name=config.name or Path(bundle_dir).name)

    @property
    def threshold(self) -> float:
        """The bundle's decision threshold, chosen on validation data."""
        return self.config.threshold

    def _check_threshold(self, threshold: float | None) -> float:
        if threshold is None:
            return self.config.threshold
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise InvalidArgumentError(f"The 'threshold' parameter must be a float in [0, 1]; got {threshold!r}.")
        return float(threshold)

    def score_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """``p_fake`` for already decoded ``HxWx3`` uint8 images."""
        return self._p_fake([self.preprocessing(im) for im in images])

    @torch.inference_mode()
    def _p_fake(self, inputs: list[np.ndarray]) -> np.ndarray:
        """``p_fake`` for preprocessed ``3xSxS`` arrays, as one batch."""
        if not inputs:
            return np.zeros(0)
        logits = self.model(torch.from_numpy(np.stack(inputs)).to(self.device))
        return self.config.p_fake_from_logits(logits).cpu().numpy().astype(np.float64)

    def _prediction(self, path: str | None, p: float, seconds: float, threshold: float) -> Prediction:
        return Prediction(
            path=path,
            label=label_for(p, threshold),
            p_fake=float(p),
            confidence=float(confidence_for(p, threshold)),
            seconds=seconds,
            threshold=threshold,
            model=self.name,
        )

    def predict(self, source: ImageInput, *, threshold: float | None = None) -> Prediction:
        """Score one image (path, bytes, PIL image or ``HxWx3`` uint8 RGB array).

        Bad input raises a :class:`~deepfake_detector.errors.DeepfakeDetectorError`
        naming the input and the reason.
        """
        t = self._check_threshold(threshold)
        started = time.perf_counter()
        image = load_image(source)
        p = float(self.score_batch([image])[0])
        return self._prediction(source_name(source), p, time.perf_counter() - started, t)

    def _prepare(self, source: Any, loader: Loader) -> tuple[np.ndarray | None, str | None, float]:
        started = time.perf_counter()
        try:
            x = self.preprocessing(loader(source))
            return x, None, time.perf_counter() - started
        except DeepfakeDetectorError as exc:
            return None, str(exc), time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - a folder run must go on past any bad file
            name = source_name(source) or "<input>"
            return None, f"{name}: unexpected error while reading ({type(exc).__name__}: {exc})", time.perf_counter() - started

    def predict_many(
        self,
        sources: Iterable[Any],
        *,
        batch_size: int = 32,
        workers: int | None = None,
        threshold: float | None = None,
        loader: Loader = load_image,
    ) -> Iterator[Prediction]:
        """Score many inputs, yielding one Prediction per input in input order.

        Decoding and preprocessing run in ``workers`` threads (default: CPU count) while
        the model scores batches of ``batch_size``. ``loader`` turns a source into an
        image (tests and evaluation's laundering pass their own). Inputs that fail come
        back as failed Predictions with the reason; nothing is raised for them.
        """
        t = self._check_threshold(threshold)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(f"The 'batch_size' parameter must be an integer of at least 1; got {batch_size!r}.")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise InvalidArgumentError(f"The 'workers' parameter must be an integer of at least 1; got {workers!r}.")
        return self._stream(sources, batch_size, workers or max(1, os.cpu_count() or 1), t, loader)

    def _stream(self, sources: Iterable[Any], batch_size: int, workers: int, t: float,
                loader: Loader) -> Iterator[Prediction]:
        lookahead = batch_size * 2 + workers
        source_iter = iter(sources)
        pending: deque[tuple[Any, Future]] = deque()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:

            def fill() -> None:
                while len(pending) < lookahead:
                    try:
                        src = next(source_iter)
                    except StopIteration:
                        return
                    pending.append((src, pool.submit(self._prepare, src, loader)))

            fill()
            batch: list[tuple[Any, np.ndarray | None, str | None, float]] = []
            n_ready = 0
            while pending:
                src, fut = pending.popleft()
                fill()
                item = (src, *fut.result())
                batch.append(item)
                n_ready += item[1] is not None
                if n_ready >= batch_size or not pending:
                    yield from self._finish(batch, t)
                    batch, n_ready = [], 0

    def _finish(self, batch: list[tuple[Any, np.ndarray | None, str | None, float]], threshold: float) -> Iterator[Prediction]:
        arrays = [x for _, x, _, _ in batch if x is not None]
        started = time.perf_counter()
        p_fake = self._p_fake(arrays)
        model_seconds = (time.perf_counter() - started) / max(len(arrays), 1)
        scores = iter(p_fake)
        for src, x, error, decode_seconds in batch:
            if x is None:
                yield Prediction.failed(source_name(src), error or "unknown error", decode_seconds, self.name)
            else:
                yield self._prediction(source_name(src), float(next(scores)), decode_seconds + model_seconds, threshold)

    def summary(self) -> dict[str, Any]:
        """A flat description for reports and the ``About`` panels of front ends."""
        training = self.config.training
        validation = self.config.metrics.get("validation", {})
        return {
            "name": self.name,
            "arch": self.config.arch,
            "input_size": self.config.preprocessing.input_size,
            "threshold": self.config.threshold,
            "trained_on": training.get("data", training.get("imported_from", "unknown")),
            "validation_roc_auc_score": validation.get("roc_auc_score"),
        }
