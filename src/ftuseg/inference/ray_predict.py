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

import dataclasses
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
from ftuseg.inference.run_policy import ModelSpec

RAY_EXTRA_HINT = "pip install 'ftuseg[ray]'"


@dataclass
class RayOptions:
    """Where and how wide to run: the cluster, the workers and how slides are shared between them.

    ``address``: a running cluster (``"ray://head:10001"``, ``"HOST:6379"``); None, ``"auto"`` or ``"local"``
    joins the cluster this machine belongs to (``RAY_ADDRESS`` or ``ray start``) or else starts a local
    one; a process that already called ``ray.init`` keeps its cluster. ``num_workers`` defaults to one
    per GPU, or one per 4 CPUs. With ``split_regions`` an image of several regions is spread over the
    workers in contiguous chunks and then finalised once.
    """

    address: str | None = None
    num_workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None
    split_regions: bool = True
    progress: bool = True


def _model_spec(models: ModelSpec | Sequence[str | os.PathLike]) -> ModelSpec:
    return models if isinstance(models, ModelSpec) else ModelSpec(list(models))


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

    def __init__(self, models: ModelSpec, device: str, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.predictor = models.load(device=device)

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
    models: ModelSpec | Sequence[str | os.PathLike],
    image_paths: Sequence[Any],
    out_dir: str | os.PathLike,
    options: Any = None,
    ray_options: RayOptions | None = None,
    raise_on_failure: bool = True,
) -> Any:
    """``ftuseg predict --ray``: predict images on Ray; writes and returns ``out_dir/predictions.csv``.

    ``models``: a :class:`ModelSpec` or run folders. ``image_paths`` are paths or
    :class:`~ftuseg.inference.inputs.PredictInput` items (their pixel size and organ override ``options``
    per image). The table has the rows of ``slide.predict_many`` plus ``status`` (done / skipped /
    failed), ``error``, ``seconds`` and ``tasks``. When slides failed, the table is still written and,
    with ``raise_on_failure``, a one-line FtusegError names the first one (re-running retries only the
    unfinished slides).
    """
    from ftuseg.inference.slide import results_row, write_results

    items = list(image_paths)
    outcomes = run_ray_slides(models, items, out_dir, options, ray_options)
    rows = []
    for item, o in zip(items, outcomes, strict=True):
        row = results_row(item, o.image_path, o.result)
        row.update(status=o.status, error=o.error, seconds=round(o.seconds, 3), tasks=o.tasks)
        rows.append(row)
    table = write_results(rows, out_dir)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and raise_on_failure:
        raise FtusegError(f"{len(failed)} of {len(outcomes)} image(s) failed (first: {failed[0].image_path}: "
                          f"{failed[0].error}); the others are done, see {Path(out_dir) / 'predictions.csv'}; "
                          "re-run to retry")
    return table


def run_ray_slides(
    models: ModelSpec | Sequence[str | os.PathLike],
    image_paths: Sequence[Any],
    out_dir: str | os.PathLike,
    options: Any = None,
    ray_options: RayOptions | None = None,
) -> list[SlideOutcome]:
    """Predict images into ``out_dir`` (``out_dir/<stem>/`` per image) on Ray; one outcome per image, in order."""
    ray = _import_ray()
    from ftuseg.inference.slide import SlideOptions, options_for

    models = _model_spec(models)
    ray_options = ray_options or RayOptions()
    options = options if options is not None else SlideOptions()
    out = Path(out_dir)
    if not out.is_dir():
        raise FtusegError(f"{out}: output folder does not exist")
    models.check_runs()
    models = dataclasses.replace(models, run_dirs=[str(Path(r).resolve()) for r in models.run_dirs])
    jobs = [(str(Path(getattr(item, "image_path", item)).resolve()), options_for(options, item))
            for item in image_paths]
    address, progress = ray_options.address, ray_options.progress
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
        return _run(ray, models, jobs, str(out.resolve()), ray_options)
    finally:
        if started_here:
            ray.shutdown()


def _run(ray: Any, models: ModelSpec, jobs: list[tuple[str, Any]], out_dir: str,
         ray_options: RayOptions) -> list[SlideOutcome]:
    from tqdm.auto import tqdm

    n_workers, cpus, gpus = _cluster_plan(ray, models.device, ray_options.num_workers, ray_options.cpus_per_worker,
                                          ray_options.gpus_per_worker)
    split_regions, progress = ray_options.split_regions, ray_options.progress
    n_workers = max(1, min(n_workers, len(jobs)) if not split_regions else n_workers)
    actor_cls = ray.remote(SlideWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=2, max_task_retries=1)
    worker_device = "cuda" if gpus > 0 else ("cpu" if models.device == "auto" else models.device)
    threads = max(1, int(cpus)) if gpus == 0 else None
    actors = [actor_cls.remote(models, worker_device, threads) for _ in range(n_workers)]

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
