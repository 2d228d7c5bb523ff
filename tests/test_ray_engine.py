"""Batch scoring on Ray Data (``predict --engine ray``): the local answers, resuming, an actor
killed mid-batch, and a real two-node cluster, all on this machine's loopback interface.

Ray's servers listen on 127.0.0.1 only: a local instance keeps its node at 127.0.0.1 with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (see ``ray_engine._import_ray``), and the two-node
cluster is reached through a second name of 127.0.0.1, since Ray swaps the address
127.0.0.1 itself for the machine's network address. Every Ray process a test starts is
stopped by its process group, so other Ray instances on the machine are left alone.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from doubles import FixedFaces
from media_factory import write_video

from deepfake_detector import Detector
from deepfake_detector.cli import main
from deepfake_detector.faces.base import FaceBox
from deepfake_detector.media.files import expand_sources, read_path_list
from deepfake_detector.ray_engine import (
    FAULT_ENV,
    HASH_FIELD,
    _parquet_table,
    file_sha256,
    parse_actors,
    read_results,
    score_on_ray,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")

TOLERANCE = 1e-5
# Inside both the generated 128 px pictures and the 96x64 video frames; the 10 px one is too small to judge.
BOXES = [FaceBox(4, 4, 40, 40, 0.99), FaceBox(44, 16, 36, 40, 0.9), FaceBox(2, 50, 10, 10, 0.5)]


def assert_same(ray_row: Any, local_row: Any, where: str = "row") -> None:
    """Equal field for field, floats to TOLERANCE, timings ignored."""
    if isinstance(local_row, dict):
        assert isinstance(ray_row, dict) and set(ray_row) == set(local_row), where
        for key in local_row:
            if key != "seconds":
                assert_same(ray_row[key], local_row[key], f"{where}.{key}")
    elif isinstance(local_row, list):
        assert isinstance(ray_row, list) and len(ray_row) == len(local_row), where
        for i, (a, b) in enumerate(zip(ray_row, local_row)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(local_row, float) and not isinstance(ray_row, bool):
        assert ray_row == pytest.approx(local_row, abs=TOLERANCE), where
    else:
        assert ray_row == local_row, where


def by_path(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["path"]: row for row in rows}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, images: list[Path]) -> list[str]:
    """Eight pictures, a video, a file that is no picture and a path to nothing."""
    root = tmp_path_factory.mktemp("ray-inputs")
    for i, image in enumerate(images):
        shutil.copy(image, root / f"im{i}.png")
    write_video(root / "clip.mp4", frames=12, width=96, height=64)
    (root / "broken.png").write_bytes(b"not a picture at all")
    return expand_sources([root]) + [str(root / "ghost.png")]


def local_rows(bundle: Path, paths: list[str], **predict: Any) -> dict[str, dict[str, Any]]:
    detector = Detector.load(bundle, face_detector=predict.pop("face_detector", "auto"))
    return by_path([p.to_dict() for p in detector.predict_many(paths, batch_size=4, **predict)])


# --------------------------------------------------------------------------- without Ray running


def test_parse_actors() -> None:
    assert parse_actors("3") == 3
    assert parse_actors("1-4") == (1, 4)
    assert parse_actors("2-") == (2, None)
    for bad in ("0", "3-2", "x", "-2"):
        with pytest.raises(ValueError):
            parse_actors(bad)


def test_path_lists_text_and_csv(tmp_path: Path, images: list[Path]) -> None:
    folder = tmp_path / "lists"
    (folder / "pics").mkdir(parents=True)
    for image in images[:3]:
        shutil.copy(image, folder / "pics" / image.name)
    text = folder / "list.txt"
    text.write_text(f"# a comment\n\npics/{images[0].name}\n{folder / 'pics'}\n")
    manifest = folder / "manifest.csv"
    manifest.write_text(f"path,label\npics/{images[1].name},real\n")
    assert read_path_list(text) == [str(folder / "pics" / images[0].name), str(folder / "pics")]
    expanded = expand_sources([f"@{text}", f"@{manifest}"])
    assert expanded[0] == str(folder / "pics" / images[0].name)
    assert sorted(expanded[1:4]) == sorted(str(folder / "pics" / i.name) for i in images[:3])
    assert expanded[4:] == [str(folder / "pics" / images[1].name)]
    with pytest.raises(ValueError, match="not found"):
        expand_sources([f"@{folder / 'missing.txt'}"])


def test_parquet_parts_keep_one_schema() -> None:
    failed = {"path": "a.png", "label": None, "p_fake": None, "seconds": 0.0, "faces": [], "video": None}
    scored = {
        "path": "b.png",
        "label": "fake",
        "p_fake": 0.9,
        "seconds": 0.1,
        "faces": [{"p_fake": 0.9}],
        "video": None,
    }
    assert _parquet_table([failed]).schema == _parquet_table([scored]).schema


def test_predict_usage_errors_name_the_engine(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = [
        (["--address", "127.0.0.1:6379"], "--address needs --engine ray"),
        (["--format", "parquet"], "--format parquet needs --engine ray"),
        (["--engine", "ray"], "needs --output"),
        (["--engine", "ray", "-o", str(tmp_path), "--format", "csv"], "parquet or jsonl"),
        (["--engine", "ray", "-o", str(tmp_path), "--annotate", str(tmp_path)], "--annotate works with --engine local"),
    ]
    for extra, message in cases:
        assert main(["predict", "x.png", *extra]) == 1
        assert message in capsys.readouterr().err


def test_local_predict_never_imports_ray(trained_bundle: Path, images: list[Path], tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images[0]}\n")
    code = (
        "import sys\n"
        "from deepfake_detector.cli import main\n"
        f"status = main(['predict', {str(images[1])!r}, '@{listing}', '--model', {str(trained_bundle)!r},"
        " '--format', 'jsonl', '--quiet'])\n"
        "assert status == 0, status\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(images[1]), str(images[0])]


# --------------------------------------------------------------------------- a two-node cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_alias() -> str | None:
    """A host name for 127.0.0.1 other than 'localhost' (which Ray swaps for the network address)."""
    names = []
    try:
        for line in Path("/etc/hosts").read_text().splitlines():
            fields = line.split("#")[0].split()
            if fields and fields[0] == "127.0.0.1":
                names += fields[1:]
    except OSError:
        pass
    names.append(socket.gethostname())
    for name in names:
        if name in ("localhost", "localhost.localdomain"):
            continue
        try:
            if socket.gethostbyname(name) == "127.0.0.1":
                return name
        except OSError:
            continue
    return None


def _stop(process: subprocess.Popen) -> None:
    """Stop a ``ray start --block`` and the Ray processes it started (its process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {seconds:.0f} s")
        time.sleep(0.5)


@pytest.fixture
def two_nodes() -> Iterator[tuple[str, dict[str, str], set[int]]]:
    """A head node and a worker node with one CPU each, on loopback; yields the address to
    join, the environment a driver needs (the cluster's token) and the nodes' process groups."""
    alias = _loopback_alias()
    if alias is None:
        pytest.skip("no host name for 127.0.0.1 besides 'localhost' (needed to keep Ray on loopback)")
    ray_cli = str(Path(sys.executable).with_name("ray"))
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths live below it
    env = {
        **os.environ,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2",  # a node stopped drains its work this long (default 30 s)
    }
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    address = f"{alias}:{port}"
    started: list[subprocess.Popen] = []

    def start(args: list[str], log: str, extra_env: dict[str, str]) -> None:
        with open(temp / log, "w") as out:
            started.append(
                subprocess.Popen(
                    [ray_cli, "start", *args, "--num-cpus", "1", "--block", "--disable-usage-stats"],
                    env={**env, **extra_env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )
            )

    def check_running() -> None:
        for proc, log in zip(started, ("head.log", "worker.log")):
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {proc.returncode}: {(temp / log).read_text()[-2000:]}")

    def head_started() -> bool:
        check_running()
        return "Ray runtime started" in (temp / "head.log").read_text()

    def nodes_alive() -> int:
        check_running()
        code = "import ray, logging; ray.init(address=%r, logging_level=logging.ERROR); " % address
        code += "print(sum(n['Alive'] for n in ray.nodes()))"
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        return int(result.stdout.strip() or 0)

    try:
        start(
            [
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(port),
                "--include-dashboard",
                "false",
                "--dashboard-port",
                str(_free_port()),
                "--dashboard-agent-listen-port",
                str(_free_port()),
                "--temp-dir",
                str(temp),
            ],
            "head.log",
            {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},  # the head keeps 127.0.0.1: all its servers on loopback
        )
        _wait_for(head_started, 60, "the head started")
        start(
            ["--address", address, "--dashboard-agent-listen-port", str(_free_port())],
            "worker.log",
            {},  # finds its address, 127.0.0.1, from the head's; may join a cluster
        )
        _wait_for(lambda: nodes_alive() == 2, 90, "two nodes alive")
        yield address, env, {process.pid for process in started}
    finally:
        for process in reversed(started):
            _stop(process)
        shutil.rmtree(temp, ignore_errors=True)


def _listening_beyond_loopback(pids: set[int]) -> list[str]:
    listing = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    lines = [line for line in listing if any(f"pid={pid}," in line for pid in pids)]
    return [line for line in lines if "127.0.0.1" not in line.split()[3]]


def _group_pids(pgids: set[int]) -> set[int]:
    rows = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout.split("\n")
    return {int(r.split()[0]) for r in rows if r.strip() and int(r.split()[1]) in pgids}


def _descendants(root: int) -> set[int]:
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout.split("\n")
    children: dict[int, list[int]] = {}
    for row in rows:
        if row.strip():
            pid, ppid = map(int, row.split())
            children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_cli_joins_a_two_node_cluster(
    two_nodes: tuple[str, dict[str, str], set[int]], trained_bundle: Path, files: list[str], tmp_path: Path
) -> None:
    address, env, process_groups = two_nodes
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "deepfake_detector", "predict", *files, "--model", str(trained_bundle)]
    argv += ["--engine", "ray", "--address", address, "--actors", "2", "--cpus-per-actor", "1", "--batch-size", "3"]
    argv += ["--output", str(out), "--format", "jsonl", "--quiet"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]  # the broken file and the ghost failed, the rest scored
    assert len([line for line in result.stderr.splitlines() if line.startswith("failed: ")]) == 2
    rows = by_path(read_results(out))
    local = local_rows(trained_bundle, files)
    assert set(rows) == set(local)
    for path, row in rows.items():
        assert row.pop(HASH_FIELD) == file_sha256(path)
        assert_same(row, local[path], path)
    # Both actors needed a node each (one CPU per node), and no Ray server listened beyond loopback.
    record = json.loads(next((out / "_runs").glob("*.json")).read_text())
    assert record["address"] == address and record["actors"] == 2 and not record["interrupted"]
    if shutil.which("ss"):
        assert not _listening_beyond_loopback(_group_pids(process_groups))


# --------------------------------------------------------------------------- a local Ray instance


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """``ray.init(num_cpus=2)`` on loopback, shared by the tests below and stopped after them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_USAGE_STATS_ENABLED", "0")
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # node at 127.0.0.1: every server on loopback
        patch.delenv("RAY_ADDRESS", raising=False)
        import doubles
        import ray
        from ray import cloudpickle

        cloudpickle.register_pickle_by_value(doubles)  # the actors get FixedFaces without the tests folder
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.ERROR,
            _node_ip_address="127.0.0.1",
        )
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss to list listening sockets")
def test_the_local_instance_listens_on_loopback_only(local_ray: Any) -> None:
    ray_processes = _descendants(os.getpid())
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    assert any(f"pid={pid}," in listening for pid in ray_processes)  # the GCS and the raylet at least
    assert not _listening_beyond_loopback(ray_processes)


def test_ray_gives_the_local_answers_faces_and_videos(
    local_ray: Any, trained_bundle: Path, files: list[str], tmp_path: Path
) -> None:
    options = {"faces": "only"}
    run = score_on_ray(
        files,
        tmp_path / "out",
        model=trained_bundle,
        fmt="parquet",
        actors=2,
        batch_size=3,
        load_options={"face_detector": FixedFaces(BOXES)},
        predict_options=options,
        progress=False,
    )
    assert (run.scored, run.failed, run.skipped, run.inputs) == (9, 2, 0, 11)
    rows = by_path(read_results(tmp_path / "out"))
    local = local_rows(trained_bundle, files, face_detector=FixedFaces(BOXES), **options)
    assert set(rows) == set(local)
    for path, row in rows.items():
        assert row.pop(HASH_FIELD) == file_sha256(path)
        assert_same(row, local[path], path)
    video = next(row for row in rows.values() if row["kind"] == "video")
    assert video["video"]["frames_sampled"] == 12 and video["label"] is not None
    assert all(len(row["faces"]) == 3 for row in rows.values() if row["error"] is None and row["kind"] == "image")


def test_a_rerun_resumes_an_interrupted_job(
    local_ray: Any, trained_bundle: Path, files: list[str], tmp_path: Path, images: list[Path]
) -> None:
    out = tmp_path / "out"
    work = tmp_path / "work"
    work.mkdir()
    paths = []
    for i, image in enumerate(images):
        paths.append(str(shutil.copy(image, work / f"im{i}.png")))
    paths += [f for f in files if f.endswith(("broken.png", "ghost.png"))]  # done once failed; ghost: no hash
    seen: list[str] = []

    def interrupt_after_three(row: dict[str, Any]) -> None:
        seen.append(row["path"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    common = {"model": trained_bundle, "fmt": "jsonl", "actors": 1, "batch_size": 2, "part_rows": 2}
    with pytest.raises(KeyboardInterrupt):
        score_on_ray(paths, out, on_row=interrupt_after_three, progress=False, **common)
    first_parts = {p: p.read_bytes() for p in out.glob("part-*")}
    assert len(read_results(out)) >= 3  # every row taken before the interruption was written
    record = json.loads(next((out / "_runs").glob("*.json")).read_text())
    assert record["interrupted"]

    done_before = {row["path"] for row in read_results(out)}
    changed = next(p for p in paths[:8] if p in done_before)
    shutil.copy(images[0] if changed != paths[0] else images[1], changed)  # new bytes under a done path
    run = score_on_ray(paths, out, progress=False, **common)

    rows = read_results(out)
    assert {p: p.read_bytes() for p in first_parts} == first_parts  # old parts are never rewritten
    ghost_rows = [r for r in rows if r["path"] == paths[-1]]
    rescored = [r for r in rows if r["path"] == changed]
    assert len(rescored) == 2 and rescored[0][HASH_FIELD] != rescored[1][HASH_FIELD]
    assert {r["path"] for r in rows} == set(paths)
    others = [r["path"] for r in rows if r["path"] not in (changed, paths[-1])]
    assert len(others) == len(set(others)) == len(paths) - 2  # each once: nothing scored twice
    done_by_hash = len(done_before - {changed, paths[-1]})
    assert run.skipped == done_by_hash
    assert len(ghost_rows) == (2 if paths[-1] in done_before else 1)  # no hash: tried again


def test_a_killed_actor_is_restarted_and_its_batch_retried(
    local_ray: Any, trained_bundle: Path, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "killed.pid"
    monkeypatch.setenv(FAULT_ENV, str(marker))  # the first actor call to create it dies, by SIGKILL
    paths = [str(p) for p in images]
    run = score_on_ray(paths, tmp_path / "out", model=trained_bundle, actors=2, batch_size=2, progress=False)
    assert marker.is_file() and int(marker.read_text()) > 0  # one actor was killed
    rows = read_results(tmp_path / "out")
    assert sorted(r["path"] for r in rows) == sorted(paths)  # every file once: none lost, none twice
    assert run.scored == len(paths) and run.failed == 0
    local = local_rows(trained_bundle, paths)
    for row in rows:
        row.pop(HASH_FIELD)
        assert_same(row, local[row["path"]], row["path"])


def test_cli_on_ray_matches_local_jsonl_and_resumes(
    local_ray: Any, capsys: pytest.CaptureFixture[str], trained_bundle: Path, images: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "pics"
    folder.mkdir()
    for image in images[:5]:
        shutil.copy(image, folder / image.name)
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(trained_bundle), "--format", "jsonl"]) == 0
    local = by_path([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    argv = ["predict", str(folder), "--model", str(trained_bundle), "--engine", "ray", "-o", str(out)]
    assert main([*argv, "--format", "jsonl", "--actors", "1-2", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    assert f"{len(local)} scored (" in err and "0 failed" in err and f"results saved to {out}" in err
    parts = sorted(out.glob("part-*.jsonl"))
    lines = [json.loads(line) for part in parts for line in part.read_text().splitlines()]
    assert len(lines) == len(local)
    for row in lines:
        assert set(row) == set(local[row["path"]]) | {HASH_FIELD}
        row.pop(HASH_FIELD)
        assert_same(row, local[row["path"]], row["path"])
    assert main([*argv, "--quiet"]) == 1  # parquet by default: not into a folder of jsonl parts
    assert "already holds jsonl parts" in capsys.readouterr().err
    twice = ["predict", str(folder), str(folder / images[0].name), *argv[2:]]  # a file named twice: one row
    assert main([*twice, "--format", "jsonl"]) == 0
    err = capsys.readouterr().err
    assert f"0 scored (0 fake, 0 real), 0 failed, {len(local)} skipped" in err
    assert sorted(out.glob("part-*.jsonl")) == parts
    assert main([*argv, "--format", "jsonl", "--threshold", "0.1"]) == 1  # other options: not mixed in
    assert "holds results of another options" in capsys.readouterr().err
    assert sorted(out.glob("part-*.jsonl")) == parts
    assert main([*argv, "--format", "jsonl", "--runtime", "onnx", "--gpus-per-actor", "1"]) == 1
    assert "runs on CPUs" in capsys.readouterr().err
