"""ftuseg predict: apply one or more runs (an ensemble) to images; a Kaggle submission and/or per-image outputs.

``--out submission.csv`` alone on a Kaggle data folder is the original in-memory path. ``--out-dir``
streams each image region by region (whole slides in bounded memory) and writes the ``--formats``
per image into ``DIR/<image name>/``; re-running skips images whose outputs are complete.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from ftuseg.cli._common import add_common, info

FORMAT_HELP = "comma list of rle,png,ome-tiff,geojson,prob,overlay (default: geojson,ome-tiff,overlay)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="predict masks with one or more runs (submission CSV and/or per-image outputs)",
        description="Predict DATA with RUN_DIR [RUN_DIR ...] (averaged). DATA is a Kaggle data folder "
                    "(train.csv/test.csv), an image, a folder of images, or a CSV (path or id, optional "
                    "pixel_size, organ).")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR... DATA", help="run folder(s) followed by the input")
    # ---- shipped models (ftuseg.zoo): names resolve to model folders, which are run folders -------------
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="a shipped model (see ftuseg models); repeat for several; mixes with RUN_DIRs")
    p.add_argument("--stain", help="stain of the input (e.g. PAS, H&E); a --model trained on another is refused")
    p.add_argument("--force-model", action="store_true",
                   help="apply --model to a stain or organ it was not trained for (as if it were its organ)")
    p.add_argument("--out", help="submission CSV to write (id,rle)")
    p.add_argument("--out-dir", help="folder for per-image outputs (resumable: finished images are skipped)")
    p.add_argument("--formats", default="geojson,ome-tiff,overlay", help=FORMAT_HELP)
    p.add_argument("--pixel-size", type=float, help="µm per pixel for every image (overrides CSV and metadata)")
    p.add_argument("--organ", help="organ of every image (kidney, largeintestine, lung, prostate, spleen)")
    p.add_argument("--images", help="image folder for a CSV with an id column (default: the CSV's folder)")
    p.add_argument("--no-tissue-detection", action="store_true", help="predict background tiles too")
    p.add_argument("--region-size", type=int, default=4096, help="level-0 pixels per streamed region")
    p.add_argument("--split", choices=("train", "test"), help="default: test if present, else train")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="flip test-time augmentation")
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="inference engine; auto: onnxruntime on CPU, torch on GPU")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--threshold", type=float, help="override the saved threshold(s)")
    # ---- Ray hook (engineer B): distribute images/regions over a Ray cluster ----------------------
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (needs pip install 'ftuseg[ray]'); ADDRESS defaults to auto")
    add_common(p)
    p.set_defaults(func=run)


def _check_out_dir_owner(out_dir: Path, settings: dict) -> None:
    """One output folder per model: resuming with other runs/thresholds would mix predictions."""
    from ftuseg.errors import FtusegError
    from ftuseg.io.atomic import atomic_write

    marker = out_dir / "predict.json"
    if marker.exists():
        try:
            old = json.loads(marker.read_text())
        except ValueError:
            old = None
        if old is not None and old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise FtusegError(f"{out_dir}: holds predictions made with other settings ({', '.join(changed)}); "
                              "use a new --out-dir")
    else:
        with atomic_write(marker) as fh:
            json.dump(settings, fh, indent=2)


def run(args: argparse.Namespace) -> int:
    from ftuseg.errors import FtusegError
    from ftuseg.inference.inputs import require_pixel_sizes, resolve_inputs
    from ftuseg.inference.predictor import Predictor, predict_table
    from ftuseg.inference.slide import SlideOptions, predict_many
    from ftuseg.io.atomic import atomic_write, check_output_dir

    if len(args.paths) + bool(args.model) < 2:
        raise FtusegError("predict needs at least one RUN_DIR or --model NAME, and a DATA input")
    if not args.out and not args.out_dir:
        raise FtusegError("predict needs --out (submission CSV) and/or --out-dir (per-image outputs)")
    *runs, data = args.paths
    if args.model:
        from ftuseg.zoo import resolve_models

        runs = [*runs, *map(str, resolve_models(args.model))]
    if args.out:
        check_output_dir(args.out)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    if args.out and args.out_dir and "rle" not in formats:
        formats += ("rle",)  # the submission is assembled from the per-image RLE
    options = SlideOptions(formats=formats, region_size=args.region_size,
                           tissue_detection=not args.no_tissue_detection, quiet=args.quiet)
    kaggle = Path(data).is_dir() and (args.split or any((Path(data) / f).exists() for f in ("test.csv", "train.csv")))
    items = resolve_inputs(data, pixel_size=args.pixel_size, split=args.split, images_dir=args.images,
                           organ=args.organ)
    if args.model:  # a shipped model refuses organs and stains it was not trained for, unless forced
        from ftuseg.zoo.scope import scope_inputs

        for note in scope_inputs(args.model, items, stain=args.stain, force=args.force_model,
                                 run_dirs=runs[:len(runs) - len(args.model)]):
            info(args, note)
    require_pixel_sizes(items)  # before loading models: a missing pixel size stops the run at once

    if args.ray is not None:
        # ---- Ray hook (engineer B provides ftuseg.inference.ray_predict.predict_many_ray) ---------
        if importlib.util.find_spec("ftuseg.inference.ray_predict") is None or not args.out_dir:
            raise FtusegError("--ray needs --out-dir and the Ray extra (pip install 'ftuseg[ray]')")
        from ftuseg.inference.ray_predict import predict_many_ray

        table = predict_many_ray(runs, items, args.out_dir, options, address=args.ray, device=args.device,
                                 tta=args.tta, which=args.checkpoint, engine=args.engine, threshold=args.threshold,
                                 progress=not args.quiet)
    else:
        predictor = Predictor.from_runs(runs, device=args.device, tta=args.tta, which=args.checkpoint,
                                        engine=args.engine)
        if args.threshold is not None:
            predictor.thresholds.threshold = args.threshold
            predictor.thresholds.organs = {}
        if not args.out_dir:
            import pandas as pd

            # The original path: whole images in memory, one submission row each.
            if kaggle:
                from ftuseg.io.dataset import load_table

                frame = load_table(data, args.split)
            else:
                frame = pd.DataFrame([{"id": it.id, "image_path": str(it.image_path), "organ": it.organ}
                                      for it in items])
            frame["pixel_size"] = [it.pixel_size for it in items]
            frame["organ"] = [it.organ for it in items]  # --organ, and organs a --model filled in or forced
            sub, _ = predict_table(predictor, frame, progress=not args.quiet)
            with atomic_write(args.out) as fh:
                sub.to_csv(fh, index=False)
            info(args, f"wrote {len(sub)} predictions to {args.out}")
            return 0
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        _check_out_dir_owner(out_dir, {
            "runs": [str(Path(r).resolve()) for r in runs], "checkpoint": args.checkpoint, "tta": args.tta,
            "threshold": args.threshold, "engine": args.engine,
        })
        table = predict_many(predictor, items, out_dir, options, progress=not args.quiet)
    skipped = table["tiles_skipped"].sum() / max(1, table["tiles_total"].sum())
    info(args, f"predicted {len(table)} image(s) into {args.out_dir}: {int(table['n_objects'].sum())} objects, "
               f"{skipped:.1%} of tiles skipped as background")
    if args.out:
        import pandas as pd

        rows = []
        for (_, row), it in zip(table.iterrows(), items, strict=True):
            rle = pd.read_csv(Path(args.out_dir) / row["slide_dir"] / "rle.csv", dtype=str, keep_default_na=False)
            rows.append({"id": it.id, "rle": rle["rle"].iloc[0]})
        with atomic_write(args.out) as fh:
            pd.DataFrame(rows, columns=["id", "rle"]).to_csv(fh, index=False)
        info(args, f"wrote {len(rows)} predictions to {args.out}")
    return 0
