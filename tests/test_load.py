"""The load and abuse script (benchmarks/load.py): a small bounded run against the real
server on loopback, and its checks failing when they should.

The run serves the tiny ``trained_bundle``, so the shipped model is never loaded.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "load.py"


@pytest.fixture(scope="module")
def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("load_benchmark", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_small_run_passes(load: ModuleType, trained_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    argv = ["--model", str(trained_bundle), "--requests", "60", "--clients", "4", "--malformed", "0.25"]
    status = load.main([*argv, "--ready-timeout", "60", "--timeout", "30", "--json", str(out)])
    summary = json.loads(out.read_text())
    assert status == 0, json.dumps(summary["failures"], indent=1)
    assert summary["passed"] and summary["server_up"]
    assert summary["requests"] == 60
    assert not any(summary["failures"].values())
    kinds = {group["kind"]: group for group in summary["kinds"]}
    assert set(kinds) == {"good", *load.MALFORMED}  # 15 malformed: every kind at least once
    assert kinds["good"]["statuses"] == {"200": 45}
    malformed = summary["malformed"]["statuses"]
    assert sum(malformed.values()) == 15
    assert all(400 <= int(code) < 500 for code in malformed)
    assert summary["good"]["p50_ms"] > 0 and summary["good"]["p99_ms"] >= summary["good"]["p50_ms"]


def test_plan_is_seeded_and_spreads_the_malformed(load: ModuleType) -> None:
    pool = [load.Upload("a.png", b"x" * 10, "image/png"), load.Upload("b.jpg", b"y" * 10, "image/jpeg")]
    first = load.plan(pool, 100, 0.1, 2 * load.MIB, seed=3)
    again = load.plan(pool, 100, 0.1, 2 * load.MIB, seed=3)
    assert [r.kind for r in first] == [r.kind for r in again]
    bad = [i for i, r in enumerate(first) if r.kind != load.GOOD]
    assert len(bad) == 10 and len({first[i].kind for i in bad}) == 10
    assert bad != list(range(10))  # shuffled into the run, not sent first


def test_compare_reports_a_different_p_fake(load: ModuleType) -> None:
    expected = {"label": "real", "p_fake": 0.2, "scored_on": "whole_image", "faces": []}
    assert load.compare(dict(expected), expected) is None
    assert load.compare({**expected, "p_fake": 0.2 + 5e-6}, expected) is None
    assert "p_fake" in load.compare({**expected, "p_fake": 0.21}, expected)
    assert "p_fake" in load.compare({**expected, "p_fake": None}, expected)
    assert "label" in load.compare({**expected, "label": "fake"}, expected)


def test_a_5xx_or_a_dead_server_fails_the_run(load: ModuleType) -> None:
    fine = [load.Outcome(0, load.GOOD, 200, 10.0), load.Outcome(1, "empty", 415, 2.0)]
    assert load.summarize(fine, 1.0, up=True)["passed"]
    assert not load.summarize(fine, 1.0, up=False)["passed"]
    crashed = [*fine, load.Outcome(2, "truncated_jpeg", 500, 3.0, error="internal error")]
    summary = load.summarize(crashed, 1.0, up=True)
    assert not summary["passed"] and len(summary["failures"]["5xx"]) == 1
    accepted = [*fine, load.Outcome(2, "empty", 200, 3.0)]
    assert load.summarize(accepted, 1.0, up=True)["failures"]["malformed_not_4xx"]
    assert "FAIL" in load.format_report(summary)
