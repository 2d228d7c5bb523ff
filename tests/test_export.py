"""ONNX export and runtime='onnx': the exported network must give the torch network's p_fake.

The shared trained bundle is copied before exporting, since export writes ``BUNDLE/onnx``
and other tests read that bundle's folder.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfake_detector import export
from deepfake_detector.bundle import CONFIG_FILE, BundleConfig, load_bundle, save_bundle
from deepfake_detector.cli import main
from deepfake_detector.detector import Detector
from deepfake_detector.ensemble import ENSEMBLE_FILE
from deepfake_detector.errors import BundleError, ExportError, InvalidArgumentError, MissingDependencyError
from deepfake_detector.export import ONNX_DIR, ONNX_FILE, OnnxRunner, export_bundle, load_onnx
from deepfake_detector.models import create_model, get_spec
from deepfake_detector.preprocess import Preprocessing

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOL = 1e-4


@pytest.fixture(scope="module")
def bundle(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the trained seed-cnn bundle, exported to its default ``onnx/`` folder."""
    copy = Path(shutil.copytree(trained_bundle, tmp_path_factory.mktemp("export") / "seed"))
    assert export_bundle(copy) == copy / ONNX_DIR
    return copy


@pytest.fixture(scope="module")
def pictures(synthetic_test: Path) -> list[np.ndarray]:
    """Real-looking generated pictures (both classes) and random noise, at odd sizes."""
    from deepfake_detector.media.image import load_image

    paths = sorted((synthetic_test / "real").rglob("*.png"))[:3] + sorted((synthetic_test / "fake").rglob("*.png"))[:3]
    rng = np.random.default_rng(7)
    noise = [rng.integers(0, 256, (97 + 13 * i, 150, 3), dtype=np.uint8) for i in range(3)]
    return [load_image(p) for p in paths] + noise


def _random_bundle(tmp_path: Path, arch: str, **config: object) -> Path:
    spec = get_spec(arch)
    preprocessing = Preprocessing(spec.input_size, spec.mean, spec.std)
    torch.manual_seed(0)
    return save_bundle(
        tmp_path / arch, BundleConfig(arch=arch, preprocessing=preprocessing, **config), create_model(arch)
    )


def _assert_runtimes_agree(bundle_dir: Path, pictures: list[np.ndarray]) -> None:
    """Same p_fake from both runtimes for a batch of several and for each picture alone."""
    torch_detector = Detector.load(bundle_dir, device="cpu")
    onnx_detector = Detector.load(bundle_dir, runtime="onnx")
    np.testing.assert_allclose(onnx_detector.score_batch(pictures), torch_detector.score_batch(pictures), atol=TOL)
    for picture in pictures[:2]:
        np.testing.assert_allclose(
            onnx_detector.score_batch([picture]), torch_detector.score_batch([picture]), atol=TOL
        )


def test_export_writes_model_and_the_bundles_config(bundle: Path) -> None:
    assert (bundle / ONNX_DIR / ONNX_FILE).stat().st_size > 0
    assert (bundle / ONNX_DIR / CONFIG_FILE).read_bytes() == (bundle / CONFIG_FILE).read_bytes()
    assert not [p for p in (bundle / ONNX_DIR).iterdir() if p.name.startswith(".")]  # no temporary files left


def test_runner_gives_torch_logits_with_a_dynamic_batch(bundle: Path) -> None:
    """The graph takes resized uint8 planes and does the bundle's normalisation itself."""
    config, model = load_bundle(bundle)
    _, runner = load_onnx(bundle / ONNX_DIR)
    assert runner.takes_pixels
    size = config.preprocessing.input_size
    for n in (5, 1):
        pixels = np.random.default_rng(n).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        with torch.inference_mode():
            expected = config.p_fake_from_logits(
                model(torch.from_numpy(np.stack([config.preprocessing(p) for p in pixels])))
            )
        planes = np.stack([config.preprocessing.planes(p) for p in pixels])
        got = config.p_fake_from_logits(runner(torch.from_numpy(planes))).numpy()
        assert got.shape == (n,)
        np.testing.assert_allclose(got, expected.numpy(), atol=TOL)
    with pytest.raises(InvalidArgumentError, match="uint8"):
        runner(torch.zeros(1, 3, size, size))


def _earlier_export(folder: Path, graph: torch.nn.Module, example: torch.Tensor, props: dict[str, str]) -> Detector:
    """``folder``'s onnx/ holding ``graph`` as an earlier version exported it, loaded with onnxruntime."""
    import onnx

    proto = onnx.load_from_string(export.network_to_onnx(graph, example, folder))
    onnx.helper.set_model_props(proto, {export.WEIGHTS_SHA_KEY: export._sha256(folder / "model.safetensors"), **props})
    (folder / ONNX_DIR).mkdir()
    (folder / ONNX_DIR / ONNX_FILE).write_bytes(proto.SerializeToString())
    return Detector.load(folder, runtime="onnx")


def test_an_earlier_float_input_export_still_runs(
    trained_bundle: Path, tmp_path: Path, pictures: list[np.ndarray]
) -> None:
    """Exports made before the input step moved into the graph take normalised float batches."""
    folder = Path(shutil.copytree(trained_bundle, tmp_path / "old"))
    config, model = load_bundle(folder)
    size = config.preprocessing.input_size
    old = _earlier_export(folder, model, torch.zeros(2, 3, size, size), {})
    assert not old.model.takes_pixels
    np.testing.assert_allclose(
        old.score_batch(pictures), Detector.load(folder, runtime="torch").score_batch(pictures), atol=TOL
    )
    with pytest.raises(InvalidArgumentError, match="float32"):
        old.model(torch.zeros(1, 3, size, size, dtype=torch.uint8))


class _ChannelsLast(torch.nn.Module):
    """What the version before exported: channels-last ``(N, S, S, 3)`` pixels in."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.inner(pixels.permute(0, 3, 1, 2))


def test_an_earlier_channels_last_export_still_runs(
    trained_bundle: Path, tmp_path: Path, pictures: list[np.ndarray]
) -> None:
    """The version before took channels-last pixels; its graph is fed the same planes, rearranged."""
    folder = Path(shutil.copytree(trained_bundle, tmp_path / "channels_last"))
    config, model = load_bundle(folder)
    size = config.preprocessing.input_size
    graph = _ChannelsLast(export.PixelInput(model, config.preprocessing)).eval()
    pixels = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    old = _earlier_export(folder, graph, pixels, {export.INPUT_STEP_KEY: export._input_step(config.preprocessing)})
    assert old.model.takes_pixels and old.model.input_shape[1:] == [3, size, size]
    np.testing.assert_allclose(
        old.score_batch(pictures), Detector.load(folder, runtime="torch").score_batch(pictures), atol=TOL
    )
    with pytest.raises(InvalidArgumentError, match="shape"):
        old.model(pixels)


def test_an_ensemble_mixing_input_steps_scores_like_torch(
    bundle: Path, tmp_path: Path, pictures: list[np.ndarray]
) -> None:
    """Members of one preprocessing, one exported with pixels in and one with floats in, each
    get their own prepared input and together score as the torch ensemble does."""
    from deepfake_detector.ensemble import EnsembleConfig, Member

    config, model = load_bundle(bundle)
    size = config.preprocessing.input_size
    old_graph = tmp_path / ONNX_FILE
    old_graph.write_bytes(export.network_to_onnx(model, torch.zeros(2, 3, size, size), bundle))
    _, new_runner = load_onnx(bundle)
    ensemble = EnsembleConfig(members=["new", "old"])
    mixed = Detector(
        ensemble, members=[Member("new", config, new_runner), Member("old", config, OnnxRunner(old_graph))]
    )
    torch_only = Detector(ensemble, members=[Member("new", config, model), Member("old", config, model)])
    assert len(mixed._transforms) == 2 and len(torch_only._transforms) == 1
    np.testing.assert_allclose(mixed.score_batch(pictures), torch_only.score_batch(pictures), atol=TOL)


def test_onnx_and_torch_agree_on_real_looking_and_random_pictures(bundle: Path, pictures: list[np.ndarray]) -> None:
    _assert_runtimes_agree(bundle, pictures)


def test_export_folder_alone_loads_too(bundle: Path, pictures: list[np.ndarray]) -> None:
    """The export folder is enough to run without the bundle's safetensors."""
    alone = Detector.load(bundle / ONNX_DIR, runtime="onnx")
    np.testing.assert_allclose(
        alone.score_batch(pictures), Detector.load(bundle, device="cpu").score_batch(pictures), atol=TOL
    )


def test_predict_through_onnx_equals_torch(bundle: Path, pictures: list[np.ndarray]) -> None:
    torch_detector = Detector.load(bundle, device="cpu")
    onnx_detector = Detector.load(bundle, runtime="onnx")
    for picture in pictures:
        ours, theirs = onnx_detector.predict(picture, faces="off"), torch_detector.predict(picture, faces="off")
        assert ours.p_fake == pytest.approx(theirs.p_fake, abs=TOL)
        if abs(theirs.p_fake - theirs.threshold) > 1e-3:
            assert ours.label == theirs.label
    many = list(onnx_detector.predict_many(pictures, faces="off", batch_size=4, workers=1))
    expected = list(torch_detector.predict_many(pictures, faces="off", batch_size=4, workers=1))
    np.testing.assert_allclose([p.p_fake for p in many], [p.p_fake for p in expected], atol=TOL)


def test_logit_real_orientation_survives_export(trained_bundle: Path, tmp_path: Path) -> None:
    """A bundle whose logit points at 'real' still reports p_fake through onnxruntime."""
    flipped = Path(shutil.copytree(trained_bundle, tmp_path / "flipped"))
    config = json.loads((flipped / CONFIG_FILE).read_text())
    (flipped / CONFIG_FILE).write_text(json.dumps({**config, "output": "logit_real"}))
    export_bundle(flipped)
    picture = np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    straight = Detector.load(trained_bundle, device="cpu").score_batch([picture])
    np.testing.assert_allclose(Detector.load(flipped, runtime="onnx").score_batch([picture]), 1 - straight, atol=TOL)


def test_mobilenetv2_exports_and_agrees(tmp_path: Path, pictures: list[np.ndarray]) -> None:
    bundle_dir = _random_bundle(tmp_path, "mobilenetv2_100")
    export_bundle(bundle_dir)
    _assert_runtimes_agree(bundle_dir, pictures[:4])


def test_cli_export(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exported"
    assert main(["export", str(bundle), "--format", "onnx", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert (out / ONNX_FILE).is_file()
    assert (out / CONFIG_FILE).read_bytes() == (bundle / CONFIG_FILE).read_bytes()


def test_cli_bad_inputs_exit_1(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err
    assert main(["export", str(bundle), "--format", "tflite"]) == 1
    assert "tflite" in capsys.readouterr().err


def test_bad_inputs_are_typed_errors(bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="nowhere"):
        export_bundle(tmp_path / "nowhere")
    with pytest.raises(InvalidArgumentError, match="tflite"):
        export_bundle(bundle, format="tflite")
    with pytest.raises(InvalidArgumentError, match="runtime"):
        Detector.load(bundle, runtime="tensorrt")
    with pytest.raises(InvalidArgumentError, match="CPU"):
        Detector.load(bundle, runtime="onnx", device="cuda")
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    (ensemble / ENSEMBLE_FILE).write_text("{}")
    with pytest.raises(ExportError, match="ensemble"):
        export_bundle(ensemble)
    with pytest.raises(BundleError, match="ensemble"):
        Detector.load(ensemble, runtime="onnx")


def test_export_never_writes_over_another_bundle(bundle: Path, tmp_path: Path) -> None:
    other = shutil.copytree(bundle, tmp_path / "other")
    before = (other / CONFIG_FILE).read_bytes()
    with pytest.raises(ExportError, match=r"other: holds files other than an earlier export \(.*model\.safetensors"):
        export_bundle(bundle, other)
    assert (other / CONFIG_FILE).read_bytes() == before
    again = export_bundle(bundle, tmp_path / "export")
    (again / ".DS_Store").write_bytes(b"")  # hidden files (a desktop's, a crashed export's) do not count
    assert export_bundle(bundle, again) == again  # an earlier export's folder is fine


def test_unexported_or_stale_bundle_is_refused(tmp_path: Path) -> None:
    bundle_dir = _random_bundle(tmp_path, "seed-cnn")
    with pytest.raises(BundleError, match="deepfake-detector export"):
        Detector.load(bundle_dir, runtime="onnx")
    export_bundle(bundle_dir)
    config, _ = load_bundle(bundle_dir)
    save_bundle(bundle_dir, config, create_model("seed-cnn"))  # retrained in place: onnx/ is carried over
    with pytest.raises(BundleError, match="retrained"):
        Detector.load(bundle_dir, runtime="onnx")


def test_an_export_whose_baked_normalisation_no_longer_matches_the_config_is_refused(tmp_path: Path) -> None:
    """Editing config.json's preprocessing after export would leave the graph normalising the old
    way: onnx refuses, auto warns and scores with PyTorch, which follows the edit."""
    bundle_dir = _random_bundle(tmp_path, "seed-cnn")
    export_bundle(bundle_dir)
    raw = json.loads((bundle_dir / CONFIG_FILE).read_text())
    raw["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
    (bundle_dir / CONFIG_FILE).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="normalisation differ"):
        Detector.load(bundle_dir, runtime="onnx")
    with pytest.warns(UserWarning, match="normalisation differ"):
        assert Detector.load(bundle_dir).runtime == "torch"


def test_runner_refuses_a_batch_of_the_wrong_shape(bundle: Path) -> None:
    _, runner = load_onnx(bundle / ONNX_DIR)
    size = runner.input_shape[2]
    for shape in ((2, size, size, 3), (2, 3, size + 1, size), (3, size, size)):
        with pytest.raises(InvalidArgumentError, match="shape"):
            runner(torch.zeros(shape, dtype=torch.uint8))


def test_missing_onnxruntime_is_a_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle_dir = _random_bundle(tmp_path, "seed-cnn")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependencyError, match=r"deepfake-detector\[onnx\]"):
        export_bundle(bundle_dir)
    with pytest.raises(MissingDependencyError, match="onnxruntime"):
        OnnxRunner(b"")


def test_grad_cam_on_an_onnx_detector_uses_the_bundles_torch_network(bundle: Path, pictures: list[np.ndarray]) -> None:
    from deepfake_detector.errors import UnknownLayerError
    from deepfake_detector.explain import Explainer

    onnx_maps, onnx_p = Explainer.for_detector(Detector.load(bundle, runtime="onnx")).heat_maps(pictures[:2])
    torch_maps, torch_p = Explainer.for_detector(Detector.load(bundle, runtime="torch")).heat_maps(pictures[:2])
    np.testing.assert_allclose(onnx_p, torch_p, atol=1e-6)
    for a, b in zip(onnx_maps, torch_maps):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(UnknownLayerError, match="runtime='torch'"):  # an export folder alone has no layers
        Explainer.for_detector(Detector.load(bundle / ONNX_DIR, runtime="onnx"))


def test_auto_runtime_takes_onnxruntime_for_a_current_export_on_cpu(bundle: Path, pictures: list[np.ndarray]) -> None:
    auto = Detector.load(bundle)
    assert auto.runtime == "onnx" and isinstance(auto.model, OnnxRunner)
    torch_detector = Detector.load(bundle, runtime="torch")
    assert torch_detector.runtime == "torch" and not isinstance(torch_detector.model, OnnxRunner)
    np.testing.assert_allclose(auto.score_batch(pictures), torch_detector.score_batch(pictures), atol=TOL)


def test_auto_runtime_falls_back_to_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No export, a stale export (with a warning naming it), or no onnxruntime: PyTorch scores."""
    bundle_dir = _random_bundle(tmp_path, "seed-cnn")
    assert Detector.load(bundle_dir).runtime == "torch"
    export_bundle(bundle_dir)
    assert Detector.load(bundle_dir).runtime == "onnx"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "onnxruntime", None)
        assert Detector.load(bundle_dir).runtime == "torch"
    config, _ = load_bundle(bundle_dir)
    save_bundle(bundle_dir, config, create_model("seed-cnn"))  # retrained in place: onnx/ is now stale
    with pytest.warns(UserWarning, match="retrained"):
        detector = Detector.load(bundle_dir)
    assert detector.runtime == "torch"


def test_an_ensemble_of_exported_members_runs_on_onnxruntime(
    tmp_path: Path, synthetic_test: Path, pictures: list[np.ndarray]
) -> None:
    from deepfake_detector.ensembling import build_ensemble
    from deepfake_detector.explain import Explainer

    members = []
    spec = get_spec("seed-cnn")
    for seed in (1, 2):
        torch.manual_seed(seed)
        config = BundleConfig(arch="seed-cnn", preprocessing=Preprocessing(spec.input_size, spec.mean, spec.std))
        members.append(save_bundle(tmp_path / f"member{seed}", config, create_model("seed-cnn")))
        export_bundle(members[-1])
    ensemble = build_ensemble(members, synthetic_test, tmp_path / "ens", faces="off")
    auto = Detector.load(ensemble)
    assert auto.runtime == "onnx" and all(isinstance(m.model, OnnxRunner) for m in auto.members)
    torch_ensemble = Detector.load(ensemble, runtime="torch")
    np.testing.assert_allclose(auto.score_batch(pictures), torch_ensemble.score_batch(pictures), atol=TOL)
    maps, p = Explainer.for_detector(auto, member=1).heat_maps(pictures[:1])
    np.testing.assert_allclose(p, Explainer.for_detector(torch_ensemble, member=1).heat_maps(pictures[:1])[1])
    config, _ = load_bundle(ensemble / auto.members[0].name)
    save_bundle(ensemble / auto.members[0].name, config, create_model("seed-cnn"))  # one member's export is stale
    with pytest.warns(UserWarning, match="retrained"):
        assert Detector.load(ensemble).runtime == "torch"


def test_threads_set_onnxruntimes_intra_op_threads(bundle: Path) -> None:
    one = Detector.load(bundle, threads=1)
    assert one.model.session.get_session_options().intra_op_num_threads == 1
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(InvalidArgumentError, match="threads"):
            Detector.load(bundle, threads=bad)
