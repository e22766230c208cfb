"""Kaggle layout -> annotation folder: one QuPath GeoJSON per image plus ``annotations.csv``.

``python -m ftuseg.io.annotations export`` runs :func:`main` (the README's walkthrough, tests).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ftuseg.errors import FtusegError
from ftuseg.io.annotation_names import ANNOTATIONS_CSV, image_stem


def export_kaggle_annotations(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    ids: Sequence[str] | None = None,
    copy_images: bool = True,
) -> Path:
    """Write chosen rows of a Kaggle-layout data set as an annotation folder: ``<id>.geojson`` per image
    (ftuseg's QuPath GeoJSON of the RLE mask, exact pixel edges), the images, and ``annotations.csv``
    (image, annotation, organ, pixel_size, group). Returns ``out_dir``."""
    from ftuseg.io.atomic import atomic_path, atomic_write
    from ftuseg.io.dataset import load_table, read_row_mask
    from ftuseg.outputs.geojson import mask_to_polygons, sort_polygons, write_geojson

    table = load_table(data_dir, split="train", need_rle=True)
    if ids is not None:
        wanted = [str(i) for i in ids]
        missing = [i for i in wanted if i not in set(table["id"])]
        if missing:
            raise FtusegError(f"{data_dir}: id {missing[0]!r} is not in train.csv")
        table = table.set_index("id", drop=False).loc[wanted].reset_index(drop=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for _, row in table.iterrows():
        image = Path(row["image_path"])
        image_name = f"{row['id']}{image.name[len(image_stem(image.name) or image.stem):]}"
        if copy_images:
            with atomic_path(out / image_name) as tmp:
                shutil.copyfile(image, tmp)
        shape = (int(row["img_height"]), int(row["img_width"])) if pd.notna(row.get("img_height")) else None
        if shape is None:
            from ftuseg.io.images import read_image

            shape = read_image(image).shape[:2]
        mask = read_row_mask(row, shape)
        write_geojson(out / f"{row['id']}.geojson", sort_polygons(mask_to_polygons(mask)), row["organ"],
                      float(row["pixel_size"]), image_name=str(row["id"]))
        rows.append({"image": image_name if copy_images else str(image.resolve()),
                     "annotation": f"{row['id']}.geojson", "organ": row["organ"],
                     "pixel_size": float(row["pixel_size"]), "group": row.get("group", None)})
    with atomic_write(out / ANNOTATIONS_CSV) as fh:
        pd.DataFrame(rows).to_csv(fh, index=False)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ftuseg.io.annotations export DATA --out DIR [--ids ID,ID] [--no-images]``: Kaggle rows ->
    an annotation folder (GeoJSON per image + annotations.csv). Errors are one line and exit status 2."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m ftuseg.io.annotations",
                                     description="Convert Kaggle-layout RLE rows to an annotation folder of QuPath "
                                                 "GeoJSON files (one per image) with the images and annotations.csv.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="Kaggle train.csv rows -> IMAGE + IMAGE.geojson + annotations.csv")
    export.add_argument("data", help="data folder in the Kaggle layout (train.csv + train_images/)")
    export.add_argument("--out", required=True, help="annotation folder to write")
    export.add_argument("--ids", help="comma list of image ids (default: every row)")
    export.add_argument("--no-images", dest="copy_images", action="store_false",
                        help="do not copy the images; annotations.csv names them by absolute path")
    args = parser.parse_args(argv)
    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
    try:
        out = export_kaggle_annotations(args.data, args.out, ids=ids, copy_images=args.copy_images)
    except FtusegError as exc:
        print(f"ftuseg: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"{out}: annotation folder written ({ANNOTATIONS_CSV}, one .geojson per image)")
    return 0
