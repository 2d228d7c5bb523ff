"""The web page: its logic, the page itself under Streamlit's AppTest, the ``app`` command,
and one real browser (Debian's chromium driven by Playwright) uploading a picture.

Every page test names the models the page offers: ``DEEPFAKE_DETECTOR_MODELS`` gives the
tiny trained bundle (or a copy edited for the test), and the shipped detector is hidden, or
replaced by a stand-in where a test is about it, so no test depends on what this install ships.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from media_factory import write_video_of
from PIL import Image

import deepfake_detector.shipped as shipped
from deepfake_detector import Detector, Prediction
from deepfake_detector.app import APP_SCRIPT, MAX_UPLOAD_ENV, MODELS_ENV, launch_command, logic
from deepfake_detector.bundle import CONFIG_FILE
from deepfake_detector.cli import main
from deepfake_detector.data.synthetic import synthetic_image
from deepfake_detector.errors import BundleError, InvalidArgumentError
from deepfake_detector.explain import Explainer
from deepfake_detector.relabel import relabel
from deepfake_detector.results import Artifacts, FaceResult

streamlit_testing = pytest.importorskip("streamlit.testing.v1", reason="streamlit is not installed")
AppTest = streamlit_testing.AppTest

CHROMIUM = "/usr/bin/chromium"
METRIC_LABELS = ["Prediction", "Confidence", "Processing time"]
# AppTest gained st.file_uploader in 1.56, st.image and st.download_button in 1.59 (release
# notes); these tests pass on 1.59 and fail on 1.58, which sees no pictures or downloads.
STREAMLIT_FLOOR = (1, 59)
TRAINED_ON = "generated faces: smooth real ones and fakes with a blending seam"
TERMS = "for tests only"

OpenPage = Callable[..., AppTest]


def _png(seed: int, fake: bool = True, size: int = 128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_image(np.random.default_rng(seed), size, fake=fake)).save(buffer, "PNG")
    return buffer.getvalue()


def _bundle_copy(trained_bundle: Path, out: Path, *, training: dict[str, str] | None = None, **config: Any) -> Path:
    """A copy of the trained bundle at ``out`` with ``config`` keys replaced and ``training``
    keys added; a new folder is also a new key for the page's model cache."""
    shutil.copytree(trained_bundle, out)
    data = json.loads((out / CONFIG_FILE).read_text())
    data.update(config)
    data["training"] = {**data["training"], **(training or {})}
    (out / CONFIG_FILE).write_text(json.dumps(data))
    return out


@pytest.fixture()
def open_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> OpenPage:
    """Opens the page on the models a test names, run once with nothing uploaded: ``models``
    as ``--models DIR`` (or none), the shipped detector hidden unless ``shipped_bundle``
    stands in for it, and ``max_upload_mb`` as ``--max-upload-mb``."""

    def open_(models: Path | None, *, shipped_bundle: Path | None = None, max_upload_mb: int | None = None) -> AppTest:
        if shipped_bundle is None:
            monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "no-shipped-weights")
        else:
            monkeypatch.setattr(shipped, "WEIGHTS_DIR", shipped_bundle.parent)
            monkeypatch.setattr(shipped, "DEFAULT_MODEL", shipped_bundle.name)
        if models is None:
            monkeypatch.delenv(MODELS_ENV, raising=False)
        else:
            monkeypatch.setenv(MODELS_ENV, str(models))
        if max_upload_mb is None:
            monkeypatch.delenv(MAX_UPLOAD_ENV, raising=False)
        else:
            monkeypatch.setenv(MAX_UPLOAD_ENV, str(max_upload_mb))
        return AppTest.from_file(str(APP_SCRIPT), default_timeout=120).run()

    return open_


@pytest.fixture()
def page(open_page: OpenPage, trained_bundle: Path) -> AppTest:
    """The page with the trained bundle as its only model, run once with nothing uploaded."""
    return open_page(trained_bundle)


def _upload(page: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    page.file_uploader(key="uploads").set_value(list(files))
    return page.run()


def _metrics(page: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in page.metric}


# ---------------------------------------------------------------- relabel (core)


def _prediction(p_fake: float, threshold: float, faces: list[float]) -> Prediction:
    image = np.zeros((8, 8, 3), np.uint8)
    face_results = [FaceResult(box=(0, 0, 4, 4), detector_score=1.0, p_fake=p, label="x") for p in faces]
    pred = Prediction(
        path="a.png", label="x", p_fake=p_fake, confidence=0.0, seconds=0.1, threshold=threshold, faces=face_results
    )
    pred.artifacts = Artifacts(images=[("image", image, face_results)])
    return pred


def test_relabel_moves_every_label_and_keeps_the_original() -> None:
    original = _prediction(0.8, 0.5, [0.8, 0.3])
    moved = relabel(original, 0.7)
    assert (moved.label, moved.threshold, moved.confidence) == ("fake", 0.7, pytest.approx(0.5 + 0.5 * 0.1 / 0.3))
    assert [f.label for f in moved.faces] == ["fake", "real"]
    assert [f.label for f in moved.artifacts.images[0][2]] == ["fake", "real"]
    assert moved.artifacts.images[0][1] is original.artifacts.images[0][1]  # pixels shared, not copied
    assert original.label == "x" and [f.label for f in original.faces] == ["x", "x"]
    assert relabel(original, 0.75, band=0.1).label == "uncertain"
    assert relabel(original, 0.9).label == "real"


def test_relabel_at_the_original_threshold_is_the_original() -> None:
    original = _prediction(0.6, 0.5, [])
    assert relabel(original, 0.5) is original


def test_relabel_refuses_bad_values() -> None:
    with pytest.raises(InvalidArgumentError, match="threshold"):
        relabel(_prediction(0.6, 0.5, []), 1.5)
    with pytest.raises(InvalidArgumentError, match="band"):
        relabel(_prediction(0.6, 0.5, []), 0.4, band=0.7)


# ---------------------------------------------------------------- page logic without Streamlit


def test_settings_from_the_environment() -> None:
    assert logic.Settings.from_env({}) == logic.Settings(None, 200)
    settings = logic.Settings.from_env({MODELS_ENV: "/m", MAX_UPLOAD_ENV: "3"})
    assert (settings.models_dir, settings.max_upload_bytes) == ("/m", 3 * 1024 * 1024)


def test_find_models(trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", tmp_path / "no-weights")
    assert logic.find_models(None)[0] == {}
    assert "shipped detector is missing" in logic.find_models(None)[1]
    assert logic.find_models(trained_bundle)[0] == {trained_bundle.name: trained_bundle}
    folder = tmp_path / "models"
    shutil.copytree(trained_bundle, folder / "b")
    shutil.copytree(trained_bundle, folder / "a")
    (folder / "notes").mkdir()
    assert list(logic.find_models(folder)[0]) == ["a", "b"]
    with pytest.raises(BundleError, match="no model bundle"):
        logic.find_models(folder / "notes")
    with pytest.raises(BundleError, match="not found"):
        logic.find_models(tmp_path / "absent")
    monkeypatch.setattr(shipped, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(shipped, "DEFAULT_MODEL", "a")
    assert logic.find_models(trained_bundle)[0] == {logic.SHIPPED_LABEL: folder / "a", "seed": trained_bundle}


def test_judged_uploads_become_rows_and_downloads(trained_bundle: Path) -> None:
    detector = Detector.load(trained_bundle, device="cpu")
    good = logic.judge_upload(detector, "good.png", _png(1), 10**7)
    bad = logic.judge_upload(detector, "bad.png", b"no picture", 10**7)
    big = logic.judge_upload(detector, "big.png", _png(2), 100)
    assert good.prediction.ok and good.prediction.path == "good.png" and good.prediction.artifacts is not None
    assert not bad.prediction.ok and bad.prediction.error.startswith("bad.png: ")
    assert "over this page's limit" in big.prediction.error
    predictions = [good.prediction, bad.prediction]
    rows = logic.table_rows(predictions)
    assert [list(r) for r in rows] == [list(logic.TABLE_COLUMNS)] * 2
    assert rows[0]["verdict"] == good.prediction.label and rows[1]["verdict"] == "failed"
    parsed = list(csv.DictReader(io.StringIO(logic.csv_bytes(predictions).decode())))
    assert [r["path"] for r in parsed] == ["good.png", "bad.png"]
    assert json.loads(logic.json_bytes(predictions)) == [p.to_dict() for p in predictions]


def test_video_upload_gives_a_timeline(trained_bundle: Path, tmp_path: Path) -> None:
    frames = [synthetic_image(np.random.default_rng(i), 96, fake=i % 2 == 0) for i in range(12)]
    data = write_video_of(tmp_path / "clip.mp4", frames).read_bytes()
    detector = Detector.load(trained_bundle, device="cpu")
    judged = logic.judge_upload(detector, "clip.mp4", data, 10**8)
    assert judged.prediction.ok and judged.prediction.kind == "video" and judged.prediction.path == "clip.mp4"
    chart = logic.timeline_frame(judged.prediction.video, 0.4)
    assert list(chart.columns) == ["whole frame", "threshold"] and len(chart) == judged.prediction.video.frames_sampled
    assert (chart["threshold"] == 0.4).all()
    broken = logic.judge_upload(detector, "broken.mp4", data[: len(data) // 3] + os.urandom(2000), 10**8)
    assert not broken.prediction.ok and broken.prediction.error.startswith("broken.mp4: ")


def test_an_unexpected_error_reports_the_time_it_took() -> None:
    class Broken:
        def decode_size(self, faces: str = "auto") -> None:
            return None

        def predict(self, *args: object, **kwargs: object) -> Prediction:
            time.sleep(0.05)
            raise RuntimeError("out of memory")

    judged = logic.judge_upload(Broken(), "photo.png", _png(3), 10**7)
    assert judged.prediction.error == "photo.png: unexpected error (RuntimeError: out of memory)"
    assert judged.prediction.seconds >= 0.05


def test_model_facts(trained_bundle: Path) -> None:
    detector = Detector.load(trained_bundle, device="cpu")
    facts = logic.model_facts(detector)
    assert facts["architecture"] == "seed-cnn" and facts["re-encoding check"] == "off"
    assert facts["threshold"] > 0 and facts["uncertain band"] == "none"
    assert isinstance(facts["validation scores"], dict)
    assert facts["trained on"] == detector.config.training["data"]  # no description: the data it read
    assert facts["terms of use"] == "not recorded"


def test_model_facts_say_what_it_was_trained_on_and_its_terms(trained_bundle: Path, tmp_path: Path) -> None:
    bundle = _bundle_copy(trained_bundle, tmp_path / "described", training={"trained_on": TRAINED_ON, "terms": TERMS})
    detector = Detector.load(bundle, device="cpu")
    summary = detector.summary()
    assert (summary["trained_on"], summary["terms"]) == (TRAINED_ON, TERMS)
    assert summary["input_size"] == 128  # the keys it had stay
    facts = logic.model_facts(detector)
    assert (facts["trained on"], facts["terms of use"]) == (TRAINED_ON, TERMS)


# ---------------------------------------------------------------- the page under AppTest


def test_page_before_any_upload(page: AppTest, trained_bundle: Path) -> None:
    assert not page.exception and not page.error
    assert page.selectbox(key="model").options == [trained_bundle.name]
    assert page.slider[0].value == Detector.load(trained_bundle, device="cpu").threshold  # the bundle's, unrounded
    assert "Drag and drop" in page.info[0].value
    assert page.slider[0].label == "Threshold"
    assert any("seed-cnn" in m.value for m in page.sidebar.markdown)  # "About this model"


def test_the_shipped_detector_is_offered_first_and_chosen(
    open_page: OpenPage, trained_bundle: Path, tmp_path: Path
) -> None:
    stand_in = _bundle_copy(trained_bundle, tmp_path / "weights" / "default", threshold=0.8391819894313812)
    page = open_page(trained_bundle, shipped_bundle=stand_in)
    assert not page.exception and not page.error
    picker = page.selectbox(key="model")
    assert picker.options == [logic.SHIPPED_LABEL, trained_bundle.name] and picker.value == logic.SHIPPED_LABEL
    assert page.slider[0].value == 0.8391819894313812
    picker.set_value(trained_bundle.name).run()
    assert page.slider[0].value == Detector.load(trained_bundle, device="cpu").threshold


def test_about_says_what_the_model_was_trained_on_and_its_terms(
    open_page: OpenPage, trained_bundle: Path, tmp_path: Path
) -> None:
    bundle = _bundle_copy(trained_bundle, tmp_path / "described", training={"trained_on": TRAINED_ON, "terms": TERMS})
    page = open_page(bundle)
    about = "\n".join(m.value for m in page.sidebar.markdown)
    assert f"**trained on**: {TRAINED_ON}" in about and f"**terms of use**: {TERMS}" in about


def test_the_model_is_loaded_once_for_many_uploads(
    open_page: OpenPage, trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = _bundle_copy(trained_bundle, tmp_path / "fresh")  # a folder no earlier test loaded
    loads = []
    load = Detector.load
    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, *a, **k: loads.append(a) or load(*a, **k)))
    page = open_page(bundle)
    _upload(page, ("a.png", _png(4), "image/png"))
    _upload(page, ("a.png", _png(4), "image/png"), ("b.png", _png(5, fake=False), "image/png"))
    page.toggle(key="gradcam").set_value(True).run()
    assert not page.exception and not page.error and len(page.dataframe[0].value) == 2
    _upload(open_page(bundle), ("c.png", _png(6), "image/png"))  # another visitor
    assert loads == [(str(bundle),)]


def test_one_image_shows_the_three_metrics_and_the_picture(page: AppTest) -> None:
    _upload(page, ("photo.png", _png(3), "image/png"))
    assert not page.exception and not page.error
    assert [m.label for m in page.metric] == METRIC_LABELS
    metrics = _metrics(page)
    assert metrics["Prediction"] in ("Fake", "Real")
    assert metrics["Confidence"].endswith("%") and metrics["Processing time"].endswith(" s")
    assert len(page.get("image")) == 1
    assert any(c.value.startswith("p_fake ") for c in page.caption)


def test_threshold_slider_relabels_without_the_model(page: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    predict = Detector.predict
    monkeypatch.setattr(Detector, "predict", lambda self, *a, **k: calls.append(1) or predict(self, *a, **k))
    _upload(page, ("photo.png", _png(3), "image/png"))
    page.slider[0].set_value(0.0).run()
    assert _metrics(page)["Prediction"] == "Fake"
    page.slider[0].set_value(1.0).run()
    assert _metrics(page)["Prediction"] == "Real"
    assert calls == [1]


def test_reset_brings_back_the_models_own_threshold_and_verdicts(
    page: AppTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    predict = Detector.predict

    def reencode_disagrees(self: Detector, *args: Any, **kwargs: Any) -> Prediction:
        """The model's own run, with the verdict the re-encoding check gives a fragile score."""
        return replace(predict(self, *args, **kwargs), label="uncertain")

    monkeypatch.setattr(Detector, "predict", reencode_disagrees)
    own = page.slider[0].value
    reset = page.button[0]
    assert reset.label.startswith("Reset to the model's threshold") and reset.disabled
    _upload(page, ("photo.png", _png(3), "image/png"))
    assert _metrics(page)["Prediction"] == "Uncertain"
    page.slider[0].set_value(0.0).run()
    assert _metrics(page)["Prediction"] == "Fake" and not page.button[0].disabled
    page.button[0].click().run()
    assert page.slider[0].value == own and page.button[0].disabled
    assert _metrics(page)["Prediction"] == "Uncertain"  # the model's own verdict again


def test_uncertain_is_shown_as_uncertain(open_page: OpenPage, trained_bundle: Path, tmp_path: Path) -> None:
    page = open_page(_bundle_copy(trained_bundle, tmp_path / "banded", uncertain={"band": 0.2}))
    _upload(page, ("photo.png", _png(3), "image/png"))
    p_fake = float(page.caption[0].value.split()[1])
    page.slider[0].set_value(round(p_fake, 2)).run()
    assert _metrics(page)["Prediction"] == "Uncertain"
    assert "Uncertain" in page.warning[0].value


def test_heat_map_switch(page: AppTest) -> None:
    _upload(page, ("photo.png", _png(3), "image/png"))
    page.toggle(key="gradcam").set_value(True).run()
    assert not page.exception and not page.error
    assert any("Grad-CAM" in c.value for c in page.caption)
    assert len(page.get("image")) == 1  # the picture, now under its heat map


def test_a_heat_map_failure_is_a_message_naming_the_upload(page: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(self: Explainer, prediction: Prediction) -> list[Any]:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Explainer, "explain_prediction", out_of_memory)
    _upload(page, ("photo.png", _png(3), "image/png"))
    page.toggle(key="gradcam").set_value(True).run()
    assert not page.exception
    assert [e.value for e in page.error] == [
        "No heat map for photo.png: unexpected error (RuntimeError: out of memory)"
    ]
    assert [m.label for m in page.metric] == METRIC_LABELS and len(page.get("image")) == 1  # the verdict stays


def test_several_images_give_a_table_and_downloads(page: AppTest) -> None:
    _upload(page, ("a.png", _png(4), "image/png"), ("b.png", _png(5, fake=False), "image/png"))
    assert not page.exception and not page.error
    table = page.dataframe[0].value
    assert list(table["file"]) == ["a.png", "b.png"] and list(table.columns) == list(logic.TABLE_COLUMNS)
    assert [b.label for b in page.get("download_button")] == ["Download CSV", "Download JSON"]
    assert [m.label for m in page.metric] == METRIC_LABELS  # details of the first file
    page.selectbox(key="details").set_value(1).run()
    assert [caption for i in page.get("image") for caption in i.captions] == ["b.png"]


def test_a_failed_file_among_several_is_reported_once(page: AppTest) -> None:
    """The table counts the failures; the message itself shows once, in that file's details."""
    _upload(page, ("notes.png", b"just some text", "image/png"), ("b.png", _png(5), "image/png"))
    assert not page.exception
    assert list(page.dataframe[0].value["verdict"])[0] == "failed"
    assert "1 of 2 files could not be judged" in page.warning[0].value
    assert [e.value for e in page.error] == [page.dataframe[0].value["note"][0]]
    page.selectbox(key="details").set_value(1).run()
    assert not page.error and "1 of 2 files" in page.warning[0].value


def test_a_video_gives_verdict_timeline_and_frames(page: AppTest, tmp_path: Path) -> None:
    frames = [synthetic_image(np.random.default_rng(i), 96, fake=True) for i in range(10)]
    data = write_video_of(tmp_path / "clip.mp4", frames).read_bytes()
    _upload(page, ("clip.mp4", data, "video/mp4"))
    assert not page.exception and not page.error
    assert [m.label for m in page.metric] == METRIC_LABELS
    assert [s.value for s in page.subheader] == ["Frame scores over time", "Most suspicious frames"]
    assert len(page.get("vega_lite_chart")) == 1
    assert len(page.get("image")) >= 1


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.png", b"just some text", "notes.png: "),
        ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(3000), "clip.mp4: "),
        ("huge.png", bytes(2 * 1024 * 1024), "over this page's limit of 1 MB"),
    ],
)
def test_bad_uploads_are_messages(
    open_page: OpenPage, trained_bundle: Path, name: str, data: bytes, message: str
) -> None:
    page = open_page(trained_bundle, max_upload_mb=1)
    _upload(page, (name, data, "application/octet-stream"))
    assert not page.exception
    assert message in page.error[0].value


def test_bad_model_folders_are_messages(open_page: OpenPage, trained_bundle: Path, tmp_path: Path) -> None:
    page = open_page(None)
    assert not page.exception and "No detector to load" in page.error[0].value

    broken = tmp_path / "broken"
    shutil.copytree(trained_bundle, broken)
    (broken / CONFIG_FILE).write_text("{not json")
    page = open_page(broken)
    assert not page.exception and "This model cannot be used" in page.error[0].value

    page = open_page(tmp_path / "absent")
    assert not page.exception and "model folder not found" in page.error[0].value


# ---------------------------------------------------------------- the app command


def test_app_command_runs_streamlit_on_the_page(monkeypatch: pytest.MonkeyPatch, trained_bundle: Path) -> None:
    seen = {}

    def fake_run(command: list[str], env: dict[str, str], check: bool) -> subprocess.CompletedProcess:
        seen.update(command=command, env=env)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert main(["app", "--port", "8765", "--models", str(trained_bundle), "--max-upload-mb", "7"]) == 0
    command = seen["command"]
    assert command[1:5] == ["-m", "streamlit", "run", str(APP_SCRIPT)]
    assert command[command.index("--server.port") + 1] == "8765"
    assert command[command.index("--server.maxUploadSize") + 1] == "7"
    assert seen["env"][MODELS_ENV] == str(trained_bundle.resolve()) and seen["env"][MAX_UPLOAD_ENV] == "7"


def test_app_command_refuses_a_missing_model_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["app", "--models", str(tmp_path / "absent")]) == 1
    assert "model folder not found" in capsys.readouterr().err


def test_the_streamlit_floor_has_what_the_page_and_these_tests_use() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    floors = [req.split(">=")[1] for group in ("app", "dev") for req in extras[group] if req.startswith("streamlit")]
    assert len(floors) == 2 and all(tuple(int(n) for n in floor.split(".")[:2]) >= STREAMLIT_FLOOR for floor in floors)


def test_launch_command_without_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODELS_ENV, raising=False)
    command, env = launch_command()
    assert "--server.port" not in command and MODELS_ENV not in env and env[MAX_UPLOAD_ENV] == "200"


# ---------------------------------------------------------------- a real browser


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_healthy(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the app did not answer on {url} within {timeout} s")


def test_browser_uploads_a_picture_and_sees_the_verdict(trained_bundle: Path, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():  # CI goes on without it; pytest -ra prints this reason
        pytest.skip(
            f"chromium is missing ({CHROMIUM} not found): install Debian's package, apt-get install -y chromium"
        )
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    picture = tmp_path / "photo.png"
    picture.write_bytes(_png(3))
    port = _free_port()
    log = (tmp_path / "app.log").open("w")
    env = {**os.environ, "STREAMLIT_SERVER_ADDRESS": "127.0.0.1"}
    # What a visitor gets: the shipped detector when this install has it, else the trained bundle.
    process = subprocess.Popen(
        [sys.executable, "-m", "deepfake_detector", "app", "--port", str(port), "--models", str(trained_bundle)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # the app command and its streamlit child end together
    )
    try:
        _wait_until_healthy(f"http://127.0.0.1:{port}/_stcore/health", process, timeout=120)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--headless",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                ],
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1100})
                page.goto(f"http://127.0.0.1:{port}/", timeout=60_000)
                page.locator("input[type=file]").set_input_files(str(picture))
                labels = page.locator('[data-testid="stMetricLabel"]')
                sync_api.expect(labels).to_have_count(3, timeout=120_000)
                assert [t.strip() for t in labels.all_inner_texts()] == METRIC_LABELS
                verdict = page.locator('[data-testid="stMetricValue"]').first.inner_text().strip()
                assert verdict in ("Fake", "Real", "Uncertain")
                page.wait_for_timeout(500)  # let the picture paint
                page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            finally:
                browser.close()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
    assert (tmp_path / "page.png").stat().st_size > 10_000


# ---------------------------------------------------------------- awkward uploads


def test_pictures_are_sized_for_the_page_never_to_nothing() -> None:
    assert logic.page_picture(np.zeros((1, 800, 3), np.uint8), 720).shape == (1, 720, 3)
    assert logic.page_picture(np.zeros((20000, 3, 3), np.uint8), 320).shape == (logic.MAX_PICTURE_HEIGHT, 1, 3)
    assert logic.page_picture(np.zeros((100, 100, 3), np.uint8), 320).shape == (320, 320, 3)
    picture = np.zeros((50, 60, 3), np.uint8)
    assert logic.page_picture(picture, 60) is picture


def test_an_upload_name_cannot_format_the_page() -> None:
    text = logic.plain_text("[click me](https:evil.example) **bold**.jpg: not an image\nsecond line")
    assert text == r"\[click me\](https:evil.example) \*\*bold\*\*.jpg: not an image second line"


def test_a_video_with_a_name_too_long_for_a_file_system_is_judged(trained_bundle: Path, tmp_path: Path) -> None:
    frames = [synthetic_image(np.random.default_rng(i), 96, fake=False) for i in range(6)]
    data = write_video_of(tmp_path / "clip.mp4", frames).read_bytes()
    name = "видео" * 26 + ".mp4"  # 264 bytes: legal on Windows and macOS, not on Linux
    judged = logic.judge_upload(Detector.load(trained_bundle, device="cpu"), name, data, 10**8)
    assert judged.prediction.ok and judged.prediction.path == name


def test_a_strip_and_two_uploads_of_one_name_keep_the_page_whole(page: AppTest) -> None:
    strip = io.BytesIO()
    Image.new("RGB", (800, 1), (90, 90, 90)).save(strip, "PNG")
    _upload(page, ("strip.png", strip.getvalue(), "image/png"))
    assert not page.exception and [m.label for m in page.metric] == METRIC_LABELS
    _upload(page, ("IMG_0001.png", _png(4), "image/png"), ("IMG_0001.png", _png(5, fake=False), "image/png"))
    p_fakes = [row for row in page.dataframe[0].value["p_fake"]]
    shown = []
    for pick in (0, 1, 0):
        page.selectbox(key="details").set_value(pick).run()
        shown.append(_metrics(page))
    assert not page.exception and len(set(p_fakes)) == 2
    assert shown[0] == shown[2] != shown[1]  # each upload's own details, though the names are the same


def test_the_page_takes_pictures_up_to_its_pixel_limit(trained_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logic, "MAX_PIXELS", 100 * 100)
    detector = Detector.load(trained_bundle, device="cpu")
    assert logic.judge_upload(detector, "small.png", _png(1, size=100), 10**7).prediction.ok
    big = logic.judge_upload(detector, "big.png", _png(1, size=101), 10**7).prediction
    assert not big.ok and big.error.startswith("big.png: ") and "over the limit of 10,000 pixels" in big.error
