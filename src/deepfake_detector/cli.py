"""The ``deepfake-detector`` command: one sub-command per verb, all thin over the library.

Progress and messages go to stderr, results to stdout (or ``--output``). Exit status:
0 when every input was handled, 2 when some inputs failed, 1 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import IO, Any, Sequence

from . import __version__
from .errors import DeepfakeDetectorError, InvalidArgumentError
from .outputs import ResultWriter, RunOutputs

EXIT_OK, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2

EXAMPLES = """\
examples:
  deepfake-detector demo                                   train and run a small model on generated images
  deepfake-detector train DATA_DIR --arch seed-cnn --epochs 10 --out runs/seed
  deepfake-detector evaluate TEST_DIR --model runs/seed --out reports/seed --launder
  deepfake-detector predict photo.jpg more_photos/ --model runs/seed --format csv --output results.csv
  deepfake-detector models
  deepfake-detector serve --port 8000 --model runs/seed    REST service; API docs at /docs
  deepfake-detector import-keras prototype.h5 --out runs/prototype
  deepfake-detector ensemble runs/seed runs/other --val VAL_DIR --combine logistic --out runs/ensemble
  deepfake-detector export runs/seed --format onnx         writes runs/seed/onnx/model.onnx + config.json

DATA_DIR holds 'real' and 'fake' subfolders (any letter case, images at any depth;
the first folder below them is the group, e.g. fake/Deepfakes/x.jpg), or is a CSV
manifest with columns path,label[,group].
"""


class _Parser(argparse.ArgumentParser):
    """argparse with exit status 1 for usage errors (argparse's own default is 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1]; got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port from 1 to 65535; got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more; got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1; got {text}")
    return value


def _add_runtime_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtime",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="what runs the network: auto (default) takes onnxruntime on the CPU when the bundle holds an "
        "ONNX export (deepfake-detector export), else PyTorch",
    )


def _add_face_options(p: argparse.ArgumentParser, with_mode: bool = True) -> None:
    if with_mode:
        p.add_argument(
            "--faces",
            choices=["auto", "off", "only"],
            default="auto",
            help="judge face crops (auto: when the model was trained on face crops), whole images (off), "
            "or faces only, never the whole image (only)",
        )
    p.add_argument("--face-detector", default="auto", choices=["auto", "mtcnn", "haar"], help="default: auto")
    p.add_argument(
        "--min-face",
        type=_positive_int,
        help="faces smaller than this many pixels are reported as too small to judge (default 32)",
    )


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--every-n", type=_positive_int, metavar="N", help="video: every N-th frame")
    group.add_argument("--fps", type=_positive_float, metavar="F", help="video: F frames per second of video")
    group.add_argument(
        "--max-frames", type=_positive_int, metavar="K", help="video: at most K frames spread evenly (default: 32)"
    )


def _min_face(args: argparse.Namespace) -> dict[str, int]:
    """``--min-face`` when given; otherwise the core's default applies."""
    return {} if args.min_face is None else {"min_face": args.min_face}


def _sampling(args: argparse.Namespace) -> Any:
    from .media.video import FrameSampling

    return FrameSampling(every_n=args.every_n, per_second=args.fps, max_frames=args.max_frames)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="deepfake-detector",
        description="Tell whether a picture of a person is real or fake.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"deepfake-detector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a detector on a folder of real and fake images")
    p.add_argument("data", metavar="DATA", nargs="?", help="folder with real/ and fake/ subfolders, or a CSV manifest")
    p.add_argument(
        "--recipe",
        metavar="FILE",
        help="a TOML recipe whose [train] table sets any of these options; options given here win",
    )
    p.add_argument("--out", help="output bundle folder (required, here or in the recipe)")
    p.add_argument("--arch", help="architecture name (see 'deepfake-detector models'; default seed-cnn)")
    p.add_argument("--epochs", type=_positive_int, help="default 10")
    p.add_argument("--batch-size", type=_positive_int, help="default: the architecture's recipe")
    p.add_argument("--lr", type=float, help="learning rate; default: the architecture's recipe")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"])
    p.add_argument("--schedule", choices=["constant", "cosine"])
    p.add_argument(
        "--augment",
        help="'default', 'none', or probabilities like 'jpeg=0.8,blur=0,flip=0.5' "
        "(keys: flip, crop, color, blur, rescale, jpeg); default: the recipe's",
    )
    p.add_argument("--val-dir", help="validation data (folder or manifest) instead of a split of DATA")
    p.add_argument("--val-fraction", type=float, help="share of DATA held out for validation (default 0.2)")
    p.add_argument("--seed", type=int, help="default 42")
    p.add_argument(
        "--patience",
        type=int,
        help="early stopping after this many epochs without a better validation AUC; 0: off",
    )
    init = p.add_mutually_exclusive_group()
    init.add_argument(
        "--pretrained", action="store_true", default=None, help="start from timm's pretrained weights (needs network)"
    )
    init.add_argument("--init-weights", metavar="FILE", help="start from a local safetensors file")
    init.add_argument(
        "--imagenet-init",
        action="store_true",
        default=None,
        help="start from ImageNet weights shipped in a pip package, offline "
        "(efficientnet_lite0, mobilenetv2_100; see README)",
    )
    p.add_argument("--workers", type=_non_negative_int, help="data-loading processes, 0 for none (default: up to 2)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument(
        "--crop-margin",
        type=float,
        metavar="M",
        help="the images are face crops with margin M (share of the face box on each side): prediction "
        "will crop faces the same way (default: what crop-faces recorded in DATA, else whole images)",
    )
    p.add_argument(
        "--self-blend",
        type=float,
        metavar="P",
        help="turn each real training image, with probability P, into a self-blended fake "
        "(Shiohara and Yamasaki 2022): teaches blending traces instead of one method (default 0)",
    )
    p.add_argument(
        "--self-blend-parts",
        type=float,
        metavar="Q",
        help="make a share Q of the self-blended fakes by blending face parts (eyes, nose, mouth) instead of "
        "the whole face: local edits. Needs --self-blend; MTCNN landmarks are found once per real image "
        "before training, and with them whole-face masks follow the face too; images without a face found "
        "keep the centred mask (default 0)",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument(
        "--ddp",
        nargs="?",
        type=_positive_int,
        const=0,
        metavar="N",
        help="train on N processes with DistributedDataParallel (gloo on CPU, NCCL on GPU; default N: one per "
        "GPU, else 2); --batch-size stays the global batch. Under torchrun, join its processes instead",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = sub.add_parser("evaluate", help="measure a trained detector on labelled data; writes report.md and plots")
    p.add_argument("data", metavar="DATA", help="folder with real/ and fake/ subfolders, or a CSV manifest")
    p.add_argument("--model", help="bundle or ensemble folder (default: the shipped detector)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--launder", action="store_true", help="also score a copy shrunk to 512 px and re-saved as JPEG q80")
    p.add_argument(
        "--faces",
        choices=["auto", "off", "only"],
        default="auto",
        help="as in predict; use 'off' to score a folder of face crops (from crop-faces) as they are",
    )
    p.add_argument("--threshold", type=_probability, help="override the bundle's threshold")
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--workers", type=_positive_int)
    _add_runtime_option(p)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("predict", help="judge images and videos: files, folders (recursive) and globs")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    p.add_argument("--model", help="bundle or ensemble folder (default: the shipped detector)")
    p.add_argument(
        "--format",
        choices=["table", "jsonl", "csv", "parquet"],
        help="table (the default), jsonl or csv; with --engine ray: parquet (the default) or jsonl",
    )
    p.add_argument(
        "--output",
        "-o",
        help="write results to this file instead of stdout; with --engine ray (required): a folder of parts, "
        "where a rerun skips the files already scored",
    )
    p.add_argument("--threshold", type=_probability, help="override the bundle's threshold")
    p.add_argument(
        "--uncertain-band",
        type=float,
        metavar="B",
        help="label 'uncertain' when p_fake is within B of the threshold (default: the bundle's; 0: never)",
    )
    p.add_argument(
        "--reencode-check",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="label 'uncertain' when JPEG or rescaled copies of an image flip its verdict "
        "(default: the bundle's uncertain.reencode)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="model inputs per forward pass (default 32); with --engine ray also the images per actor call",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        help="decoding threads (default: CPU count; with --engine ray: per actor, its CPUs)",
    )
    _add_runtime_option(p)
    _add_face_options(p)
    _add_sampling_options(p)
    scale = p.add_argument_group("scaling out on Ray (pip install 'deepfake-detector[ray]'; see docs/scale.md)")
    scale.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (the default); ray: a pool of Ray actors, on this machine or a cluster",
    )
    scale.add_argument(
        "--address",
        metavar="ADDR",
        help="join the Ray cluster at ADDR (HOST:PORT, auto or ray://HOST:PORT); default: a Ray instance of "
        "its own on this machine, stopped at the end",
    )
    scale.add_argument(
        "--actors",
        metavar="N|MIN-MAX",
        help="scoring actors, each loading the model once: N, or a pool growing from MIN to MAX "
        "(default 1-: from 1 to as many as the cluster fits)",
    )
    scale.add_argument("--cpus-per-actor", type=float, metavar="C", help="CPUs each actor reserves (default 1)")
    scale.add_argument(
        "--gpus-per-actor",
        type=float,
        metavar="G",
        help="GPUs each actor reserves; above 0 it scores on CUDA (default 0)",
    )
    p.add_argument(
        "--aggregate",
        choices=["max", "mean"],
        default="max",
        help="how face scores make the image's: max = fake when any face is fake (default)",
    )
    p.add_argument("--save-crops", metavar="DIR", help="write every face crop that was scored to DIR")
    p.add_argument(
        "--annotate",
        metavar="DIR",
        help="write each image (or a video's most suspicious frames and its timeline) with boxes and scores",
    )
    p.add_argument(
        "--explain",
        metavar="DIR",
        help="write a Grad-CAM heat map over each scored face (or whole image) to DIR, one PNG each",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    p = sub.add_parser("crop-faces", help="turn a real/fake folder of images and videos into a folder of face crops")
    p.add_argument("src", metavar="SRC", help="folder with real/ and fake/ subfolders (images and videos)")
    p.add_argument("dst", metavar="DST", help="output folder (same real/fake/group layout)")
    p.add_argument("--margin", type=float, default=0.3, help="share of the face box added on each side (default 0.3)")
    p.add_argument("--no-square", action="store_true", help="keep the box's aspect instead of a square crop")
    p.add_argument("--format", choices=["png", "jpg"], default="png", help="crop file format (png is lossless)")
    _add_face_options(p, with_mode=False)
    _add_sampling_options(p)
    p.add_argument("--quiet", action="store_true")

    p = sub.add_parser("models", help="list the architectures that train --arch accepts")
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = sub.add_parser("import-keras", help="turn the prototype's Keras .h5 model into a bundle")
    p.add_argument("h5", metavar="MODEL.h5")
    p.add_argument("--out", required=True, help="output bundle folder")
    p.add_argument("--threshold", type=_probability, default=0.5)

    p = sub.add_parser(
        "rebuild", help="rebuild the shipped detector from the research sets: crop, split, train, calibrate"
    )
    p.add_argument("--recipe", default="recipes/default.toml", help="TOML recipe (default: recipes/default.toml)")
    p.add_argument("--data", help="folder holding the sets (default: the recipe's [data] root)")
    p.add_argument("--work", help="working folder for crops, manifests and the bundle (default: the recipe's)")
    p.add_argument("--install", action="store_true", help="copy the result into the package as the shipped detector")

    p = sub.add_parser(
        "calibrate", help="choose a bundle's threshold and uncertain band on validation data (the shipped rule)"
    )
    p.add_argument("model", metavar="BUNDLE", help="bundle folder, rewritten in place")
    p.add_argument("--val", required=True, help="validation data: real/fake folder or CSV manifest (face crops)")
    p.add_argument(
        "--max-fpr", type=_probability, default=0.05, help="share of validation reals that may be called fake"
    )
    p.add_argument(
        "--uncertain-share",
        type=float,
        default=0.1,
        help="share of validation scores nearest the threshold labelled uncertain (default 0.1)",
    )
    p.add_argument(
        "--no-reencode-check", action="store_true", help="do not add the JPEG/rescale check to the uncertain rule"
    )

    p = sub.add_parser(
        "ensemble", help="combine bundles into one detector: mean or logistic, fitted on validation data"
    )
    p.add_argument("bundles", nargs="+", metavar="BUNDLE", help="member bundle folders")
    p.add_argument(
        "--val",
        required=True,
        metavar="DATA",
        help="validation data (real/ and fake/ subfolders, or a CSV manifest), not the test data",
    )
    p.add_argument(
        "--combine",
        choices=["mean", "logistic"],
        default="mean",
        help="mean of p_fake, or a logistic regression on the members' logits (default: mean)",
    )
    p.add_argument("--out", required=True, help="output ensemble folder")
    p.add_argument(
        "--faces",
        choices=["auto", "off"],
        default="auto",
        help="as in evaluate; use 'off' when DATA is a folder of face crops (from crop-faces)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=32)
    p.add_argument("--workers", type=_positive_int)
    p.add_argument("--quiet", action="store_true", help="no progress or summary")

    p = sub.add_parser(
        "demo", help="judge your pictures (or a real photo and a fake made from it) with the shipped detector"
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="pictures or videos to judge (default: two samples)")
    p.add_argument("--model", help="bundle or ensemble folder (default: the shipped detector)")
    p.add_argument(
        "--out", default="demo-output", help="folder for samples and annotated pictures (default: demo-output)"
    )
    p.add_argument(
        "--train", action="store_true", help="instead: train a small model on generated pictures, evaluate and use it"
    )
    p.add_argument("--epochs", type=_positive_int, default=6, help="epochs of the --train demo")

    p = sub.add_parser("app", help="start the web page (Streamlit) to judge uploaded pictures and videos")
    p.add_argument("--port", type=_port, help="port to serve on (default: Streamlit's, 8501)")
    p.add_argument(
        "--models",
        metavar="DIR",
        help="a bundle folder, or a folder of bundles, to offer beside the shipped detector",
    )
    p.add_argument("--max-upload-mb", type=_positive_int, default=200, help="largest upload accepted (default 200)")

    p = sub.add_parser("serve", help="start the REST service (FastAPI): POST images and videos, get JSON verdicts")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="default 8000")
    p.add_argument("--model", metavar="DIR", help="bundle or ensemble folder (default: the shipped detector)")
    p.add_argument(
        "--max-upload-mb", type=_positive_int, default=50, help="largest request body accepted, in MiB (default 50)"
    )
    _add_runtime_option(p)

    p = sub.add_parser("export", help="write a bundle's network as ONNX, with its config.json beside it")
    p.add_argument("model", metavar="BUNDLE", help="bundle folder (an ensemble: export each member)")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="default: onnx")
    p.add_argument("--out", metavar="DIR", help="output folder (default: BUNDLE/onnx)")
    return parser


def _predict_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide each verdict, the same for both engines."""
    return {
        "threshold": args.threshold,
        "uncertain_band": args.uncertain_band,
        "reencode_check": args.reencode_check,
        "faces": args.faces,
        "aggregate": args.aggregate,
        "sampling": _sampling(args),
    }


def _verdict_counts(scored: int, labels: Counter, failed: int) -> str:
    """'N scored (F fake, R real[, U uncertain][, W without a verdict]), M failed' for the summary line."""
    text = f"{scored} scored ({labels['fake']} fake, {labels['real']} real"
    text += f", {labels['uncertain']} uncertain" if labels["uncertain"] else ""
    no_verdict = scored - labels["fake"] - labels["real"] - labels["uncertain"]
    text += f", {no_verdict} without a verdict)" if no_verdict else ")"
    return text + f", {failed} failed"


def _predict_on_ray(args: argparse.Namespace) -> int:
    """``predict --engine ray``: the same rows, scored by a pool of Ray actors, written as parts."""
    from .media.files import expand_sources

    for flag, value in (
        ("--save-crops", args.save_crops),
        ("--annotate", args.annotate),
        ("--explain", args.explain),
    ):
        if value is not None:
            raise InvalidArgumentError(f"{flag} works with --engine local only.")
    if args.format in ("table", "csv"):
        raise InvalidArgumentError(f"--engine ray writes parquet or jsonl, not {args.format}.")
    if not args.output:
        raise InvalidArgumentError("--engine ray needs --output: the folder to write the results to.")
    paths = expand_sources(args.inputs)
    if not paths:
        print("error: no images or videos found in the given inputs.", file=sys.stderr)
        return EXIT_USAGE
    from .ray_engine import parse_actors, score_on_ray

    def report_failure(row: dict[str, Any]) -> None:
        if row.get("error") is not None:
            print(f"failed: {row['error']}", file=sys.stderr)

    run = score_on_ray(
        paths,
        args.output,
        model=args.model,
        fmt=args.format or "parquet",
        address=args.address,
        actors=parse_actors(args.actors) if args.actors else None,
        cpus_per_actor=args.cpus_per_actor or 1.0,
        gpus_per_actor=args.gpus_per_actor or 0.0,
        batch_size=args.batch_size,
        workers=args.workers,
        load_options={"face_detector": args.face_detector, "runtime": args.runtime, **_min_face(args)},
        predict_options=_predict_options(args),
        progress=not args.quiet,
        on_row=report_failure,
    )
    if not args.quiet:
        summary = _verdict_counts(run.scored, run.labels, run.failed) + (": see above" if run.failed else "")
        summary += f", {run.skipped} skipped (already in {args.output})" if run.skipped else ""
        summary += f"; {run.seconds:.2f} s in all; results saved to {args.output} ({len(run.parts)} new parts)"
        print(summary, file=sys.stderr)
    return EXIT_PARTIAL if run.failed else EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .detector import Detector
    from .media.files import expand_sources

    if args.engine == "ray":
        return _predict_on_ray(args)
    ray_flags = {
        "--address": args.address,
        "--actors": args.actors,
        "--cpus-per-actor": args.cpus_per_actor,
        "--gpus-per-actor": args.gpus_per_actor,
    }
    given = [flag for flag, value in ray_flags.items() if value is not None]
    if given or args.format == "parquet":
        raise InvalidArgumentError(f"{given[0] if given else '--format parquet'} needs --engine ray.")
    args.format = args.format or "table"
    options = _predict_options(args)  # a bad option ends here, before the model loads
    detector = Detector.load(
        _model_dir(args.model), face_detector=args.face_detector, runtime=args.runtime, **_min_face(args)
    )
    paths = expand_sources(args.inputs)
    if not paths:
        print("error: no images or videos found in the given inputs.", file=sys.stderr)
        return EXIT_USAGE
    outputs = RunOutputs(args.save_crops, args.annotate, args.explain)
    explainer = None
    if outputs.explain is not None:
        from .explain import Explainer

        explainer = Explainer.for_detector(detector)
    try:
        out: IO[str] = (
            open(args.output, "w", newline="", encoding="utf-8", errors="surrogateescape")
            if args.output
            else sys.stdout
        )
    except OSError as exc:
        raise InvalidArgumentError(f"{args.output}: cannot write the results there ({exc.strerror}).") from exc
    video_bars: dict[str, Any] = {}

    def video_progress(path: str, done: int, total: int | None) -> None:
        if args.quiet:
            return
        bar = video_bars.get(path)
        if bar is None:
            bar = video_bars[path] = tqdm(total=total, desc=Path(path).name, unit="frame", leave=False, file=sys.stderr)
        bar.update(done - bar.n)

    started = time.perf_counter()
    labels: Counter = Counter()
    n_ok = n_failed = n_unexplained = n_unsaved = 0
    try:
        results = detector.predict_many(  # checks the options before the table's header is written
            paths,
            batch_size=args.batch_size,
            workers=args.workers,
            **options,
            keep_media=outputs.annotate is not None or outputs.explain is not None,
            on_crop=outputs.save_crop if outputs.crops is not None else None,
            video_progress=video_progress,
        )
        writer = ResultWriter(args.format, out, max(len(p) for p in paths), args.output)
        show_bar = not args.quiet and len(paths) > 1
        for pred in tqdm(results, total=len(paths), disable=not show_bar, file=sys.stderr, unit="file", leave=False):
            bar = video_bars.pop(pred.path or "", None)
            if bar is not None:
                bar.close()
            writer.write(pred)
            outputs.save_annotated(pred)
            unexplained = outputs.save_explained(pred, explainer)
            unsaved = outputs.take_unsaved()
            n_unexplained += unexplained is not None
            n_unsaved += bool(unsaved)
            for problem in unsaved + ([unexplained] if unexplained is not None else []):
                tqdm.write(f"failed: {problem}", file=sys.stderr)
            if pred.ok:
                n_ok += 1
                labels[pred.label] += 1
            else:
                n_failed += 1
                tqdm.write(f"failed: {pred.error}", file=sys.stderr)  # not glued to the progress bar
    except BaseException:
        if args.output:
            with contextlib.suppress(OSError):  # the first failure is the one worth reporting
                out.close()
        raise
    if args.output:
        with writer.naming_failures():
            out.close()
    if not args.quiet:
        elapsed = time.perf_counter() - started
        summary = _verdict_counts(n_ok, labels, n_failed)
        summary += f", {n_unexplained} without heat maps" if n_unexplained else ""
        summary += f", {n_unsaved} with crops or pictures not saved" if n_unsaved else ""
        summary += ": see above" if n_failed or n_unexplained or n_unsaved else ""
        summary += f"; {elapsed:.2f} s in all"
        if args.output:
            summary += f"; results saved to {args.output}"
        print(summary, file=sys.stderr)
    return EXIT_PARTIAL if n_failed or n_unexplained or n_unsaved else EXIT_OK


def _cmd_crop_faces(args: argparse.Namespace) -> int:
    from .face_crops import crop_faces_dataset
    from .faces.crop import CropSpec

    report = crop_faces_dataset(
        args.src,
        args.dst,
        CropSpec(margin=args.margin, square=not args.no_square),
        sampling=_sampling(args),
        face_detector=args.face_detector,
        image_format=args.format,
        **_min_face(args),
        progress=not args.quiet,
    )
    print(
        f"{report.crops} face crops from {report.files} files written to {args.dst} "
        f"({report.without_faces} without a usable face, {report.failed} failed)",
        file=sys.stderr,
    )
    return EXIT_PARTIAL if report.failed else EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    import functools
    from dataclasses import fields

    from .training import TrainConfig, train

    # Every TrainConfig field is a train option of the same name; only those given override.
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name) is not None}
    config = TrainConfig.from_recipe(args.recipe, **given) if args.recipe else TrainConfig.create(**given)
    if args.ddp is None:
        bundle = train(config, resume=args.resume, progress=not args.quiet)
    else:
        from . import distributed

        if distributed.under_torchrun():
            distributed.init_from_env(config.device)
            main_rank = distributed.rank() == 0
            try:
                bundle = train(config, resume=args.resume, progress=not args.quiet)
            except BaseException:
                distributed.dist.destroy_process_group()
                raise
            distributed.finish()
            if not main_rank:
                return EXIT_OK
        else:
            nprocs = args.ddp or distributed.default_processes(config.device)
            job = functools.partial(train, resume=args.resume, progress=not args.quiet)
            distributed.launch(job, nprocs, config, device=config.device)
            bundle = Path(config.out)
    print(bundle)
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .evaluation import evaluate
    from .report import format_value

    result = evaluate(
        Detector.load(_model_dir(args.model), runtime=args.runtime),
        args.data,
        args.out,
        launder=args.launder,
        threshold=args.threshold,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
        faces=args.faces,
    )
    for section in result["sections"]:
        m = section["metrics"]
        print(
            f"{section['name']:<10} n={m['n']}  accuracy={m['accuracy_score']:.4f}  "
            f"roc_auc={format_value(m['roc_auc_score'])}  ap={format_value(m['average_precision_score'])}  "
            f"eer={format_value(m['equal_error_rate'])}",
            file=sys.stderr,
        )
    print(result["report"])
    failed = sum(section["metrics"].get("n_failed", 0) for section in result["sections"])
    return EXIT_PARTIAL if failed else EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import count_parameters, get_spec, list_models

    rows = [
        {
            "name": n,
            "input_size": get_spec(n).input_size,
            "parameters": count_parameters(n),
            "description": get_spec(n).description,
        }
        for n in list_models()
    ]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'name':<20} {'input':>7} {'parameters':>12}  description")
    for r in rows:
        size = f"{r['input_size']}x{r['input_size']}"
        print(f"{r['name']:<20} {size:>7} {r['parameters']:>12,}  {r['description']}")
    return EXIT_OK


def _cmd_import_keras(args: argparse.Namespace) -> int:
    from .keras_import import import_keras_h5

    print(import_keras_h5(args.h5, args.out, threshold=args.threshold))
    return EXIT_OK


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from .rebuild import rebuild

    print(rebuild(args.recipe, data=args.data, work=args.work, do_install=args.install))
    return EXIT_OK


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .rebuild import CalibrateStep, calibrate
    from .threshold import Reencode

    copies = Reencode()
    reencode = (
        None
        if args.no_reencode_check
        else {"jpeg_qualities": list(copies.jpeg_qualities), "scales": list(copies.scales)}
    )
    result = calibrate(args.model, args.val, CalibrateStep(args.max_fpr, args.uncertain_share, reencode))
    print(f"{args.model}: threshold {result['threshold']:.4f}, uncertain band ±{result['band']:.4f}")
    return EXIT_OK


def _model_dir(model: str | None) -> str | Path:
    """The ``--model`` given, or the detector shipped inside the package."""
    from .shipped import default_model_dir

    return model if model else default_model_dir()


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from .ensembling import build_ensemble

    out = build_ensemble(
        args.bundles,
        args.val,
        args.out,
        combine=args.combine,
        faces=args.faces,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(out)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, train_demo

    if args.train:
        train_demo(args.out, epochs=args.epochs)
        return EXIT_OK
    preds = run_demo(args.images, args.out, model=args.model)
    return EXIT_OK if all(p.ok for p in preds) else EXIT_PARTIAL


def _cmd_app(args: argparse.Namespace) -> int:
    import importlib.util
    import subprocess

    from .app import launch_command
    from .errors import MissingDependencyError

    if args.models is not None and not Path(args.models).is_dir():
        raise InvalidArgumentError(f"{args.models}: model folder not found.")
    if importlib.util.find_spec("streamlit") is None:
        raise MissingDependencyError(
            "The web page",
            "streamlit",
            "pip install 'deepfake-detector[app]'",
            ImportError("No module named 'streamlit'"),
        )
    command, env = launch_command(args.port, args.models, args.max_upload_mb)
    print(f"starting the page: {' '.join(command)}", file=sys.stderr)
    return subprocess.run(command, env=env, check=False).returncode


def _check_can_listen(host: str, port: int) -> None:
    """Fail at once, naming the address, when the server could not listen there (a host that
    does not resolve to this machine, a port in use), not after the model has loaded.

    Like the server, every address the host resolves to is tried, and one that works is enough
    (``localhost`` may give an IPv6 address first on a machine without IPv6)."""
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidArgumentError(f"--host {host}: not an address to listen on ({exc}).") from exc
    failure: OSError | None = None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            if sys.platform != "win32":  # as the server binds; on Windows it would allow a port in use
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                return
            except OSError as exc:
                if failure is None or failure.errno == errno.EADDRNOTAVAIL:
                    failure = exc
    assert failure is not None
    raise InvalidArgumentError(f"{host}:{port}: cannot listen there ({failure.strerror or failure}).") from failure


def _cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    from .errors import MissingDependencyError

    for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("multipart", "python-multipart")):
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                "The REST service",
                package,
                "pip install 'deepfake-detector[serve]'",
                ImportError(f"No module named '{module}'"),
            )
    import uvicorn

    from .detector import Detector
    from .service import create_app

    _check_can_listen(args.host, args.port)
    # Loaded before listening, so a bad --model ends here with its message instead of a
    # server that never gets ready.
    print("loading the model...", file=sys.stderr)
    detector = Detector.load(_model_dir(args.model), runtime=args.runtime)
    app = create_app(detector, max_upload_bytes=args.max_upload_mb * 1024 * 1024)
    print(
        f"serving {detector.name} ({detector.runtime}) on http://{args.host}:{args.port} (API docs at /docs)",
        file=sys.stderr,
    )
    # uvicorn.run would swallow a Ctrl+C that lands before its event loop starts and exit 3, and
    # the serve() coroutine it left unawaited would be reported as if it were a bug; run by
    # hand, the interrupt reaches main, which says "interrupted". A Ctrl+C while serving shuts
    # the server down cleanly, after which uvicorn raises the signal again: that run is done.
    warnings.filterwarnings("ignore", message="coroutine 'Server.serve' was never awaited", category=RuntimeWarning)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port))
    try:
        server.run()
    except KeyboardInterrupt:
        if not server.started:
            raise
    if not server.started:  # stopped by a signal during startup, or a startup error uvicorn logged
        print("the server stopped before it started serving", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_bundle

    print(export_bundle(args.model, args.out, format=args.format))
    return EXIT_OK


_COMMANDS = {
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "models": _cmd_models,
    "import-keras": _cmd_import_keras,
    "ensemble": _cmd_ensemble,
    "crop-faces": _cmd_crop_faces,
    "demo": _cmd_demo,
    "app": _cmd_app,
    "serve": _cmd_serve,
    "rebuild": _cmd_rebuild,
    "calibrate": _cmd_calibrate,
    "export": _cmd_export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (the console script exits with it)."""
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        # A file name the terminal's encoding cannot show (bytes that are not UTF-8) is written escaped.
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors, --help and --version end parsing with a status
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except DeepfakeDetectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a full disk or an unwritable folder, named by the OS
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
