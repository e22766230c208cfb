"""ftuseg models: the shipped models. ``ftuseg models`` lists them, ``ftuseg models show NAME`` prints a model
card, ``ftuseg models package RUN_DIR --name NAME`` turns a trained run folder into one."""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the shipped models; show a model card; package a run as a model",
                       description="Without an action: a table of the shipped models (name, organs, stain, µm/px, "
                                   "size). Use one with: ftuseg predict --model NAME ..., ftuseg.load_model(NAME), "
                                   "ftuseg train DATA --init-from NAME ...")
    add_common(p)
    p.set_defaults(func=run_list)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    show = actions.add_parser("show", help="print a model's card (architecture, data, licences, accuracy)")
    show.add_argument("name", help="model name (see ftuseg models)")
    add_common(show)
    show.set_defaults(func=run_show)
    pack = actions.add_parser(
        "package", help="turn a trained run folder into a shipped model (fp16 safetensors, hash, model card)",
        description="Writes OUT/NAME/ with config.yaml, model.safetensors (fp16), thresholds.json (if the run has "
                    "one), MODEL_CARD.md and zoo.json (name, organs, stain, µm/px, size, SHA-256). Also "
                    "python -m ftuseg.zoo.package.")
    pack.add_argument("run_dir", help="trained run folder (best.pt + config.yaml [+ thresholds.json, run_info.json])")
    pack.add_argument("--name", required=True, help="model name, e.g. glomeruli-pas")
    pack.add_argument("--stain", help="stain it was trained on, e.g. PAS or H&E (default: from ftu-bench's organs)")
    pack.add_argument("--organs", help="organs (comma list), for a run trained on every organ")
    pack.add_argument("--scores", help="measured Dice: benchmarks/results/zoo_train.json (models[NAME]) or a JSON "
                                       "of {no_tta: dice_breakdown, tta: dice_breakdown}")
    pack.add_argument("--card", help="YAML/JSON with summary, accuracy_split, failure_modes (list), notes")
    pack.add_argument("--out", help="zoo folder to write into (default: the shipped src/ftuseg/zoo/models)")
    pack.add_argument("--checkpoint", choices=("best", "last"), default="best")
    add_common(pack)
    pack.set_defaults(func=run_package)


def run_list(args: argparse.Namespace) -> int:
    from ftuseg.zoo import format_models_table, list_models, zoo_roots

    models = list_models()
    if not models:
        print(f"no models installed (looked in {', '.join(map(str, zoo_roots()))})")
        return 0
    print(format_models_table(models))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from ftuseg.zoo import model_card

    print(model_card(args.name), end="")
    return 0


def run_package(args: argparse.Namespace) -> int:
    from ftuseg.zoo import package_run

    organs = [o.strip() for o in args.organs.split(",") if o.strip()] if args.organs else None
    res = package_run(args.run_dir, args.name, stain=args.stain, card=args.card, out=args.out, scores=args.scores,
                      organs=organs, which=args.checkpoint)
    m = res.model
    info(args, f"packaged {m.name} into {m.path}: {', '.join(m.organs)}, {m.stain}, {m.size_bytes / 1e6:.1f} MB, "
               f"sha256 {m.sha256[:16]}..., fp16 vs fp32: max probability difference {res.fp16_max_prob_diff:.1e}, "
               f"{res.fp16_flipped:.4%} of pixels flipped")
    if res.todos:
        info(args, f"warning: {m.card_path} still has TODO placeholders ({', '.join(res.todos)}): give --scores "
                   "(and --card accuracy_split) before shipping it")
    return 0
