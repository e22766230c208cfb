"""ftuseg predict: apply one or more runs (an ensemble) to images; a Kaggle submission and/or per-image outputs.

``--out submission.csv`` alone on a Kaggle data folder is the original in-memory path. ``--out-dir``
streams each image region by region (whole slides in bounded memory) and writes the ``--formats``
per image into ``DIR/<image name>/``; re-running skips images whose outputs are complete.
"""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, add_tta_flags, info

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
    p.add_argument("--allow-unknown-organ", action="store_true",
                   help="predict an organ ftuseg does not know with an all-organ run's defaults (else refused)")
    p.add_argument("--images", help="image folder for a CSV with an id column (default: the CSV's folder)")
    p.add_argument("--no-tissue-detection", action="store_true", help="predict background tiles too")
    p.add_argument("--region-size", type=int, default=4096, help="level-0 pixels per streamed region")
    p.add_argument("--split", choices=("train", "test"), help="default: test if present, else train")
    add_tta_flags(p, help="test-time augmentation: --tta the 4 flips (4x the time), --tta d4 the flips of the tile "
                          "and of its transpose (8x); default: each run's own setting")
    p.add_argument("--tta-scales", metavar="F,F,...",
                   help="multi-scale TTA: also predict at these factors of each run's µm/px and average "
                        "(e.g. 0.8,1,1.25: about 3.2x the time); default: each run's own setting")
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="inference engine; auto: torch on GPU; on CPU whichever of torch and onnxruntime "
                        "ran this network faster on this machine (timed once, then cached)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best")
    p.add_argument("--threshold", type=float, help="override the saved threshold(s)")
    p.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (needs pip install 'ftuseg[ray]'); ADDRESS defaults to auto")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.errors import FtusegError
    from ftuseg.inference.inputs import require_pixel_sizes, resolve_inputs
    from ftuseg.inference.run_policy import (
        ModelSpec,
        gather_submission,
        predict_into_dir,
        predict_submission,
        write_csv,
    )
    from ftuseg.inference.slide import SlideOptions
    from ftuseg.io.atomic import check_output_dir

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
    items = resolve_inputs(data, pixel_size=args.pixel_size, split=args.split, images_dir=args.images,
                           organ=args.organ)
    if args.model:  # a shipped model refuses organs and stains it was not trained for, unless forced
        from ftuseg.zoo.scope import scope_inputs

        for note in scope_inputs(args.model, items, stain=args.stain, force=args.force_model,
                                 run_dirs=runs[:len(runs) - len(args.model)]):
            info(args, note)
    require_pixel_sizes(items)  # before loading models: a missing pixel size stops the run at once
    models = ModelSpec(runs, device=args.device, tta=args.tta, which=args.checkpoint, engine=args.engine,
                       threshold=args.threshold, allow_unknown_organ=args.allow_unknown_organ,
                       tta_scales=args.tta_scales)
    models.check_organs(items)  # unknown, uncovered or untuned organs: refused before any model loads

    if not args.out_dir:
        if args.ray is not None:
            raise FtusegError("--ray needs --out-dir (per-image outputs that every node writes)")
        # Whole images in memory, one submission row each.
        sub = predict_submission(models.load(), data, items, args.split, progress=not args.quiet)
        write_csv(sub, args.out)
        info(args, f"wrote {len(sub)} predictions to {args.out}")
        return 0
    ray_options = None
    if args.ray is not None:
        from ftuseg.inference.ray_predict import RayOptions

        ray_options = RayOptions(address=args.ray, progress=not args.quiet)
    table = predict_into_dir(models, items, args.out_dir, options, ray_options, progress=not args.quiet)
    skipped = table["tiles_skipped"].sum() / max(1, table["tiles_total"].sum())
    info(args, f"predicted {len(table)} image(s) into {args.out_dir}: {int(table['n_objects'].sum())} objects, "
               f"{skipped:.1%} of tiles skipped as background")
    if args.out:
        sub = gather_submission(table, items, args.out_dir)
        write_csv(sub, args.out)
        info(args, f"wrote {len(sub)} predictions to {args.out}")
    return 0
