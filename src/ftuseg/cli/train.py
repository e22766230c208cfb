"""ftuseg train: train a preset (or YAML config) into a run folder; --resume continues it.

``--nproc N`` re-launches the same command under ``torch.distributed.run`` (torchrun) with N processes
on this machine; ``torchrun --nproc_per_node N -m ftuseg train ...`` works the same way and also spans
several nodes.
"""

from __future__ import annotations

import argparse

from ftuseg.cli._common import add_common, add_config_args, config_from_args, info


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model into a run folder",
                       description="Train on DATA (train.csv + train_images/) into --out RUN_DIR. Runs data-parallel "
                                   "(DDP) with --nproc N, or unchanged under torchrun --nproc_per_node N -m ftuseg.")
    p.add_argument("data", help="data folder with train.csv + train_images/ (and optional meta.csv), or an "
                                "annotation folder: images with IMAGE.geojson (QuPath) or IMAGE_mask.png beside them")
    p.add_argument("--out", required=True, help="run folder (checkpoints, config.yaml, metrics.csv)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    p.add_argument("--folds", choices=("all",), help="train every grouped fold into RUN_DIR/fold<k>")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke tests)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train with N data-parallel processes on this machine (one per GPU; gloo on CPU)")
    p.add_argument("--pixel-size", dest="cfg_data_pixel_size", metavar="UM_PER_PX",
                   help="annotation folders: µm/px of every image (same as --data-pixel-size)")
    p.add_argument("--organ", dest="cfg_data_organ", metavar="ORGAN",
                   help="annotation folders: organ of every image (same as --data-organ)")
    add_config_args(p)
    add_common(p)
    # no default preset here: --init-from takes its source's preset unless --preset is given (else seed-512)
    p.set_defaults(func=run, preset=None)


def run(args: argparse.Namespace) -> int:
    from ftuseg.errors import one_line_warnings

    with one_line_warnings():  # annotation warnings (repaired polygons, ignored classes): one line each
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ftuseg.errors import FtusegError
    from ftuseg.training.distributed import env_info
    from ftuseg.training.trainer import train

    if args.cfg_init_from:  # fine-tuning: the source's preset, network and pixel sizes unless given
        from ftuseg.zoo.finetune import finetune_config

        overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
        cfg = finetune_config(overrides.pop("init_from"), args.preset, args.config_yaml, **overrides)
    else:
        args.preset = args.preset or "seed-512"
        cfg = config_from_args(args)
    dist = env_info()
    if args.nproc < 1:
        raise FtusegError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc > 1 and not dist.enabled:
        return launch_distributed(cfg, args)
    quiet = args.quiet or not dist.is_main  # one rank reports
    if args.folds == "all":
        for k in range(cfg.n_folds):
            res = train(cfg.replace(fold=k), args.data, Path(args.out) / f"fold{k}", resume=args.resume,
                        progress=not quiet, max_steps=args.max_steps)
            if not quiet:
                info(args, f"fold {k}: best val dice {res.best_dice}")
        return 0
    res = train(cfg, args.data, args.out, resume=args.resume, progress=not quiet, max_steps=args.max_steps)
    dice = "n/a" if res.best_dice is None else f"{res.best_dice:.4f}"
    if not quiet:
        info(args, f"done: {res.epochs} epochs, {res.steps} steps, lr {res.lr:.3g}, best val dice {dice} "
                   f"-> {res.run_dir}")
    return 0


def launch_distributed(cfg, args: argparse.Namespace) -> int:
    """Re-run this command under ``python -m torch.distributed.run --standalone --nproc_per_node N``.

    The resolved configuration travels as a YAML file, so every flag, preset and config file the user
    gave reaches the workers exactly as parsed here. Returns the launcher's exit status.
    """
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="ftuseg-ddp-") as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        cfg.save(cfg_path)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "ftuseg"]
        if getattr(args, "debug", False):
            cmd.append("--debug")
        cmd += ["train", str(args.data), "--out", str(args.out), "--preset", cfg.preset, "--config", str(cfg_path)]
        if args.resume:
            cmd.append("--resume")
        if args.folds:
            cmd += ["--folds", args.folds]
        if args.max_steps is not None:
            cmd += ["--max-steps", str(args.max_steps)]
        if args.quiet:
            cmd.append("--quiet")
        env = dict(os.environ)
        # N processes share this machine's cores; torchrun would otherwise pin every worker to 1 thread
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
        info(args, f"launching {args.nproc} processes: torchrun --standalone --nproc_per_node {args.nproc} "
                   f"-m ftuseg train ...")
        return subprocess.call(cmd, env=env)
