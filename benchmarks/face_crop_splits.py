"""Train/test manifests of face crops, held out by source, for training on ../shared/data.

Run `deepfake-detector crop-faces ../shared/data/<set> CROPS/<set> --margin M` for each
labelled set (and for face_photos' single/ and group/ photos copied under a `real/` folder,
into CROPS/face_photos) first. Then this script writes CROPS/train.csv and CROPS/test.csv:
ffpp_faces split by its own train__/test__ prefix (a split by video), the other sets by a
stratified 80/20 split with seed 42 of their source images (every crop of one photo stays on
one side), face_photos alternately (all real). Crop names follow crop-faces: the source
file's stem, or its full name, then `_face<i>`.

    python benchmarks/face_crop_splits.py --crops CROPS [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from deepfake_detector.data.dataset import Sample, scan_folder, stratified_split

SETS = ("ffpp_faces", "stylegan_faces", "diffusion_faces", "yonsei_faces")


def crops_of(crops: Path, data: Path, set_name: str, samples: list[Sample]) -> list[tuple[str, str, str]]:
    rows = []
    for s in samples:
        rel = s.path.relative_to(data / set_name)
        folder = crops / set_name / rel.parent
        found = sorted({*folder.glob(f"{rel.name}_face*"), *folder.glob(f"{rel.stem}_face*")})
        rows += [(str(p.resolve()), s.label, f"{set_name}/{s.group}") for p in found]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", required=True, help="folder holding one crop-faces output per set")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = ap.parse_args()
    crops, data = Path(args.crops), Path(args.data)
    train_rows: list[tuple[str, str, str]] = []
    test_rows: list[tuple[str, str, str]] = []
    for set_name in SETS:
        samples = scan_folder(data / set_name)
        if set_name == "ffpp_faces":
            tr = [s for s in samples if s.path.name.startswith("train__")]
            te = [s for s in samples if s.path.name.startswith("test__")]
        else:
            tr, te = stratified_split(samples, 0.2, 42)
        train_rows += crops_of(crops, data, set_name, tr)
        test_rows += crops_of(crops, data, set_name, te)
    photos = sorted((crops / "face_photos" / "real").rglob("*_face*"))
    for i, p in enumerate(photos):
        (train_rows if i % 2 == 0 else test_rows).append((str(p.resolve()), "real", f"face_photos/{p.parent.name}"))
    for name, rows in (("train", train_rows), ("test", test_rows)):
        with (crops / f"{name}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "label", "group"])
            writer.writerows(rows)
        print(f"{name}: {len(rows)} crops, {sum(r[1] == 'fake' for r in rows)} fake -> {crops / f'{name}.csv'}")


if __name__ == "__main__":
    main()
