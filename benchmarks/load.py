"""Load and abuse test of the REST service (issue 11, item 4), on loopback only.

Starts ``python -m deepfake_detector serve`` as a subprocess on 127.0.0.1, waits (bounded)
for ``/readyz``, then sends ``--requests`` requests to ``POST /v1/predict`` from ``--clients``
concurrent clients (one thread and one ``httpx.Client`` each). A fraction ``--malformed`` of
them, spread over the run in a seeded random order, are malformed: an empty file, truncated
JPEG and PNG files, text and a PDF named ``.jpg``, bodies over ``--max-upload-mb`` (declared,
and streamed without a length), bad options (``faces=sideways``, ``threshold=2``,
``aggregate=median``), no ``file`` field, a JSON body, broken multipart, and a good image
beside a truncated one. The good requests carry one or two images (``--images DIR``, or
pictures made offline from scikit-image's samples, as JPEG and PNG) with varied valid options.

Each good answer is compared with the library's: ``Detector.load`` of the same model and
runtime in this process, ``predict`` on the same bytes with the same options (each distinct
image and options computed once): same label, scored_on and number of faces, p_fake within
1e-5. At the end the server must still be up (process alive, ``/healthz`` 200); it is then
stopped (terminate, wait, kill on timeout) whatever happened.

It prints a Markdown table of statuses and latencies per kind of request, and exits 0 only
when there was no 5xx, every malformed request got a 4xx, every good one a 200 that matches
the library, and the server stayed up (1 otherwise).

    python benchmarks/load.py                      # the shipped detector, 1000 requests, 16 clients
    python benchmarks/load.py --model runs/seed --requests 200 --clients 4 --json load.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import queue
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

HOST = "127.0.0.1"
MIB = 1024 * 1024
P_FAKE_TOLERANCE = 1e-5
IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
IMAGE_SUFFIXES |= {".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".gif": "image/gif"}
FACES = ("auto", "off", "only")
THRESHOLDS = (None, 0.25, 0.5, 0.9)
AGGREGATES = ("max", "mean")
GOOD = "good"
_LOG_TROUBLE = re.compile(r"error|exception|traceback|\b5\d\d\b", re.IGNORECASE)

Options = tuple[str, float | None, str]  # faces, threshold (None: the model's), aggregate


@dataclass(frozen=True)
class Upload:
    """One file as it is sent: name, bytes, declared content type."""

    name: str
    data: bytes
    content_type: str


@dataclass
class Planned:
    """One request to send: multipart files and query parameters, or a raw body.

    ``content`` is bytes, or a function that returns a fresh iterator of chunks (a body
    streamed without a Content-Length). ``images`` and ``options`` are set for good requests:
    what the library is asked for the same answer."""

    kind: str
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | Callable[[], Iterator[bytes]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    images: tuple[int, ...] = ()
    options: Options | None = None


@dataclass
class Outcome:
    """What one request got: status (None: no answer), latency, and what was wrong with it."""

    index: int
    kind: str
    status: int | None
    latency_ms: float
    error: str | None = None  # transport error, or the body of a 5xx
    mismatch: str | None = None  # a good answer that differs from the library's


# ---------------------------------------------------------------------- images


def _encode(pixels: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if fmt == "JPEG":
        image.save(buffer, format=fmt, quality=quality)
    else:
        image.save(buffer, format=fmt)
    return buffer.getvalue()


def _resized(pixels: np.ndarray, scale: float) -> np.ndarray:
    height, width = pixels.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


def sample_images() -> list[Upload]:
    """Pictures made offline from scikit-image's samples: whole, cropped and resized, JPEG and PNG,
    RGB, greyscale and RGBA."""
    from skimage import data

    astronaut, chelsea, coffee, camera = data.astronaut(), data.chelsea(), data.coffee(), data.camera()
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)])
    variants = [
        ("astronaut.jpg", astronaut, "JPEG"),
        ("astronaut.png", astronaut, "PNG"),
        ("astronaut_face.jpg", astronaut[:300, 100:400], "JPEG"),
        ("astronaut_small.png", _resized(astronaut, 0.5), "PNG"),
        ("astronaut_rgba.png", rgba, "PNG"),
        ("chelsea.jpg", chelsea, "JPEG"),
        ("chelsea.png", chelsea, "PNG"),
        ("chelsea_crop.jpg", chelsea[50:250, 100:350], "JPEG"),
        ("coffee.jpg", coffee, "JPEG"),
        ("coffee_small.png", _resized(coffee, 0.5), "PNG"),
        ("camera_grey.png", camera, "PNG"),
        ("camera_grey.jpg", _resized(camera, 0.75), "JPEG"),
    ]
    return [Upload(name, _encode(px, fmt), f"image/{fmt.lower()}") for name, px, fmt in variants]


def folder_images(folder: str | Path) -> list[Upload]:
    """The image files directly in ``folder``, by name."""
    paths = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [Upload(p.name, p.read_bytes(), IMAGE_SUFFIXES[p.suffix.lower()]) for p in paths]


def _fitting(uploads: list[Upload], max_upload_bytes: int) -> list[Upload]:
    """The images two of which fit in one request body, with room for the multipart framing."""
    room = (max_upload_bytes - 64 * 1024) // 2
    kept = [u for u in uploads if 0 < len(u.data) <= room]
    for skipped in sorted({u.name for u in uploads} - {u.name for u in kept}):
        print(f"skipping {skipped}: empty, or too large for two in a request", file=sys.stderr)
    if not kept:
        raise SystemExit("no usable good image (each must be under half the upload limit)")
    return kept


# ---------------------------------------------------------------------- requests


def _files(*uploads: Upload) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (u.name, u.data, u.content_type)) for u in uploads]


def _params(options: Options) -> dict[str, Any]:
    faces, threshold, aggregate = options
    params: dict[str, Any] = {"faces": faces, "aggregate": aggregate}
    if threshold is not None:
        params["threshold"] = threshold
    return params


def _good(pool: list[Upload], rng: random.Random) -> Planned:
    images = tuple(rng.sample(range(len(pool)), k=min(len(pool), rng.choice((1, 2)))))
    options: Options = (rng.choice(FACES), rng.choice(THRESHOLDS), rng.choice(AGGREGATES))
    files = _files(*(pool[i] for i in images))
    return Planned(GOOD, files=files, params=_params(options), images=images, options=options)


def _jpeg(pool: list[Upload]) -> Upload:
    return next((u for u in pool if u.content_type == "image/jpeg"), None) or Upload(
        "made.jpg", _encode(np.full((64, 64, 3), 90, np.uint8), "JPEG"), "image/jpeg"
    )


def _png(pool: list[Upload]) -> Upload:
    return next((u for u in pool if u.content_type == "image/png"), None) or Upload(
        "made.png", _encode(np.full((64, 64, 3), 90, np.uint8), "PNG"), "image/png"
    )


def _truncated(upload: Upload, name: str) -> Upload:
    return Upload(name, upload.data[: len(upload.data) // 2], upload.content_type)


def _streamed(head: bytes, size: int, tail: bytes) -> Callable[[], Iterator[bytes]]:
    """A body of ``size`` bytes between ``head`` and ``tail``, sent in chunks without a length."""

    def chunks() -> Iterator[bytes]:
        yield head
        for start in range(0, size, 256 * 1024):
            yield b"\0" * min(256 * 1024, size - start)
        yield tail

    return chunks


def _oversized_chunked(pool: list[Upload], limit: int) -> Planned:
    boundary = "loadtestboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'.encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    body = _streamed(head, limit + MIB, f"\r\n--{boundary}--\r\n".encode())
    return Planned("oversized_chunked", content=body, headers={"content-type": content_type})


OK_OPTIONS: Options = ("off", None, "max")
PDF_LIKE = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"1 0 obj\n<< /Type /Catalog >>\nendobj\n" * 40 + b"%%EOF\n"

# Each malformed kind: how to make it from the image pool and the upload limit, and the status
# docs/service.md documents for it (any 4xx passes; another 4xx is shown, not failed).
MALFORMED: dict[str, tuple[Callable[[list[Upload], int], Planned], int]] = {
    "empty": (lambda pool, limit: Planned("empty", files=_files(Upload("empty.jpg", b"", "image/jpeg"))), 415),
    "truncated_jpeg": (
        lambda pool, limit: Planned("truncated_jpeg", files=_files(_truncated(_jpeg(pool), "cut.jpg"))),
        415,
    ),
    "truncated_png": (
        lambda pool, limit: Planned("truncated_png", files=_files(_truncated(_png(pool), "cut.png"))),
        415,
    ),
    "text_as_jpeg": (
        lambda pool, limit: Planned(
            "text_as_jpeg", files=_files(Upload("notes.jpg", b"just some text, not an image\n" * 20, "image/jpeg"))
        ),
        415,
    ),
    "pdf_as_jpeg": (
        lambda pool, limit: Planned(
            "pdf_as_jpeg",
            files=_files(Upload("paper.jpg", PDF_LIKE, "image/jpeg")),
        ),
        415,
    ),
    "oversized": (
        lambda pool, limit: Planned(
            "oversized", files=_files(Upload("big.jpg", b"\xff\xd8\xff" + b"\0" * (limit + MIB), "image/jpeg"))
        ),
        413,
    ),
    "oversized_chunked": (_oversized_chunked, 413),
    "bad_faces": (
        lambda pool, limit: Planned("bad_faces", files=_files(pool[0]), params={"faces": "sideways"}),
        422,
    ),
    "bad_threshold": (
        lambda pool, limit: Planned("bad_threshold", files=_files(pool[0]), params={"threshold": 2}),
        422,
    ),
    "bad_aggregate": (
        lambda pool, limit: Planned("bad_aggregate", files=_files(pool[0]), params={"aggregate": "median"}),
        422,
    ),
    "no_file_field": (
        lambda pool, limit: Planned(
            "no_file_field", files=[("image", (pool[0].name, pool[0].data, pool[0].content_type))]
        ),
        422,
    ),
    "json_body": (
        lambda pool, limit: Planned(
            "json_body", content=b'{"file": "astronaut.jpg"}', headers={"content-type": "application/json"}
        ),
        422,
    ),
    "broken_multipart": (
        lambda pool, limit: Planned(
            "broken_multipart",
            content=b'--other\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
            headers={"content-type": "multipart/form-data; boundary=loadtestboundary"},
        ),
        400,
    ),
    "good_and_truncated": (
        lambda pool, limit: Planned(
            "good_and_truncated", files=_files(pool[0], _truncated(_jpeg(pool), "cut.jpg")), params=_params(OK_OPTIONS)
        ),
        415,
    ),
}


def plan(pool: list[Upload], n_requests: int, malformed: float, max_upload_bytes: int, seed: int) -> list[Planned]:
    """``n_requests`` requests, ``round(malformed * n_requests)`` of them malformed (the kinds taken
    in turn, so each appears when there are enough), in a seeded random order."""
    rng = random.Random(seed)
    n_bad = round(malformed * n_requests)
    kinds = list(MALFORMED)
    rng.shuffle(kinds)
    bad = [MALFORMED[kinds[i % len(kinds)]][0](pool, max_upload_bytes) for i in range(n_bad)]
    requests = bad + [_good(pool, rng) for _ in range(n_requests - n_bad)]
    rng.shuffle(requests)
    return requests


# ---------------------------------------------------------------------- the library's answers


def library_answers(
    model: str | None, runtime: str, pool: list[Upload], requests: Sequence[Planned]
) -> dict[tuple[int, Options], dict[str, Any]]:
    """The library's result for each distinct (image, options) of the good requests."""
    from deepfake_detector import Detector

    detector = Detector.load(model, runtime=runtime)
    keys = sorted({(i, r.options) for r in requests if r.options is not None for i in r.images}, key=repr)
    answers = {}
    for image, options in keys:
        faces, threshold, aggregate = options
        prediction = detector.predict(pool[image].data, faces=faces, threshold=threshold, aggregate=aggregate)
        answers[(image, options)] = prediction.to_dict()
    return answers


def compare(served: dict[str, Any], expected: dict[str, Any], tolerance: float = P_FAKE_TOLERANCE) -> str | None:
    """What differs between the service's answer for one image and the library's (None: they agree)."""
    problems = [
        f"{key}: served {served.get(key)!r}, library {expected.get(key)!r}"
        for key in ("label", "scored_on")
        if served.get(key) != expected.get(key)
    ]
    if len(served.get("faces") or []) != len(expected.get("faces") or []):
        problems.append(f"faces: served {len(served.get('faces') or [])}, library {len(expected.get('faces') or [])}")
    p_served, p_expected = served.get("p_fake"), expected.get("p_fake")
    if (p_served is None) != (p_expected is None) or (
        p_served is not None and not abs(float(p_served) - float(p_expected)) <= tolerance
    ):
        problems.append(f"p_fake: served {p_served!r}, library {p_expected!r}")
    return "; ".join(problems) or None


def check_answer(
    request: Planned, body: Any, pool: list[Upload], answers: dict[tuple[int, Options], dict[str, Any]]
) -> str | None:
    """What is wrong with a 200 answer to a good request (None: it matches the library)."""
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != len(request.images):
        return f"expected {len(request.images)} predictions, got {str(body)[:200]}"
    problems = []
    for image, served in zip(request.images, predictions):
        if served.get("path") != pool[image].name:
            problems.append(f"{pool[image].name}: served as {served.get('path')!r}")
        difference = compare(served, answers[(image, request.options)])
        if difference:
            problems.append(f"{pool[image].name} {_params(request.options)}: {difference}")
    return " | ".join(problems) or None


# ---------------------------------------------------------------------- the server


def free_port() -> int:
    """A TCP port free on loopback now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_ready(base_url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=base_url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with status {process.returncode} before it was ready")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the server was not ready after {timeout:.0f} s")


def _stop(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextmanager
def serving(
    model: str | None, runtime: str, port: int, max_upload_mb: int, log: Path, ready_timeout: float
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the service on ``127.0.0.1:port`` until the block ends; yields its URL and process."""
    command = [sys.executable, "-m", "deepfake_detector", "serve", "--host", HOST, "--port", str(port)]
    command += ["--max-upload-mb", str(max_upload_mb), "--runtime", runtime]
    if model is not None:
        command += ["--model", model]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://{HOST}:{port}"
            _wait_ready(base_url, process, ready_timeout)
            yield base_url, process
        finally:
            _stop(process)


def server_up(base_url: str, process: subprocess.Popen) -> bool:
    """The process is alive and answers ``/healthz`` with 200."""
    if process.poll() is not None:
        return False
    try:
        with httpx.Client(base_url=base_url, timeout=10.0) as client:
            return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------------- sending


def _send(client: httpx.Client, request: Planned) -> httpx.Response:
    content = request.content() if callable(request.content) else request.content
    return client.post(
        "/v1/predict", params=request.params, files=request.files, content=content, headers=request.headers
    )


def _outcome(
    index: int,
    request: Planned,
    client: httpx.Client,
    pool: list[Upload],
    answers: dict[tuple[int, Options], dict[str, Any]],
) -> Outcome:
    started = time.perf_counter()
    try:
        response = _send(client, request)
    except httpx.HTTPError as exc:
        latency = (time.perf_counter() - started) * 1000
        return Outcome(index, request.kind, None, latency, error=f"{type(exc).__name__}: {exc}")
    latency = (time.perf_counter() - started) * 1000
    outcome = Outcome(index, request.kind, response.status_code, latency)
    if response.status_code >= 500:
        outcome.error = response.text[:500]
    elif request.kind == GOOD and response.status_code == 200:
        try:
            outcome.mismatch = check_answer(request, response.json(), pool, answers)
        except ValueError as exc:  # not JSON
            outcome.mismatch = f"unreadable answer: {exc}"
    return outcome


def send_all(
    base_url: str,
    requests: Sequence[Planned],
    clients: int,
    pool: list[Upload],
    answers: dict[tuple[int, Options], dict[str, Any]],
    timeout: float,
) -> list[Outcome]:
    """Send ``requests`` from ``clients`` threads, each with its own connection pool."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(requests)):
        todo.put(index)
    outcomes: list[Outcome | None] = [None] * len(requests)

    def worker() -> None:
        with httpx.Client(base_url=base_url, timeout=timeout) as client:
            while True:
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                outcomes[index] = _outcome(index, requests[index], client, pool, answers)

    threads = [threading.Thread(target=worker, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [o for o in outcomes if o is not None]


# ---------------------------------------------------------------------- report


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _group(outcomes: Sequence[Outcome], kind: str) -> dict[str, Any]:
    latencies = [o.latency_ms for o in outcomes]
    statuses = Counter("none" if o.status is None else str(o.status) for o in outcomes)
    expected = 200 if kind == GOOD else MALFORMED[kind][1] if kind in MALFORMED else None
    return {
        "kind": kind,
        "requests": len(outcomes),
        "statuses": dict(sorted(statuses.items())),
        "documented_status": expected,
        "p50_ms": _percentile(latencies, 50),
        "p99_ms": _percentile(latencies, 99),
    }


def summarize(outcomes: Sequence[Outcome], wall_s: float, up: bool) -> dict[str, Any]:
    """Counts, latencies and the verdict of one run."""
    good = [o for o in outcomes if o.kind == GOOD]
    bad = [o for o in outcomes if o.kind != GOOD]
    kinds = [GOOD] + sorted({o.kind for o in bad})
    failures = {
        "5xx": [asdict(o) for o in outcomes if o.status is not None and o.status >= 500],
        "no_answer": [asdict(o) for o in outcomes if o.status is None],
        "malformed_not_4xx": [asdict(o) for o in bad if o.status is None or not 400 <= o.status < 500],
        "good_not_200": [asdict(o) for o in good if o.status != 200],
        "mismatches": [asdict(o) for o in good if o.mismatch],
    }
    return {
        "requests": len(outcomes),
        "wall_s": wall_s,
        "requests_per_s": len(outcomes) / wall_s if wall_s > 0 else None,
        "kinds": [_group([o for o in outcomes if o.kind == k], k) for k in kinds],
        "good": _group(good, "all good"),
        "malformed": _group(bad, "all malformed"),
        "failures": failures,
        "server_up": up,
        "passed": up and not any(failures.values()),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _row(group: dict[str, Any]) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in group["statuses"].items())
    documented = group["documented_status"] or ""
    return (
        f"| {group['kind']} | {group['requests']} | {statuses} | {documented} | "
        f"{_ms(group['p50_ms'])} | {_ms(group['p99_ms'])} |"
    )


def format_report(summary: dict[str, Any]) -> str:
    """The Markdown table and verdict lines of one run."""
    lines = ["| kind | requests | statuses | documented | p50 ms | p99 ms |", "|---|---:|---|---:|---:|---:|"]
    lines += [_row(g) for g in summary["kinds"]]
    lines += [_row(summary["good"]), _row(summary["malformed"]), ""]
    failures = summary["failures"]
    rate = summary["requests_per_s"]
    lines += [
        f"- {summary['requests']} requests in {summary['wall_s']:.1f} s: {rate or 0:.1f} requests/s",
        f"- 5xx: {len(failures['5xx'])}; no answer: {len(failures['no_answer'])}; "
        f"malformed without a 4xx: {len(failures['malformed_not_4xx'])}; "
        f"good without a 200: {len(failures['good_not_200'])}; mismatches with the library: "
        f"{len(failures['mismatches'])}",
        f"- server still up at the end (process alive, /healthz 200): {'yes' if summary['server_up'] else 'NO'}",
        f"- verdict: {'PASS' if summary['passed'] else 'FAIL'}",
    ]
    for name, items in failures.items():
        for item in items[:5]:
            detail = item.get("mismatch") or item.get("error") or f"status {item['status']}"
            lines.append(f"  - {name}: request {item['index']} ({item['kind']}): {detail}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", metavar="DIR", help="bundle folder (default: the shipped detector)")
    ap.add_argument("--runtime", choices=["auto", "torch", "onnx"], default="auto", help="default: auto")
    ap.add_argument("--requests", type=int, default=1000, help="default 1000")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--malformed", type=float, default=0.1, help="fraction of malformed requests (default 0.1)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    ap.add_argument("--max-upload-mb", type=int, default=2, help="the server's body limit (default 2)")
    ap.add_argument("--images", metavar="DIR", help="good images (default: pictures made from scikit-image's)")
    ap.add_argument("--seed", type=int, default=0, help="default 0")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for /readyz (default 180)")
    ap.add_argument("--json", metavar="OUT", help="also write the summary and every request's outcome here")
    return ap


def _check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.requests < 1 or args.clients < 1 or args.max_upload_mb < 1:
        ap.error("--requests, --clients and --max-upload-mb must be at least 1")
    if not 0.0 <= args.malformed <= 1.0 or math.isnan(args.malformed):
        ap.error("--malformed must lie in [0, 1]")
    if not 0 <= args.port < 65536:
        ap.error("--port must lie in [0, 65535]")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One whole run: plan, the library's answers, the server, the requests; returns the summary."""
    max_upload_bytes = args.max_upload_mb * MIB
    pool = _fitting(folder_images(args.images) if args.images else sample_images(), max_upload_bytes)
    requests = plan(pool, args.requests, args.malformed, max_upload_bytes, args.seed)
    print(f"computing the library's answers for {len(pool)} images...", file=sys.stderr)
    answers = library_answers(args.model, args.runtime, pool, requests)
    port = args.port or free_port()
    with tempfile.TemporaryDirectory(prefix="load-test-") as folder:
        log = Path(folder) / "server.log"
        try:
            with serving(args.model, args.runtime, port, args.max_upload_mb, log, args.ready_timeout) as (url, proc):
                print(f"sending {len(requests)} requests from {args.clients} clients to {url}...", file=sys.stderr)
                started = time.perf_counter()
                outcomes = send_all(url, requests, args.clients, pool, answers, args.timeout)
                wall = time.perf_counter() - started
                up = server_up(url, proc)
        except (RuntimeError, TimeoutError) as exc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{exc}; the server's log ends:\n{tail}") from exc
        server_log = log.read_text(errors="replace").splitlines()
    summary = summarize(outcomes, wall, up)
    summary["outcomes"] = [asdict(o) for o in outcomes]
    summary["server_log_errors"] = [line for line in server_log if _LOG_TROUBLE.search(line)][:50]
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load test; 0 when it passed, 1 when it did not (or the server never got ready)."""
    ap = build_parser()
    args = ap.parse_args(argv)
    _check_args(ap, args)
    try:
        summary = run(args)
    except RuntimeError as exc:
        print(f"load test: {exc}", file=sys.stderr)
        return 1
    print(format_report(summary))
    for line in summary["server_log_errors"][:10]:
        print(f"  server log: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
