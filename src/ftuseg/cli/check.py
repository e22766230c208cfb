"""ftuseg check: report every problem of a data set at once, with a summary; non-zero exit on errors."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="validate a data set and list every problem at once",
        description="Check DATA (train.csv/test.csv + *_images/, meta.csv): CSV columns and values, duplicate "
                    "ids, missing or extra images, images that do not decode or differ from img_height/img_width, "
                    "RLE masks, pixel sizes, organs. An annotation folder (images with IMAGE.geojson or "
                    "IMAGE_mask.png beside them, optional annotations.csv) is checked the way train loads it: "
                    "GeoJSON structure, classes, invalid polygons, coordinates outside the image or in another "
                    "coordinate space, mask sizes, pixel sizes. Prints one line per problem and a summary; exits 1 "
                    "if any error was found (warnings alone exit 0).",
    )
    p.add_argument("data", help="data folder")
    p.add_argument("--split", choices=("train", "test"), help="check only this split (default: every split present)")
    p.add_argument("--no-decode", dest="decode", action="store_false",
                   help="do not decode images (faster; misses truncated or corrupt files)")
    p.add_argument("--pixel-size", type=float, metavar="UM_PER_PX",
                   help="annotation folders: µm/px of every image (overrides annotations.csv and metadata)")
    p.add_argument("--organ", help="annotation folders: organ of every image (overrides annotations.csv)")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ftuseg.check import check_dataset, format_problems, summary_line

    problems = check_dataset(args.data, args.split, decode_images=args.decode, progress=not args.quiet,
                             pixel_size=args.pixel_size, organ=args.organ)
    for line in format_problems(problems):
        print(line)
    print(summary_line(problems, args.data))
    return 1 if any(p.severity == "error" for p in problems) else 0
