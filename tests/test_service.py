"""The REST service: answers match the library, bad uploads get 4xx JSON, nothing gets 5xx.

Every app here serves the tiny ``trained_bundle`` passed in explicitly, so the shipped
model is never loaded.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402
from media_factory import write_video  # noqa: E402

from deepfake_detector.detector import Detector  # noqa: E402
from deepfake_detector.errors import InvalidArgumentError  # noqa: E402
from deepfake_detector.results import Prediction  # noqa: E402
from deepfake_detector.service import create_app  # noqa: E402
from deepfake_detector.service.schemas import PredictionModel  # noqa: E402


@pytest.fixture(scope="module")
def detector(trained_bundle: Path) -> Detector:
    return Detector.load(trained_bundle, device="cpu")


@pytest.fixture(scope="module")
def client(detector: Detector) -> Iterator[TestClient]:
    app = create_app(detector, max_upload_bytes=2_000_000, max_pixels=1_000_000)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _png(width: int = 96, height: int = 80, seed: int = 0, flat: bool = False) -> bytes:
    """A PNG of noise, or of one colour (``flat``: a large image in few bytes)."""
    shape = (height, width, 3)
    pixels = np.full(shape, 128, np.uint8) if flat else np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _assert_error(response, status: int, type_: str) -> dict:  # noqa: ANN001 - httpx.Response
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == type_
    assert body["detail"]
    assert "Traceback" not in response.text
    return body


def test_schema_mirrors_the_library_result() -> None:
    library = {f.name for f in dataclasses.fields(Prediction)} - {"artifacts"}
    assert set(PredictionModel.model_fields) == library


def test_status_endpoints(client: TestClient, detector: Detector) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == [detector.name]
    assert models[0]["threshold"] == pytest.approx(detector.threshold)
    assert client.get("/docs").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_readyz_waits_for_the_model(trained_bundle: Path) -> None:
    app = create_app(model_dir=trained_bundle)
    with TestClient(app) as c:  # the model loads in the background; readiness follows it
        assert c.get("/healthz").status_code == 200
        for _ in range(200):
            if c.get("/readyz").status_code == 200:
                break
            __import__("time").sleep(0.05)
        assert c.get("/readyz").status_code == 200
        assert c.get("/v1/models").json()["models"][0]["arch"] == "seed-cnn"


def test_not_ready_is_503_json(detector: Detector) -> None:
    app = create_app(detector)
    app.state.detector = None  # as while the model loads
    with TestClient(app) as c:
        _assert_error(c.get("/readyz"), 503, "not_ready")
        _assert_error(c.post("/v1/predict", files={"file": ("a.png", _png())}), 503, "not_ready")


def test_predict_matches_the_library(client: TestClient, detector: Detector) -> None:
    data = _png()
    response = client.post("/v1/predict", files={"file": ("face.png", data, "image/png")}, params={"faces": "off"})
    assert response.status_code == 200, response.text
    (served,) = response.json()["predictions"]
    expected = detector.predict(data, faces="off")
    assert served["path"] == "face.png"
    assert served["label"] == expected.label
    assert served["p_fake"] == pytest.approx(expected.p_fake, abs=1e-6)
    assert served["model"] == detector.name
    assert Prediction.from_dict(served).p_fake == pytest.approx(expected.p_fake, abs=1e-6)


def test_several_files_in_one_request(client: TestClient, detector: Detector) -> None:
    uploads = [("file", (f"img{i}.png", _png(seed=i), "image/png")) for i in range(3)]
    uploads.append(("file", ("photo.jpg", _jpeg(), "image/jpeg")))
    response = client.post("/v1/predict", files=uploads, params={"threshold": 0.3})
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert [p["path"] for p in served] == ["img0.png", "img1.png", "img2.png", "photo.jpg"]
    for p, (_, (_, data, _)) in zip(served, uploads):
        expected = detector.predict(data, threshold=0.3)
        assert p["p_fake"] == pytest.approx(expected.p_fake, abs=1e-5)
        assert p["label"] == expected.label
        assert p["threshold"] == 0.3


def test_uncertain_options_match_the_library(client: TestClient, detector: Detector) -> None:
    """The band and the re-encoding check are the library's options, with its answers; a
    large JPEG is decoded at reduced scale by both alike."""
    big = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 60, 3), np.uint8)).resize((900, 600))
    buffer = io.BytesIO()
    big.save(buffer, format="JPEG", quality=92)
    for params in ({"uncertain_band": 0.49}, {"reencode_check": "true"}, {"reencode_check": "false"}, {}):
        response = client.post("/v1/predict", files={"file": ("big.jpg", buffer.getvalue())}, params=params)
        assert response.status_code == 200, response.text
        (served,) = response.json()["predictions"]
        options = {k: (v == "true" if k == "reencode_check" else v) for k, v in params.items()}
        expected = detector.predict(buffer.getvalue(), **options)
        assert served["p_fake"] == pytest.approx(expected.p_fake, abs=1e-6)
        assert (served["label"], served["note"]) == (expected.label, expected.note)


def test_explain_adds_a_heat_map_per_judged_region(client: TestClient, detector: Detector) -> None:
    import base64

    uploads = [("file", ("a.png", _png(width=120, height=90, seed=4))), ("file", ("b.jpg", _jpeg(seed=5)))]
    response = client.post("/v1/predict", files=uploads, params={"explain": "true"})
    assert response.status_code == 200, response.text
    for served, (_, (_, data)) in zip(response.json()["predictions"], uploads):
        expected = detector.predict(data)
        assert served["p_fake"] == pytest.approx(expected.p_fake, abs=1e-6)
        (heat,) = served["heat_maps"]  # a whole-image model: one map, over the whole picture
        width, height = Image.open(io.BytesIO(data)).size
        assert heat["name"] == "image" and heat["region"] == [0, 0, width, height]
        assert heat["p_fake"] == pytest.approx(expected.p_fake, abs=1e-4)
        overlay = Image.open(io.BytesIO(base64.b64decode(heat["png"])))
        assert overlay.format == "PNG" and overlay.size == (width, height)
    plain = client.post("/v1/predict", files=uploads[:1]).json()["predictions"][0]
    assert plain["heat_maps"] is None


@pytest.mark.parametrize(
    ("name", "data"),
    [("notes.txt", b"just some text, not an image\n"), ("empty.png", b""), ("cut.png", _png()[:200])],
)
def test_not_an_image_is_415(client: TestClient, name: str, data: bytes) -> None:
    body = _assert_error(client.post("/v1/predict", files={"file": (name, data)}), 415, "unsupported_media")
    assert name in body["detail"]


def test_one_bad_file_fails_the_request_naming_it(client: TestClient) -> None:
    uploads = [("file", ("good.png", _png())), ("file", ("bad.jpg", b"\xff\xd8\xff garbage"))]
    body = _assert_error(client.post("/v1/predict", files=uploads), 415, "unsupported_media")
    assert "bad.jpg" in body["detail"]


def test_oversized_upload_is_413(client: TestClient) -> None:
    big = b"\0" * 2_100_000
    _assert_error(client.post("/v1/predict", files={"file": ("big.png", big)}), 413, "too_large")


def test_oversized_streamed_body_is_413(client: TestClient) -> None:
    """A body with no Content-Length is counted as it arrives."""
    boundary = "x0x0x0"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'.encode()

    def chunks() -> Iterator[bytes]:
        yield head
        for _ in range(30):
            yield b"\0" * 100_000
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/predict", content=chunks(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    _assert_error(response, 413, "too_large")


def test_too_many_pixels_is_413(client: TestClient) -> None:
    body = _assert_error(
        client.post("/v1/predict", files={"file": ("wide.png", _png(width=1200, height=1000, flat=True))}),
        413,
        "too_large",
    )
    assert "wide.png" in body["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"faces": "bogus"},
        {"threshold": 2},
        {"threshold": "abc"},
        {"threshold": "nan"},
        {"aggregate": "median"},
        {"uncertain_band": 0.5},
        {"uncertain_band": -0.1},
        {"reencode_check": "sometimes"},
        {"explain": "maybe"},
    ],
)
def test_bad_options_are_422(client: TestClient, params: dict) -> None:
    body = _assert_error(
        client.post("/v1/predict", files={"file": ("a.png", _png())}, params=params), 422, "invalid_request"
    )
    assert body["fields"][0]["loc"][0] == "query"


def test_too_many_files_is_400(detector: Detector) -> None:
    with TestClient(create_app(detector, max_files=2)) as c:
        uploads = [("file", (f"{i}.png", _png(seed=i))) for i in range(3)]
        _assert_error(c.post("/v1/predict", files=uploads), 400, "bad_request")


def test_a_body_the_multipart_parser_refuses_says_why(client: TestClient) -> None:
    """A file name of 5,000 characters overflows a part's header limit: the 400 says so
    instead of only "Invalid multipart data"."""
    body = _assert_error(client.post("/v1/predict", files={"file": ("x" * 5000 + ".png", _png())}), 400, "bad_request")
    assert "Maximum header size exceeded" in body["detail"] and "file name" in body["detail"]
    assert "x" * 50 not in body["detail"]


def test_missing_file_and_unknown_route(client: TestClient) -> None:
    _assert_error(client.post("/v1/predict"), 422, "invalid_request")
    _assert_error(client.get("/v1/nothing"), 404, "not_found")
    _assert_error(client.get("/v1/predict"), 405, "method_not_allowed")


def test_video_round_trip(client: TestClient, detector: Detector, tmp_path: Path) -> None:
    path = write_video(tmp_path / "clip.mp4", frames=12, width=64, height=48)
    response = client.post(
        "/v1/predict/video",
        files={"file": ("clip.mp4", path.read_bytes(), "video/mp4")},
        params={"max_frames": 4, "faces": "off"},
    )
    assert response.status_code == 200, response.text
    served = response.json()
    from deepfake_detector.media.video import FrameSampling

    expected = detector.predict(path, faces="off", sampling=FrameSampling(max_frames=4))
    assert served["kind"] == "video" and served["path"] == "clip.mp4"
    assert served["video"]["frames_sampled"] == expected.video.frames_sampled == 4
    assert served["p_fake"] == pytest.approx(expected.p_fake, abs=1e-5)
    assert served["label"] == expected.label


def test_bad_videos(client: TestClient, tmp_path: Path) -> None:
    body = _assert_error(
        client.post("/v1/predict/video", files={"file": ("clip.mp4", b"not a video at all")}), 415, "unsupported_media"
    )
    assert "clip.mp4" in body["detail"] and str(tmp_path) not in body["detail"]
    _assert_error(client.post("/v1/predict/video", files={"file": ("photo.png", _png())}), 415, "unsupported_media")
    big = write_video(tmp_path / "big.mp4", frames=2, width=1280, height=800)
    _assert_error(client.post("/v1/predict/video", files={"file": ("big.mp4", big.read_bytes())}), 413, "too_large")
    _assert_error(
        client.post("/v1/predict/video", files={"file": ("a.mp4", b"x")}, params={"max_frames": 0}),
        422,
        "invalid_request",
    )


def test_unexpected_errors_are_500_with_an_id(detector: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(detector)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(detector, "predict_many", explode)
    with TestClient(app, raise_server_exceptions=False) as c:
        response = c.post("/v1/predict", files={"file": ("a.png", _png())})
    body = _assert_error(response, 500, "internal_error")
    assert body["error_id"] and "secret" not in response.text


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_generated_request_makes_a_server_error(detector: Detector, mode: str) -> None:
    """Requests Schemathesis derives from the OpenAPI schema, valid ones and malformed bodies
    and options alike, get an answer below 500, in the service's error shape when refused.

    Driven through Hypothesis directly: Schemathesis's pytest plugin (``from_fixture``)
    does not run under pytest 9."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    app = create_app(detector, max_upload_bytes=200_000, max_pixels=250_000)
    strategy = schemathesis.openapi.from_asgi("/openapi.json", app).as_strategy(generation_mode=GenerationMode(mode))

    @given(case=strategy)
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(case: schemathesis.Case) -> None:
        response = case.call()
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
        if response.status_code >= 400:
            assert {"type", "detail"} <= set(response.json())

    check()


def test_malformed_multipart_bodies_are_4xx(client: TestClient) -> None:
    """Raw bodies the schema cannot describe: broken boundaries, cut-off parts, junk bytes."""
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n' + _png()[:300]
    bodies = st.one_of(
        st.binary(max_size=2000),
        st.binary(max_size=300).map(lambda junk: part + junk),
        st.integers(0, len(part)).map(lambda cut: part[:cut] + b"\r\n--b--\r\n"),
    )
    content_types = st.sampled_from(
        ["multipart/form-data; boundary=b", "multipart/form-data", "application/octet-stream", "text/plain"]
    )

    @given(body=bodies, content_type=content_types, path=st.sampled_from(["/v1/predict", "/v1/predict/video"]))
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    def check(body: bytes, content_type: str, path: str) -> None:
        response = client.post(path, content=body, headers={"content-type": content_type})
        assert 400 <= response.status_code < 500, response.text
        assert {"type", "detail"} <= set(response.json())

    check()


def test_serve_command_builds_the_app(trained_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    from deepfake_detector.cli import EXIT_OK, EXIT_USAGE, main

    served: dict = {}

    class Server:
        """Records what it was asked to serve instead of listening."""

        def __init__(self, config: dict) -> None:
            self.config, self.started = config, False

        def run(self) -> None:
            served.update(self.config)
            self.started = True

    monkeypatch.setattr(uvicorn, "Config", lambda app, **options: {"app": app, **options})
    monkeypatch.setattr(uvicorn, "Server", Server)
    assert main(["serve", "--model", str(trained_bundle), "--port", "8123", "--max-upload-mb", "3"]) == EXIT_OK
    assert (served["host"], served["port"]) == ("127.0.0.1", 8123)
    assert served["app"].state.settings.max_upload_bytes == 3 * 1024 * 1024
    assert served["app"].state.detector is not None
    assert main(["serve", "--model", str(trained_bundle / "missing")]) == EXIT_USAGE


def test_real_server_on_loopback(detector: Detector) -> None:
    """Through uvicorn and a real socket: real Content-Length headers, real multipart framing."""
    import threading
    import time

    import httpx
    import uvicorn

    app = create_app(detector, max_upload_bytes=500_000)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert http.get("/readyz").status_code == 200
            ok = http.post("/v1/predict", files={"file": ("a.png", _png())})
            assert ok.status_code == 200 and ok.json()["predictions"][0]["p_fake"] is not None
            _assert_error(http.post("/v1/predict", files={"file": ("big.png", b"\0" * 600_000)}), 413, "too_large")
            _assert_error(http.post("/v1/predict", files={"file": ("a.txt", b"hello")}), 415, "unsupported_media")
            assert http.get("/healthz").status_code == 200  # still up
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_requests_that_arrive_together_share_forward_passes(detector: Detector) -> None:
    """Eight requests queued at once are judged in fewer predict_many calls than requests,
    each gets its own answers (the library's), and other options are kept apart."""
    import asyncio

    from deepfake_detector.service.batching import RequestBatcher

    pictures = [np.random.default_rng(i).integers(0, 256, (70 + i, 90, 3), np.uint8) for i in range(10)]

    async def burst() -> tuple[list, list, int]:
        batcher = RequestBatcher(max_images=64)
        options = {"faces": "off", "threshold": None}
        together = await asyncio.gather(
            *(batcher.predict(detector, pictures[i : i + 1], options) for i in range(8)),
            batcher.predict(detector, pictures[8:10], {**options, "threshold": 0.2}),
        )
        calls = batcher.calls
        await batcher.close()
        return together[:8], together[8], calls

    alone, pair, calls = asyncio.run(burst())
    assert calls == 2  # all nine were queued before the worker ran: one call per distinct options
    for (served,), picture in zip(alone, pictures):
        assert served.p_fake == pytest.approx(detector.predict(picture, faces="off").p_fake, abs=1e-5)
    assert [p.threshold for p in pair] == [0.2, 0.2]
    assert [p.label for p in pair] == [detector.predict(p, faces="off", threshold=0.2).label for p in pictures[8:]]


def test_batcher_cuts_groups_at_max_images(detector: Detector) -> None:
    from deepfake_detector.service.batching import RequestBatcher, _Job

    batcher = RequestBatcher(max_images=3)
    jobs = [_Job(detector, [np.zeros((8, 8, 3), np.uint8)] * n, {"faces": "off"}, None) for n in (2, 1, 2, 1)]
    assert [[len(j.images) for j in g] for g in batcher._groups(jobs)] == [[2, 1], [2, 1]]


def test_batcher_answers_every_request_even_when_the_model_fails(detector: Detector) -> None:
    """A failing predict_many reaches each request of its group as that error; other groups
    and later requests are still served, and closing cancels what is left."""
    import asyncio

    from deepfake_detector.service.batching import RequestBatcher

    picture = np.zeros((40, 40, 3), np.uint8)

    async def scenario() -> tuple[list, Prediction]:
        batcher = RequestBatcher()
        outcomes = await asyncio.gather(
            batcher.predict(detector, [picture], {"faces": "bogus"}),  # refused by predict_many
            batcher.predict(detector, [picture], {"faces": "bogus"}),
            batcher.predict(detector, [picture], {"faces": "off"}),
            return_exceptions=True,
        )
        (later,) = await batcher.predict(detector, [picture], {"faces": "off"})
        await batcher.close()
        return outcomes, later

    outcomes, later = asyncio.run(scenario())
    assert all(isinstance(o, InvalidArgumentError) for o in outcomes[:2])
    assert outcomes[2][0].p_fake == pytest.approx(later.p_fake) and later.ok


def test_explain_of_a_model_served_from_its_export_alone_is_501(trained_bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    import shutil

    from deepfake_detector.export import export_bundle

    exported = export_bundle(shutil.copytree(trained_bundle, tmp_path / "b"), tmp_path / "export")
    with TestClient(create_app(Detector.load(exported, runtime="onnx")), raise_server_exceptions=False) as c:
        upload = {"file": ("a.png", _png())}
        assert c.post("/v1/predict", files=upload).status_code == 200
        response = c.post("/v1/predict", files=upload, params={"explain": "true"})
        body = _assert_error(response, 501, "explain_unavailable")
        assert "layers" in body["detail"]
