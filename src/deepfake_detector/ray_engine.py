"""Batch scoring on Ray Data: ``deepfake-detector predict ... --engine ray --output OUT``.

The driver lists the files, and Ray Data hands them, a batch at a time, to a pool of actors
that each load the detector once and score with :meth:`Detector.predict_many`, exactly as a
local run does; so the answers are the local ones. Images travel in batches of
``batch_size`` files; a video is one unit of work, scored whole inside one actor call (a
second pass after the images, with batches of one file).

Results stream back to the driver, which writes them to ``OUT`` as numbered parts
(``part-<run>-<n>.parquet`` or ``.jsonl``), each written under a temporary name and renamed
when complete, so a part is either whole or absent. Every row is the local JSON line
(:meth:`Prediction.to_dict`) plus ``sha256``, the hash of the file's bytes (null when the
file could not be read). In Parquet, ``faces`` and ``video`` hold that JSON as text; see
:func:`read_results`.

Resuming: a run first reads the parts already in ``OUT`` and skips every file whose path and
content hash are already there, failed rows included (the same bytes fail the same way); a
file that could not be read has no hash and is tried again. Old parts are never rewritten.
An actor that dies (killed, out of memory) is restarted by Ray and its batch retried: Ray
Data's actor pools restart actors and retry their tasks without limit by default.

Nothing here imports ray at module level: ``predict --engine local`` never loads it. Ray is
the optional extra ``pip install 'deepfake-detector[ray]'``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .errors import DeepfakeDetectorError, InvalidArgumentError, MissingDependencyError, reraise_interrupt
from .media.video import is_video_path

FORMATS = ("parquet", "jsonl")
PART_PREFIX = "part-"
RUNS_DIR = "_runs"  # one JSON record per run: options, counts, parts
HASH_FIELD = "sha256"
FLOAT_FIELDS = ("p_fake", "confidence", "seconds", "threshold")
JSON_FIELDS = ("faces", "video")  # nested: JSON text in Parquet, as they are in JSON lines
PART_ROWS = 10_000  # rows per part at most
PART_SECONDS = 60.0  # a part is written at least this often while results arrive: what an interruption can lose
MAX_BLOCKS = 10_000  # input blocks at most: past calls / MAX_BLOCKS, a block holds several actor calls
FAULT_ENV = "DEEPFAKE_DETECTOR_RAY_FAULT"  # testing: a marker file path; the first actor call to create it dies
_READ_CHUNK = 1 << 20


# --------------------------------------------------------------------------- inputs


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The SHA-256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_READ_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


# --------------------------------------------------------------------------- output folder


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob(f"{PART_PREFIX}*") if p.suffix in (".parquet", ".jsonl"))


def _rows_of_part(part: Path, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of one part, as stored (Parquet's nested fields still JSON text)."""
    try:
        if part.suffix == ".parquet":
            import pyarrow.parquet as pq

            yield from pq.read_table(part, columns=list(columns) if columns else None).to_pylist()
            return
        with part.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InvalidArgumentError(f"{part}, line {number}: not a JSON line ({exc}).") from exc
                    yield {k: row.get(k) for k in columns} if columns else row
    except DeepfakeDetectorError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise InvalidArgumentError(
            f"{part}: cannot read this part of the results ({type(exc).__name__}: {exc}). "
            "Move it out of the folder to score its files again."
        ) from exc


def read_results(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every row in a results folder, as the local JSON lines hold it plus ``sha256``
    (Parquet's ``faces`` and ``video`` decoded from their JSON text), part after part.

    ``Prediction.from_dict`` takes a row as it is (it leaves ``sha256`` out).
    """
    rows = []
    for part in _parts(Path(folder)):
        for row in _rows_of_part(part):
            if part.suffix == ".parquet":
                for key in JSON_FIELDS:
                    if isinstance(row.get(key), str):
                        row[key] = json.loads(row[key])
            rows.append(row)
    return rows


def done_hashes(folder: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Path -> the content hashes already scored for it in the parts of ``folder``."""
    done: dict[str, set[str]] = {}
    folder = Path(folder)
    if not folder.is_dir():
        return done
    for part in _parts(folder):
        for row in _rows_of_part(part, columns=("path", HASH_FIELD)):
            if row.get("path") is not None and row.get(HASH_FIELD):
                done.setdefault(row["path"], set()).add(row[HASH_FIELD])
    return done


def _parquet_table(rows: list[dict[str, Any]]) -> Any:
    """A Parquet table of result rows with a fixed schema: floats for the scores, JSON text
    for the nested fields, text for the rest (so every part has the same columns and types)."""
    import pyarrow as pa

    names = list(dict.fromkeys(k for row in rows for k in row))
    columns, schema = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        if name in FLOAT_FIELDS:
            kind = pa.float64()
            values = [None if v is None else float(v) for v in values]
        elif name in JSON_FIELDS:
            kind = pa.string()
            values = [json.dumps(v) for v in values]
        else:
            kind = pa.string()
            values = [v if v is None or isinstance(v, str) else str(v) for v in values]
        columns.append(pa.array(values, type=kind))
        schema.append(pa.field(name, kind))
    return pa.Table.from_arrays(columns, schema=pa.schema(schema))


class _PartWriter:
    """Writes result rows as numbered parts of one run; each part appears whole or not at all."""

    def __init__(self, folder: Path, fmt: str, run_id: str, part_rows: int, part_seconds: float) -> None:
        self.folder, self.fmt, self.run_id = folder, fmt, run_id
        self.part_rows, self.part_seconds = part_rows, part_seconds
        self.rows: list[dict[str, Any]] = []
        self.parts: list[Path] = []
        self.since = time.monotonic()

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.part_rows or time.monotonic() - self.since >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        self.since = time.monotonic()
        if not self.rows:
            return
        name = f"{PART_PREFIX}{self.run_id}-{len(self.parts):05d}.{self.fmt}"
        final = self.folder / name
        tmp = self.folder / f".{name}.tmp"
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(_parquet_table(self.rows), tmp)
        else:
            with tmp.open("w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in self.rows)
        os.replace(tmp, final)
        self.parts.append(final)
        self.rows = []


# --------------------------------------------------------------------------- the actor


class _Scorer:
    """The Ray Data actor: loads the detector once, then scores batches of files.

    A batch is ``{"path": [...], "done": [...]}``, where ``done`` holds the hashes already
    scored for each path (comma-separated, maybe empty). Returns one row per path:
    ``path``, ``sha256`` and ``row``, the result as a JSON line, or an empty ``row`` for a
    file skipped because its hash is done.
    """

    def __init__(
        self,
        model: str | None,
        load_options: Mapping[str, Any],
        predict_options: Mapping[str, Any],
        batch_size: int,
        workers: int,
        use_gpu: bool,
        cwd: str,
        fault_marker: str | None = None,
    ) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths, and the paths in results and messages, as on the driver
        import torch

        from .detector import Detector

        torch.set_num_threads(max(1, workers))
        # onnxruntime gets the actor's threads, not the machine's default share.
        options = {**dict(load_options), "threads": max(1, workers)}
        self.detector = Detector.load(model, device="cuda" if use_gpu else "cpu", **options)
        self.predict_options = dict(predict_options)
        self.batch_size, self.workers = batch_size, workers
        self.fault_marker = fault_marker

    def _maybe_die(self) -> None:
        """Fault injection for tests: the first call anywhere to create the marker file kills its actor."""
        if not self.fault_marker:
            return
        try:
            fd = os.open(self.fault_marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._maybe_die()
        paths = [str(p) for p in batch["path"]]
        hashes = [file_sha256(p) for p in paths]
        todo = [
            (i, p)
            for i, (p, h, done) in enumerate(zip(paths, hashes, batch["done"]))
            if not h or h not in str(done).split(",")
        ]
        rows = [""] * len(paths)
        predictions = self.detector.predict_many(
            [p for _, p in todo], batch_size=self.batch_size, workers=self.workers, **self.predict_options
        )
        for (i, _), pred in zip(todo, predictions):
            rows[i] = json.dumps({**pred.to_dict(), HASH_FIELD: hashes[i]})
        return {
            "path": np.asarray(paths, dtype=object),
            HASH_FIELD: np.asarray([h or "" for h in hashes], dtype=object),
            "row": np.asarray(rows, dtype=object),
        }


# --------------------------------------------------------------------------- the driver


@dataclass
class RayRun:
    """What one run did: rows written now, files skipped as already done, and where."""

    output: Path
    run_id: str
    inputs: int
    scored: int = 0
    failed: int = 0
    skipped: int = 0
    labels: Counter = field(default_factory=Counter)
    parts: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    model: str | None = None
    written: set[tuple[str | None, str | None]] = field(default_factory=set, repr=False)


def _import_ray(local: bool) -> Any:
    """Import ray, never to report usage over the network; for a local instance (``local``),
    listening on 127.0.0.1 only.

    Ray on Linux swaps 127.0.0.1 for the machine's network address and then listens on every
    interface; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is imported, keeps the
    node at 127.0.0.1 (as Ray does on laptops), so a local instance is reachable from this
    machine only. It also stops this process from starting cluster nodes, which it never does.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        reraise_interrupt(exc)
        raise MissingDependencyError(
            "predict --engine ray", "ray[data]", "pip install 'deepfake-detector[ray]'", exc
        ) from exc
    return ray


def _connect(ray: Any, address: str | None, num_cpus: int | None, progress: bool) -> bool:
    """Join the cluster at ``address``, or start a local instance bound to 127.0.0.1 (never
    an existing cluster found by chance); reuse a connection the caller already made.
    Returns whether this call connected (and so must disconnect)."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"logging_level": logging.WARNING if progress else logging.ERROR}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            **common,
        )
    return True


def _compute(ray: Any, actors: int | tuple[int, int | None] | None, calls: int) -> Any:
    """The actor pool for ``calls`` actor calls: never more actors than calls (each loads the model)."""
    low, high = (1, None) if actors is None else (actors, actors) if isinstance(actors, int) else actors
    high = calls if high is None else min(high, calls)
    low = min(low, high)
    if low == high:
        return ray.data.ActorPoolStrategy(size=low)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def parse_actors(text: str) -> int | tuple[int, int | None]:
    """``"N"``: a pool of N actors; ``"MIN-MAX"``: a pool that grows from MIN to MAX; ``"MIN-"``: no upper bound."""
    low, sep, high = text.partition("-")
    try:
        first = int(low)
        last = None if sep and not high else int(high) if sep else first
    except ValueError:
        raise InvalidArgumentError(f"--actors takes N, MIN-MAX or MIN-; got {text!r}.") from None
    if first < 1 or (last is not None and last < first):
        raise InvalidArgumentError(f"--actors needs 1 <= MIN <= MAX; got {text!r}.")
    return first if not sep else (first, last)


def score_on_ray(
    paths: Sequence[str],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | None = None,
    fmt: str = "parquet",
    address: str | None = None,
    actors: int | tuple[int, int | None] | None = None,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    batch_size: int = 32,
    workers: int | None = None,
    load_options: Mapping[str, Any] | None = None,
    predict_options: Mapping[str, Any] | None = None,
    num_cpus: int | None = None,
    part_rows: int = PART_ROWS,
    part_seconds: float = PART_SECONDS,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> RayRun:
    """Score ``paths`` with a pool of Ray actors and add the results to the folder ``output``.

    ``model`` is a bundle or ensemble folder every node can read (None: the detector
    shipped inside the package, as installed on each node). ``address`` joins a running
    cluster (``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``); without it a local
    instance is started with ``num_cpus`` CPUs (default: all) and stopped at the end; a
    connection already made by the caller (``ray.init``) is used as it is and left open.

    ``actors`` sizes the pool: N actors, ``(MIN, MAX)`` to grow between the two (MAX None:
    as many as fit), or None for ``(1, None)``. Each actor reserves ``cpus_per_actor`` CPUs
    and ``gpus_per_actor`` GPUs (scoring on CUDA when above 0), and runs ``predict_many``
    with ``batch_size`` (files per actor call and model inputs per forward pass) and
    ``workers`` decoding threads (default: its CPUs, rounded up). ``load_options`` go to
    :meth:`Detector.load` (``runtime``, ``face_detector``, ``min_face``), ``predict_options``
    to :meth:`Detector.predict_many` (``threshold``, ``faces``, ``sampling``, ...).
    ``on_row`` sees each new row as it is written.
    """
    if fmt not in FORMATS:
        raise InvalidArgumentError(f"The 'fmt' parameter must be one of {FORMATS}; got {fmt!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"The 'batch_size' parameter must be an integer of at least 1; got {batch_size!r}.")
    if cpus_per_actor <= 0 or gpus_per_actor < 0:
        raise InvalidArgumentError(
            f"Each actor needs more than 0 CPUs and 0 or more GPUs; got {cpus_per_actor} and {gpus_per_actor}."
        )
    started = time.perf_counter()
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"{out}: --engine ray writes a folder of parts here, but it is a file.")
    out.mkdir(parents=True, exist_ok=True)
    other = {p.suffix[1:] for p in _parts(out)} - {fmt}
    if other:
        raise InvalidArgumentError(
            f"{out}: already holds {'/'.join(sorted(other))} parts; resume with the same format "
            f"(--format {sorted(other)[0]}) or write to another folder."
        )
    load_options = dict(load_options or {})
    predict_options = dict(predict_options or {})
    if gpus_per_actor > 0 and load_options.get("runtime") == "onnx":
        raise InvalidArgumentError("runtime 'onnx' runs on CPUs: give actors no GPUs, or use runtime auto or torch.")
    model_dir = None if model is None else str(Path(model).resolve())
    paths = _unique(paths)

    # Check the model and the options here, where a mistake makes a plain message.
    from .detector import Detector

    detector = Detector.load(model_dir, device="cpu", **load_options)
    detector.predict_many([], batch_size=batch_size, workers=workers, **predict_options)
    settings = _settings(detector.name, model_dir, load_options, predict_options)
    _check_same_settings(out, settings)
    done = done_hashes(out)
    run = RayRun(
        out, f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}", len(paths), model=detector.name
    )
    del detector

    ray = _import_ray(local=not address)
    own_connection = _connect(ray, address, num_cpus, progress)
    writer = _PartWriter(out, fmt, run.run_id, part_rows, part_seconds)
    threads = workers or max(1, int(np.ceil(cpus_per_actor)))
    interrupted = True
    data_logger = logging.getLogger("ray.data")
    data_level = data_logger.level
    try:
        if not progress:
            data_logger.setLevel(logging.ERROR)  # no progress lines, nor the warning that they are off
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        context.print_on_execution_start = progress
        scorer_args = {
            "model": model_dir,
            "load_options": load_options,
            "predict_options": predict_options,
            "batch_size": batch_size,
            "workers": threads,
            "use_gpu": gpus_per_actor > 0,
            "cwd": os.getcwd(),
            "fault_marker": os.environ.get(FAULT_ENV) or None,
        }
        videos = [p for p in paths if is_video_path(p)]
        images = [p for p in paths if not is_video_path(p)]
        # Images in batches; then each video alone, so that no actor holds several long videos.
        for group, files_per_call in ((images, batch_size), (videos, 1)):
            if not group:
                continue
            items = [{"path": p, "done": ",".join(sorted(done.get(p, ())))} for p in group]
            calls = -(-len(items) // files_per_call)
            # One block per actor call, so that calls spread over the actors (up to MAX_BLOCKS blocks).
            dataset = ray.data.from_items(items, override_num_blocks=min(calls, MAX_BLOCKS)).map_batches(
                _Scorer,
                batch_size=files_per_call,
                compute=_compute(ray, actors, calls),
                fn_constructor_kwargs=scorer_args,
                num_cpus=cpus_per_actor,
                num_gpus=gpus_per_actor or None,
                batch_format="numpy",
            )
            batches = iter(dataset.iter_batches(batch_size=None, batch_format="numpy"))
            try:
                for batch in batches:
                    _take(batch, run, writer, on_row)
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()  # stops the dataset's execution, and its actors, when a row raised
        interrupted = False
    finally:
        writer.flush()
        run.parts = writer.parts
        run.seconds = time.perf_counter() - started
        _record(run, interrupted, fmt, address, settings, actors, cpus_per_actor, gpus_per_actor, batch_size)
        data_logger.setLevel(data_level)
        if own_connection:
            ray.shutdown()
    return run


def _unique(paths: Sequence[str]) -> list[str]:
    """Each file once (by absolute path), as first given: a file named twice (a folder and a
    glob, a repeated list entry) is one unit of work and one row."""
    seen: set[str] = set()
    unique = []
    for path in paths:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _json_safe(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for k, v in sorted(options.items())}


def _settings(
    model_name: str, model_dir: str | None, load_options: Mapping[str, Any], predict_options: Mapping[str, Any]
) -> dict[str, Any]:
    """What decides the answers: the model and the options (the runtime aside, whose answers agree)."""
    load = {k: v for k, v in load_options.items() if k != "runtime"}
    options = _json_safe(predict_options)
    return {"model": model_name, "model_dir": model_dir, "load": _json_safe(load), "options": options}


def _check_same_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to add to a folder whose earlier runs used another model or other options: the
    files they scored would be skipped as done, and the rows would mix two kinds of answer."""
    for record_path in sorted((out / RUNS_DIR).glob("*.json")):
        try:
            earlier = json.loads(record_path.read_text()).get("settings")
        except (OSError, ValueError):
            continue
        if earlier is not None and earlier != settings:
            changed = sorted(k for k in settings if earlier.get(k) != settings[k])
            raise InvalidArgumentError(
                f"{out}: holds results of another {' and '.join(changed)} (run {record_path.stem}); "
                "resume with the same model and options, or write to another folder."
            )


def _take(batch: Mapping[str, np.ndarray], run: RayRun, writer: _PartWriter, on_row: Callable | None) -> None:
    for text in batch["row"]:
        if not text:
            run.skipped += 1
            continue
        row = json.loads(text)
        key = (row.get("path"), row.get(HASH_FIELD))
        if key in run.written:  # a retried batch whose first attempt's rows already arrived
            continue
        run.written.add(key)
        writer.add(row)
        if row.get("error") is None:
            run.scored += 1
            run.labels[row.get("label")] += 1
        else:
            run.failed += 1
        if on_row is not None:
            on_row(row)


def _record(
    run: RayRun, interrupted: bool, fmt: str, address: str | None, settings: dict[str, Any], *sizing: Any
) -> None:
    """``OUT/_runs/<run>.json``: what a run was asked and what it did, for whoever reads the
    folder later, and for a rerun to check it adds answers of the same kind."""
    actors, cpus, gpus, batch_size = sizing
    folder = run.output / RUNS_DIR
    folder.mkdir(exist_ok=True)
    record = {
        "run": run.run_id,
        "model": run.model,
        "format": fmt,
        "address": address or "local",
        "actors": list(actors) if isinstance(actors, tuple) else actors,
        "cpus_per_actor": cpus,
        "gpus_per_actor": gpus,
        "batch_size": batch_size,
        "settings": settings,
        "inputs": run.inputs,
        "scored": run.scored,
        "failed": run.failed,
        "skipped": run.skipped,
        "parts": [p.name for p in run.parts],
        "seconds": round(run.seconds, 3),
        "interrupted": interrupted,
    }
    tmp = folder / f".{run.run_id}.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / f"{run.run_id}.json")
