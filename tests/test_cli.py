"""The ``deepfake-detector`` command, driven through ``deepfake_detector.cli.main(argv)``."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepfake_detector import Detector, Prediction, __version__
from deepfake_detector.bundle import CONFIG_FILE, WEIGHTS_FILE
from deepfake_detector.cli import main
from deepfake_detector.data.synthetic import make_synthetic_dataset
from deepfake_detector.threshold import confidence_for

JSONL_KEYS = {"path", "label", "p_fake", "confidence", "seconds"}


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run a command; main returns its status, never exits (usage errors included).

    Returns (status, stdout, stderr).
    """
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, synthetic_test: Path) -> Path:
    """Three real and three fake test images at several depths, plus a file that is not an image."""
    root = tmp_path_factory.mktemp("media")
    real = sorted((synthetic_test / "real").rglob("*.png"))[:3]
    fake = sorted((synthetic_test / "fake").rglob("*.png"))[:3]
    targets = ["top_real.png", "a/real_1.png", "a/b/c/real_2.png", "top_fake.png", "a/fake_1.png", "a/b/fake_2.png"]
    for src, rel in zip(real + fake, targets):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    (root / "a" / "readme.txt").write_text("not an image, not listed")
    return root


def media_images(media: Path) -> list[Path]:
    return sorted(p for p in media.rglob("*.png"))


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory, synthetic_test: Path) -> Path:
    root = tmp_path_factory.mktemp("evaldata")
    for label in ("real", "fake"):
        for src in sorted((synthetic_test / label).rglob("*.png"))[:6]:
            dst = root / label / src.parent.name / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    return root


# --------------------------------------------------------------------------- models


def test_models_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["name", "input", "parameters"]
    seed = [line for line in lines if line.startswith("seed-cnn ")]
    assert len(seed) == 1 and "3,304,769" in seed[0] and "128x128" in seed[0]
    assert any(line.startswith("xception ") and "299x299" in line for line in lines)
    assert any(line.startswith("resnet18 ") for line in lines)


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "models", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    by_name = {r["name"]: r for r in rows}
    assert {"seed-cnn", "xception", "resnet18", "efficientnet_b0"} <= set(by_name)
    assert by_name["seed-cnn"]["parameters"] == 3_304_769
    assert by_name["seed-cnn"]["input_size"] == 128
    assert by_name["xception"]["input_size"] == 299
    assert all(isinstance(r["parameters"], int) and r["parameters"] > 0 and r["description"] for r in rows)


# --------------------------------------------------------------------------- predict


def test_predict_one_file_table(capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path) -> None:
    image = media / "top_fake.png"
    code, out, err = cli(capsys, "predict", image, "--model", trained_bundle)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["path", "label", "p_fake", "confidence", "faces", "seconds", "note"]
    assert len(rows) == 1
    path, label, p_fake, confidence, n_faces, seconds = rows[0].split()
    assert n_faces == "0"  # a whole-image model: no face detection
    assert path == str(image) or path.startswith("...")
    assert label in ("real", "fake")
    expected = Detector.load(trained_bundle).predict(image)
    assert label == expected.label
    assert float(p_fake) == pytest.approx(expected.p_fake, abs=1e-4)
    assert float(confidence) == pytest.approx(expected.confidence, abs=1e-4)
    assert "1 scored" in err and "0 failed" in err


def test_predict_folder_recursive_jsonl(capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path) -> None:
    code, out, err = cli(capsys, "predict", media, "--model", trained_bundle, "--format", "jsonl")
    assert code == 0
    rows = jsonl(out)
    assert [r["path"] for r in rows] == [str(p) for p in media_images(media)]
    threshold = json.loads((trained_bundle / CONFIG_FILE).read_text())["threshold"]
    for r in rows:
        assert JSONL_KEYS <= set(r) and r["error"] is None
        assert 0.0 <= r["p_fake"] <= 1.0 and r["seconds"] >= 0
        assert r["threshold"] == threshold
        assert (r["label"] == "fake") == (r["p_fake"] >= threshold)
        assert r["confidence"] == pytest.approx(confidence_for(r["p_fake"], threshold))
    n_fake = sum(r["label"] == "fake" for r in rows)
    assert f"6 scored ({n_fake} fake, {6 - n_fake} real), 0 failed" in err


def test_predict_glob_csv_to_file(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "results.csv"
    output.parent.mkdir()
    pattern = str(media / "**" / "*fake*.png")
    code, out, err = cli(capsys, "predict", pattern, "--model", trained_bundle, "--format", "csv", "--output", output)
    assert code == 0
    assert out == ""  # results go to the file, not stdout
    assert f"results saved to {output}" in err
    with output.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == Prediction.summary_fields()
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in media.rglob("*fake*.png"))
    assert len(rows) == 3
    for r in rows:
        p = float(r["p_fake"])
        assert r["label"] == ("fake" if p >= float(r["threshold"]) else "real")
        assert r["error"] == ""

    # a glob without ** stays in one folder
    code, out, _ = cli(
        capsys, "predict", str(media / "top_*.png"), "--model", trained_bundle, "--format", "jsonl", "--quiet"
    )
    assert code == 0
    assert sorted(Path(r["path"]).name for r in jsonl(out)) == ["top_fake.png", "top_real.png"]


def test_predict_table_and_jsonl_to_file_agree(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path, tmp_path: Path
) -> None:
    table, lines = tmp_path / "r.txt", tmp_path / "r.jsonl"
    assert cli(capsys, "predict", media, "--model", trained_bundle, "-o", table, "--quiet")[0] == 0
    code, out, err = cli(
        capsys,
        "predict",
        media,
        "--model",
        trained_bundle,
        "--format",
        "jsonl",
        "--output",
        lines,
        "--quiet",
        "--batch-size",
        "4",
        "--workers",
        "2",
    )
    assert code == 0 and out == "" and err == ""
    rows = jsonl(lines.read_text())
    table_rows = table.read_text().splitlines()[1:]
    assert len(table_rows) == len(rows) == 6
    for text, r in zip(table_rows, rows):
        fields = text.split()
        assert fields[1] == r["label"]
        assert float(fields[2]) == pytest.approx(r["p_fake"], abs=1e-4)


def test_predict_reports_bad_files_and_exits_2(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(media, folder)
    good = sorted(str(p) for p in folder.rglob("*.png"))
    data = (folder / "top_real.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "a" / "empty.png").write_bytes(b"")
    (folder / "a" / "b" / "notes.jpg").write_text("a text file with an image suffix\n")
    reasons = {"truncated.png": "truncated", "empty.png": "empty", "notes.jpg": "not an image"}

    code, out, err = cli(capsys, "predict", folder, "--model", trained_bundle, "--format", "jsonl")
    assert code == 2
    rows = {Path(r["path"]).name: r for r in jsonl(out)}
    assert len(rows) == len(good) + 3
    assert "readme.txt" not in rows
    for name, reason in reasons.items():
        row = rows[name]
        assert row["label"] is None and row["p_fake"] is None
        assert name in row["error"] and reason in row["error"]
        failed_line = [line for line in err.splitlines() if line.startswith("failed:") and name in line]
        assert len(failed_line) == 1 and reason in failed_line[0]
    scored = [r for r in rows.values() if r["error"] is None]
    assert sorted(r["path"] for r in scored) == good
    assert all(r["label"] in ("real", "fake") for r in scored)
    assert f"{len(good)} scored" in err and "3 failed" in err

    # the table shows the failure too
    code, out, _ = cli(capsys, "predict", folder / "a", "--model", trained_bundle, "--quiet")
    assert code == 2
    empty_line = [line for line in out.splitlines() if "empty.png" in line]
    assert len(empty_line) == 1 and "empty" in empty_line[0].split("empty.png", 1)[1]

    # a path that does not exist is a failed input, not a crash
    code, out, err = cli(
        capsys, "predict", folder / "ghost.png", good[0], "--model", trained_bundle, "--format", "jsonl"
    )
    assert code == 2
    assert [r["error"] is None for r in jsonl(out)] == [False, True]
    assert "ghost.png" in err and "no such file" in err


def test_predict_thresholds_at_the_edges(capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path) -> None:
    code, out, _ = cli(capsys, "predict", media, "--model", trained_bundle, "--format", "jsonl", "--threshold", "0.0")
    assert code == 0
    rows = jsonl(out)
    assert len(rows) == 6 and all(r["label"] == "fake" and r["threshold"] == 0.0 for r in rows)

    code, out, _ = cli(capsys, "predict", media, "--model", trained_bundle, "--format", "jsonl", "--threshold", "1")
    assert code == 0
    rows = jsonl(out)
    assert all(r["threshold"] == 1.0 for r in rows)
    # only a score of exactly 1.0 can reach a threshold of 1
    assert all(r["label"] == "real" for r in rows if r["p_fake"] < 1.0)
    assert sum(r["label"] == "real" for r in rows) >= len(rows) - 1


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "x.png", "--model", "m", "--no-such-option"], "unrecognized arguments"),
        (["models", "--bogus"], "unrecognized arguments"),
        (["predict"], "the following arguments are required: INPUT"),
        (["predict", "x.png", "--model", "m", "--threshold", "1.5"], "[0, 1]"),
        (["predict", "x.png", "--model", "m", "--threshold", "-0.1"], "[0, 1]"),
        (["predict", "x.png", "--model", "m", "--format", "xml"], "invalid choice"),
        (["predict", "x.mp4", "--model", "m", "--fps", "0"], "--fps"),
        (["predict", "x.mp4", "--model", "m", "--fps", "nan"], "--fps"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--port", "0"], "--port"),
        (["app", "--port", "65536"], "--port"),
        (["evaluate", "data", "--model", "m"], "--out"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_usage_errors_exit_1(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = cli(capsys, *argv)
    assert code == 1
    assert message in err
    assert out == ""


def test_no_command_prints_help_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys)
    assert code == 1
    assert "usage: deepfake-detector" in err
    for command in ("train", "evaluate", "predict", "models", "import-keras"):
        assert command in err
    assert out == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0
    assert out.strip() == f"deepfake-detector {__version__}"


def test_model_folder_without_bundle(capsys: pytest.CaptureFixture[str], media: Path, tmp_path: Path) -> None:
    folder = tmp_path / "not-a-bundle"
    folder.mkdir()
    code, out, err = cli(capsys, "predict", media / "top_real.png", "--model", folder)
    assert code == 1
    assert out == ""
    assert str(folder) in err and "not a model bundle" in err
    code, _, err = cli(capsys, "predict", media / "top_real.png", "--model", tmp_path / "absent")
    assert code == 1 and str(tmp_path / "absent") in err


def test_predict_with_nothing_to_score(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, "predict", tmp_path / "empty", "--model", trained_bundle)
    assert code == 1
    assert "no images" in err


# --------------------------------------------------------------------------- train


def test_train_writes_a_bundle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "data", n_per_class=8, size=64, seed=3)
    out_dir = tmp_path / "runs" / "cli"
    code, out, err = cli(
        capsys, "train", data, "--out", out_dir, "--epochs", "1", "--workers", "0", "--quiet", "--batch-size", "8"
    )
    assert code == 0
    assert out.strip().splitlines()[-1] == str(out_dir)
    assert (out_dir / WEIGHTS_FILE).is_file()
    config = json.loads((out_dir / CONFIG_FILE).read_text())
    assert config["arch"] == "seed-cnn"
    assert config["training"]["epochs_run"] == 1
    assert config["training"]["config"]["batch_size"] == 8
    assert "epoch 1/1" not in err  # --quiet
    detector = Detector.load(out_dir)
    assert detector.predict(next(data.rglob("*.png"))).ok


def test_train_unknown_arch_suggests(capsys: pytest.CaptureFixture[str], synthetic_train: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "never"
    code, out, err = cli(
        capsys,
        "train",
        synthetic_train,
        "--out",
        out_dir,
        "--arch",
        "resnet81",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--quiet",
    )
    assert code == 1
    assert out == ""
    assert err.startswith("error: ")
    assert "'resnet81'" in err and "Did you mean 'resnet18'" in err
    for known in ("seed-cnn", "resnet18", "efficientnet_b0", "xception"):
        assert known in err
    assert not out_dir.exists()


# --------------------------------------------------------------------------- evaluate


def test_evaluate_with_laundering(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, eval_data: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "report"
    code, out, err = cli(
        capsys,
        "evaluate",
        eval_data,
        "--model",
        trained_bundle,
        "--out",
        out_dir,
        "--launder",
        "--quiet",
        "--workers",
        "1",
    )
    assert code == 0
    report = out_dir / "report.md"
    assert out.strip() == str(report)
    text = report.read_text()
    assert "## as-is" in text and "## laundered" in text
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert [s["name"] for s in metrics["sections"]] == ["as-is", "laundered"]
    for section in metrics["sections"]:
        assert section["metrics"]["n"] == 12
        assert section["metrics"]["n_failed"] == 0
        assert 0.0 <= section["metrics"]["accuracy_score"] <= 1.0
    # the laundered images are really different inputs
    scores = [s["metrics"]["log_loss"] for s in metrics["sections"]]
    assert scores[0] != scores[1]
    for slug in ("as_is", "laundered"):
        for kind in ("confusion_matrix", "roc_curve", "pr_curve", "score_histogram"):
            png = out_dir / f"{kind}_{slug}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out_dir / link).is_file(), link
    err_lines = err.splitlines()
    assert any(line.startswith("as-is") and "n=12" in line for line in err_lines)
    assert any(line.startswith("laundered") and "n=12" in line for line in err_lines)


# --------------------------------------------------------------------------- import-keras


def test_import_keras_refuses_non_h5(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    fake_h5 = tmp_path / "prototype.h5"
    fake_h5.write_text("definitely not HDF5\n")
    out_dir = tmp_path / "imported"
    code, out, err = cli(capsys, "import-keras", fake_h5, "--out", out_dir)
    assert code == 1
    assert out == ""
    assert str(fake_h5) in err and "HDF5" in err
    assert not out_dir.exists()


# --------------------------------------------------------------------------- the installed command


def test_module_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deepfake_detector", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )

    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"deepfake-detector {__version__}"
    models = run("models")
    assert models.returncode == 0, models.stderr
    assert re.search(r"^seed-cnn\s+128x128\s+3,304,769\s", models.stdout, re.MULTILINE)
    assert re.search(r"^xception\s", models.stdout, re.MULTILINE)
    usage = run("predict")
    assert usage.returncode == 1
    assert "--model" in usage.stderr or "INPUT" in usage.stderr
    # the console script, where the environment has one beside the interpreter
    script = Path(sys.executable).with_name("deepfake-detector")
    if script.is_file():
        installed = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        assert installed.returncode == 0 and installed.stdout.strip() == version.stdout.strip()


# --------------------------------------------------------------------------- awkward names and outputs


def test_a_file_name_that_is_not_utf8_is_written_not_a_crash(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "latin"
    folder.mkdir()
    odd = folder / os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes, as an old camera or zip names a file
    shutil.copy(media / "top_real.png", odd)
    out_csv = tmp_path / "out.csv"
    code, _, err = cli(capsys, "predict", folder, "--model", trained_bundle, "--format", "csv", "--output", out_csv)
    assert code == 0, err
    assert os.fsencode(odd) in out_csv.read_bytes()  # the path as it is on disk, byte for byte
    out_table = tmp_path / "out.txt"
    code, _, _ = cli(capsys, "predict", folder, "--model", trained_bundle, "--output", out_table)
    assert code == 0 and "caf\\udce9.png" in out_table.read_text()
    strict = subprocess.run(
        [sys.executable, "-m", "deepfake_detector", "predict", str(folder), "--model", str(trained_bundle)],
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
    )
    assert strict.returncode == 0 and b"Traceback" not in strict.stderr
    assert b"caf\\udce9.png" in strict.stdout


def test_names_with_control_characters_keep_one_table_row(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path, tmp_path: Path
) -> None:
    odd = tmp_path / "two\nlines\r.png"
    shutil.copy(media / "top_real.png", odd)
    code, out, _ = cli(capsys, "predict", odd, "--model", trained_bundle, "--quiet")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2 and "two\\nlines\\r.png" in lines[1]


def test_a_long_file_name_still_gets_its_annotated_picture(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    for name in ("b" * 250 + ".png", "写" * 80 + ".png"):  # legal on disk (250 and 244 bytes); a suffix added is not
        shutil.copy(media / "top_real.png", folder / name)
    code, _, err = cli(capsys, "predict", folder, "--model", trained_bundle, "--annotate", tmp_path / "ann")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "ann").iterdir())
    assert len(written) == 2 and all(len(os.fsencode(name)) < 255 for name in written)
    assert written[0].startswith("b" * 100 + "-") and written[1].startswith("写" * 33 + "-")


def test_a_picture_that_cannot_be_saved_fails_that_file_only(
    capsys: pytest.CaptureFixture[str],
    trained_bundle: Path,
    media: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deepfake_detector import outputs

    monkeypatch.setattr(outputs, "unique_stem", lambda path: "x" * 300)  # a name no file system takes
    code, out, err = cli(
        capsys, "predict", media, "--model", trained_bundle, "--annotate", tmp_path / "ann", "--format", "jsonl"
    )
    assert code == 2
    assert len(jsonl(out)) == 6 and all(r["error"] is None for r in jsonl(out))  # every file still judged
    failed = [line for line in err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 6 and all("annotated picture not saved" in line for line in failed)
    assert "6 with crops or pictures not saved" in err


def test_an_empty_input_path_is_refused_not_taken_as_the_current_folder(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path
) -> None:
    code, out, err = cli(capsys, "predict", "", "--model", trained_bundle)
    assert code == 1 and out == ""
    assert "empty" in err


def test_a_bad_option_ends_the_run_before_any_output(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path
) -> None:
    code, out, err = cli(capsys, "predict", media, "--model", trained_bundle, "--uncertain-band", "0.6")
    assert code == 1 and out == ""
    assert "band" in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_a_full_disk_names_the_output(capsys: pytest.CaptureFixture[str], trained_bundle: Path, media: Path) -> None:
    code, _, err = cli(capsys, "predict", media, "--model", trained_bundle, "--output", "/dev/full")
    assert code == 1
    assert "/dev/full: cannot write the results" in err


def test_evaluate_out_that_is_a_file_is_named(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, eval_data: Path, tmp_path: Path
) -> None:
    taken = tmp_path / "report.jpg"
    taken.write_bytes(b"a file, not a folder")
    code, _, err = cli(capsys, "evaluate", eval_data, "--model", trained_bundle, "--out", taken, "--quiet")
    assert code == 1
    assert f"{taken}: is a file, not a folder" in err


def test_serve_names_an_address_it_cannot_listen_on_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    for module in ("fastapi", "uvicorn", "multipart"):  # serve checks its packages first
        pytest.importorskip(module)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = cli(capsys, "serve", "--host", "127.0.0.1", "--port", port)
    assert code == 1
    assert f"127.0.0.1:{port}: cannot listen there" in err and "loading the model" not in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_interrupted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bundle: Path, *, after_serving: bool
) -> tuple[int, str]:
    """``serve`` with uvicorn's Server replaced by one that meets Ctrl+C: before its event loop
    ran (its serve() coroutine made, never awaited), or after it served and shut down, when
    uvicorn raises the signal again. uvicorn's Config is replaced too: the real one sets up
    logging onto pytest's captured stream."""
    uvicorn = pytest.importorskip("uvicorn")
    for module in ("fastapi", "multipart"):
        pytest.importorskip(module)

    class Server:
        started = False

        def __init__(self, config: object) -> None:
            self.config = config

        async def serve(self) -> None:
            return None

        serve.__qualname__ = "Server.serve"  # the unawaited coroutine's name, as uvicorn's is

        def run(self) -> None:
            self.started = after_serving
            if not after_serving:
                self._coroutine = self.serve()
            raise KeyboardInterrupt

    monkeypatch.setattr(uvicorn, "Server", Server)
    monkeypatch.setattr(uvicorn, "Config", lambda app, **options: options)
    code, _, err = cli(capsys, "serve", "--model", bundle, "--port", _free_port())
    return code, err


def test_ctrl_c_as_the_server_starts_ends_serve_as_interrupted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, trained_bundle: Path
) -> None:
    """uvicorn.run swallowed such an interrupt, exited 3 and reported the unawaited coroutine."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = _serve_interrupted(capsys, monkeypatch, trained_bundle, after_serving=False)
        gc.collect()
    assert code == 130 and err.rstrip().endswith("interrupted")
    assert not [w for w in caught if "never awaited" in str(w.message)]


def test_ctrl_c_after_serving_is_a_clean_end(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, trained_bundle: Path
) -> None:
    code, err = _serve_interrupted(capsys, monkeypatch, trained_bundle, after_serving=True)
    assert code == 0 and "interrupted" not in err


def test_evaluate_says_when_it_leaves_videos_out(
    capsys: pytest.CaptureFixture[str], trained_bundle: Path, eval_data: Path, tmp_path: Path
) -> None:
    data = shutil.copytree(eval_data, tmp_path / "with-video")
    (data / "fake" / "clip.mp4").write_bytes(b"not decoded: evaluate only counts it")
    code, _, err = cli(capsys, "evaluate", data, "--model", trained_bundle, "--out", tmp_path / "r", "--quiet")
    assert code == 0
    assert f"warning: {data}: 1 video(s) under its real/fake folders are not evaluated" in err
