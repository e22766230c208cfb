"""Many slides (and the regions of huge ones) over a Ray cluster: one model per worker, paths not pixels.

Each Ray actor builds one :class:`~ftuseg.inference.predictor.Predictor` (one GPU per actor when the
cluster has GPUs) and runs the same functions as the single-machine path: ``predict_slide`` for a
slide, or ``predict_slide(regions=...)`` on chunks of ``plan_regions`` followed by one
``finalize_slide`` when a slide has several regions. Only image paths, run folders, options and region
boxes travel through Ray; every worker reads the image and writes its regions' zarr chunks itself, so
the images and ``out_dir`` must be on a file system all nodes share (the same paths everywhere).

Resumable: slides whose outputs are complete are skipped, and regions already written are not
predicted again. A slide that fails (bad file, crash) is reported and the others carry on; a worker
process that dies is restarted by Ray and its task retried once.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftuseg.errors import FtusegError

RAY_EXTRA_HINT = "pip install 'ftuseg[ray]'"


@dataclass
class SlideOutcome:
    """What happened to one slide: ``done``, ``skipped`` (already complete) or ``failed``."""

    image_path: str
    status: str
    result: Any = None  # ftuseg.inference.slide.SlideResult when done / skipped
    error: str | None = None
    seconds: float = 0.0
    tasks: int = 0  # Ray tasks this slide took (1 whole, or 1 + region chunks + 1 finalize)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise FtusegError(f"distributed prediction needs Ray, which is not installed: {RAY_EXTRA_HINT}") from None
    return ray


class SlideWorker:
    """The body of a Ray actor: one predictor, reused for every slide and region sent to it."""

    def __init__(self, run_dirs: list[str], device: str, tta: bool | None, which: str, engine: str,
                 threads: int | None, threshold: float | None = None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        from ftuseg.inference.predictor import Predictor

        self.predictor = Predictor.from_runs(run_dirs, device=device, tta=tta, which=which, engine=engine)
        if threshold is not None:  # as ftuseg predict --threshold: one threshold for every organ
            self.predictor.thresholds.threshold = threshold
            self.predictor.thresholds.organs = {}

    def start(self, image_path: str, out_dir: str, options: Any, split: bool) -> tuple[str, Any]:
        """("done", result) for a finished slide, or ("split", regions) after preparing its stores."""
        from ftuseg.inference.slide import (
            load_result,
            plan_regions,
            predict_slide,
            slide_outputs_complete,
        )

        if slide_outputs_complete(image_path, out_dir, options):
            return "skipped", load_result(image_path, out_dir, resumed=True)
        regions = plan_regions(image_path, options)
        if not split or len(regions) < 2:
            return "done", predict_slide(self.predictor, image_path, out_dir, options)
        predict_slide(self.predictor, image_path, out_dir, options, regions=[])  # stores + slide.json, once
        return "split", regions

    def regions(self, image_path: str, out_dir: str, options: Any, boxes: list[tuple[int, int, int, int]]) -> int:
        from ftuseg.inference.slide import predict_slide

        predict_slide(self.predictor, image_path, out_dir, options, regions=boxes)
        return len(boxes)

    def finalize(self, image_path: str, out_dir: str, options: Any) -> Any:
        from ftuseg.inference.slide import finalize_slide

        return finalize_slide(image_path, out_dir, options)


def _error_text(exc: BaseException) -> str:
    """One line for the report: the worker's own exception when Ray wrapped it."""
    cause = getattr(exc, "cause", None)
    err = cause if isinstance(cause, BaseException) else exc
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, FtusegError):
        return text
    return f"{type(err).__name__}: {text}"[:300]


def _cluster_plan(ray: Any, device: str, num_workers: int | None, cpus_per_worker: float | None,
                  gpus_per_worker: float | None) -> tuple[int, float, float]:
    """(workers, CPUs each, GPUs each) from the cluster's resources: one worker per GPU when there are GPUs."""
    res = ray.cluster_resources()
    cpus, gpus = float(res.get("CPU", 1)), float(res.get("GPU", 0))
    use_gpu = device != "cpu" and (gpus > 0 or (gpus_per_worker or 0) > 0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if use_gpu else 0.0
    if num_workers is None:
        if gpus_per_worker > 0:
            num_workers = max(1, int(gpus // gpus_per_worker))
        else:
            # a few threads per model: conv nets scale sub-linearly with threads, so several workers win
            each = cpus_per_worker or min(4.0, cpus)
            num_workers = max(1, int(cpus // each))
    if cpus_per_worker is None:
        cpus_per_worker = max(1.0, math.floor(cpus / num_workers)) if gpus_per_worker == 0 else 1.0
    return int(num_workers), float(cpus_per_worker), float(gpus_per_worker)


def predict_many_ray(
    run_dirs: Sequence[str | os.PathLike],
    image_paths: Sequence[Any],
    out_dir: str | os.PathLike,
    options: Any = None,
    address: str | None = None,
    num_workers: int | None = None,
    device: str = "auto",
    tta: bool | None = None,
    which: str = "best",
    engine: str = "torch",
    threshold: float | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    split_regions: bool = True,
    progress: bool = True,
    raise_on_failure: bool = True,
) -> Any:
    """``ftuseg predict --ray``: predict images on Ray; writes and returns ``out_dir/predictions.csv``.

    ``image_paths`` are paths or :class:`~ftuseg.inference.inputs.PredictInput` items (their pixel size
    and organ override ``options`` per image). The table has the columns of ``slide.predict_many`` plus
    ``status`` (done / skipped / failed), ``error``, ``seconds`` and ``tasks``. When slides failed, the
    table is still written and, with ``raise_on_failure``, a one-line FtusegError names the first one
    (re-running retries only the unfinished slides). Other arguments: see :func:`run_ray_slides`.
    """
    import pandas as pd

    from ftuseg.io.atomic import atomic_write

    items = list(image_paths)
    outcomes = run_ray_slides(run_dirs, items, out_dir, options, address=address, num_workers=num_workers,
                              device=device, tta=tta, which=which, engine=engine, threshold=threshold,
                              cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                              split_regions=split_regions, progress=progress)
    rows = [_table_row(item, o) for item, o in zip(items, outcomes, strict=True)]
    table = pd.DataFrame(rows)
    with atomic_write(Path(out_dir) / "predictions.csv") as fh:
        table.to_csv(fh, index=False)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and raise_on_failure:
        raise FtusegError(f"{len(failed)} of {len(outcomes)} image(s) failed (first: {failed[0].image_path}: "
                          f"{failed[0].error}); the others are done, see {Path(out_dir) / 'predictions.csv'}; "
                          "re-run to retry")
    return table


def _table_row(item: Any, outcome: SlideOutcome) -> dict[str, Any]:
    """One row like ``slide.predict_many`` writes, plus the Ray status."""
    res = outcome.result
    row: dict[str, Any] = {"id": getattr(item, "id", Path(outcome.image_path).name),
                           "image_path": outcome.image_path, "organ": getattr(item, "organ", None)}
    if res is not None:
        row.update(pixel_size=res.pixel_size, height=res.height, width=res.width, n_objects=res.n_objects,
                   area_um2=res.areas.get("total_um2", 0.0), mean_object_um2=res.areas.get("mean_um2", 0.0),
                   tiles_total=res.tiles_total, tiles_skipped=res.tiles_skipped,
                   skipped_fraction=round(res.skipped_fraction, 6), slide_dir=Path(res.out_dir).name)
        rle = getattr(item, "rle", None)
        if rle is not None:
            row["dice"] = _dice(res, rle)
    row.update(status=outcome.status, error=outcome.error, seconds=round(outcome.seconds, 3), tasks=outcome.tasks)
    return row


def _dice(res: Any, rle: str) -> float | None:
    import numpy as np
    import zarr

    from ftuseg.metrics import dice_score
    from ftuseg.outputs.overlay import PNG_MAX_PIXELS
    from ftuseg.rle import decode_rle

    if res.height * res.width > PNG_MAX_PIXELS:
        return None
    pred = np.asarray(zarr.open_array(store=str(Path(res.out_dir) / "mask.zarr"), mode="r")[:, :])
    return dice_score(pred, decode_rle(rle, (res.height, res.width)))


def run_ray_slides(
    run_dirs: Sequence[str | os.PathLike],
    image_paths: Sequence[Any],
    out_dir: str | os.PathLike,
    options: Any = None,
    address: str | None = None,
    num_workers: int | None = None,
    device: str = "auto",
    tta: bool | None = None,
    which: str = "best",
    engine: str = "torch",
    threshold: float | None = None,
    cpus_per_worker: float | None = None,
    gpus_per_worker: float | None = None,
    split_regions: bool = True,
    progress: bool = True,
) -> list[SlideOutcome]:
    """Predict images into ``out_dir`` (``out_dir/<stem>/`` per image) on Ray; one outcome per image, in order.

    ``address``: a running cluster (``"ray://head:10001"``, ``"HOST:6379"``); None, ``"auto"`` or ``"local"``
    joins the cluster this machine belongs to (``RAY_ADDRESS`` or ``ray start``) or else starts a local
    one; a process that already called ``ray.init`` keeps its cluster. ``num_workers`` defaults to one
    per GPU, or one per 4 CPUs. With ``split_regions`` an image of several regions
    (``options.region_size``) is spread over the workers in contiguous chunks and then finalised once.
    """
    import dataclasses

    ray = _import_ray()
    from ftuseg.inference.slide import SlideOptions
    from ftuseg.models.checkpoint import resolve_checkpoint

    options = options if options is not None else SlideOptions()
    out = Path(out_dir)
    if not out.is_dir():
        raise FtusegError(f"{out}: output folder does not exist")
    for r in run_dirs:  # fail here, once, rather than in every worker
        resolve_checkpoint(r, which)
    run_dirs = [str(Path(r).resolve()) for r in run_dirs]
    jobs = []
    for item in image_paths:
        path = getattr(item, "image_path", item)
        opts = options
        if hasattr(item, "image_path"):  # a PredictInput: its own pixel size and organ
            opts = dataclasses.replace(options, pixel_size=item.pixel_size, organ=item.organ)
        jobs.append((str(Path(path).resolve()), opts))
    started_here = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        target = None if address in (None, "auto", "local") else address
        try:
            ray.init(address=target, include_dashboard=False, log_to_driver=progress, logging_level=logging.WARNING)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise FtusegError(f"cannot reach a Ray cluster at {address} ({_error_text(exc)})") from None
        started_here = True
    try:
        return _run(ray, run_dirs, jobs, str(out.resolve()), num_workers, device, tta, which, engine, threshold,
                    cpus_per_worker, gpus_per_worker, split_regions, progress)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray, run_dirs, jobs, out_dir, num_workers, device, tta, which, engine, threshold, cpus_per_worker,
         gpus_per_worker, split_regions, progress) -> list[SlideOutcome]:
    from tqdm.auto import tqdm

    n_workers, cpus, gpus = _cluster_plan(ray, device, num_workers, cpus_per_worker, gpus_per_worker)
    n_workers = max(1, min(n_workers, len(jobs)) if not split_regions else n_workers)
    actor_cls = ray.remote(SlideWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=2, max_task_retries=1)
    worker_device = "cuda" if gpus > 0 else ("cpu" if device == "auto" else device)
    threads = max(1, int(cpus)) if gpus == 0 else None
    actors = [actor_cls.remote(run_dirs, worker_device, tta, which, engine, threads, threshold)
              for _ in range(n_workers)]

    keys = list(range(len(jobs)))
    outcomes = {k: SlideOutcome(jobs[k][0], "pending") for k in keys}
    t_start = {k: time.perf_counter() for k in keys}
    n_tasks: dict[int, int] = {}
    queue: deque[tuple[str, int, tuple]] = deque(("start", k, ()) for k in keys)
    left: dict[int, int] = {}  # region tasks still running per split image
    idle = deque(actors)
    running: dict[Any, tuple[Any, str, int]] = {}  # ObjectRef -> (actor, kind, job key)
    bar = tqdm(total=len(jobs), desc="slides", unit="slide", disable=not progress)

    def finish(key: int, status: str, result: Any = None, error: str | None = None) -> None:
        if outcomes[key].status in ("done", "skipped", "failed"):
            return
        outcomes[key] = SlideOutcome(jobs[key][0], status, result, error, time.perf_counter() - t_start[key],
                                     n_tasks.get(key, 0))
        bar.update(1)
        if error is not None:
            bar.write(f"ftuseg: {Path(jobs[key][0]).name} failed: {error}")

    while queue or running:
        while queue and idle:
            kind, key, args = queue.popleft()
            if outcomes[key].status == "failed":
                continue  # a sibling task of this image failed: drop the rest
            actor = idle.popleft()
            n_tasks[key] = n_tasks.get(key, 0) + 1
            path, options = jobs[key]
            if kind == "start":
                t_start[key] = time.perf_counter()
                ref = actor.start.remote(path, out_dir, options, split_regions and n_workers > 1)
            elif kind == "regions":
                ref = actor.regions.remote(path, out_dir, options, list(args))
            else:
                ref = actor.finalize.remote(path, out_dir, options)
            running[ref] = (actor, kind, key)
        if not running:
            continue
        ready, _ = ray.wait(list(running), num_returns=1)
        ref = ready[0]
        actor, kind, key = running.pop(ref)
        try:
            value = ray.get(ref)
        except ray.exceptions.RayActorError as exc:  # the worker died and could not be recovered
            finish(key, "failed", error=f"worker died: {_error_text(exc)}")
            try:  # keep the actor only if Ray brought it back
                ray.get(actor.__ray_ready__.remote(), timeout=60)
                idle.append(actor)
            except Exception:
                pass
            if not idle and not running:
                for _, rest, _ in queue:
                    finish(rest, "failed", error="no Ray workers left")
                queue.clear()
            continue
        except Exception as exc:  # the task raised: this slide fails, the others carry on
            finish(key, "failed", error=_error_text(exc))
            idle.append(actor)
            continue
        idle.append(actor)
        if kind == "start":
            status, payload = value
            if status in ("done", "skipped"):
                finish(key, status, payload)
            else:  # split: contiguous chunks of regions, at most one per worker
                regions = payload
                per = math.ceil(len(regions) / n_workers)
                chunks = [regions[i : i + per] for i in range(0, len(regions), per)]
                left[key] = len(chunks)
                # region work goes first so a huge slide does not wait behind every small one
                for chunk in reversed(chunks):
                    queue.appendleft(("regions", key, tuple(tuple(b) for b in chunk)))
        elif kind == "regions":
            left[key] -= 1
            if left[key] == 0 and outcomes[key].status != "failed":
                queue.appendleft(("finalize", key, ()))
        else:
            finish(key, "done", value)
    bar.close()
    for actor in actors:
        ray.kill(actor)
    return [outcomes[k] for k in keys]
