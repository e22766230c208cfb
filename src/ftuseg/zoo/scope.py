"""What a shipped model may be applied to: its organs and its stain, unless the user insists.

``ftuseg predict --model NAME`` calls :func:`scope_inputs` on the images before anything is predicted:

- an image of an organ that no model of the ensemble covers is refused (one line naming the image);
  ``--force-model`` predicts it as the models' organ instead (their pixel size, threshold and class
  name), which needs the models to cover exactly one organ (with several, say which with ``--organ``);
- an image without an organ is predicted as the models' organ when they cover exactly one (kidney for
  ``glomeruli-pas``), and refused otherwise;
- ``--stain S`` declares the input's stain: a model trained on another stain is refused unless
  ``--force-model``. Without ``--stain`` the input is taken to be in each model's stain (an image does
  not say its stain, and guessing it from colour would be wrong often enough to mislead).

Run folders given beside ``--model`` take part: an all-organ run covers every organ.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ftuseg.errors import FtusegError
from ftuseg.inference.inputs import PredictInput
from ftuseg.zoo.registry import ZooModel, get_model, normalise_stain


def _run_organs(run_dir: str | os.PathLike) -> list[str] | None:
    """The organs a run folder covers; None when it covers every organ."""
    from ftuseg.config import load_config
    from ftuseg.models.checkpoint import resolve_checkpoint

    cfg_path = resolve_checkpoint(run_dir).parent / "config.yaml"
    if not cfg_path.exists():
        return None
    return list(load_config(cfg_path).organs) or None


def scope_inputs(
    models: Sequence[str | ZooModel],
    items: list[PredictInput],
    stain: str | None = None,
    force: bool = False,
    run_dirs: Sequence[str | os.PathLike] = (),
) -> list[str]:
    """Check (and where allowed, fill in) each image's organ for the ``--model`` ensemble; returns notes to show.

    Changes ``items`` in place: the organ of an image without one, or of a forced one."""
    zoo = [m if isinstance(m, ZooModel) else get_model(m) for m in models]
    notes: list[str] = []
    names = ", ".join(m.name for m in zoo)
    if stain is not None:
        wrong = [m for m in zoo if normalise_stain(m.stain) != normalise_stain(stain)]
        if wrong and not force:
            m = wrong[0]
            raise FtusegError(f"--stain {stain}: model {m.name} was trained on {m.stain} only; pass --force-model "
                              "to apply it anyway")
        if wrong:
            notes.append(f"--force-model: applying {', '.join(m.name for m in wrong)} ({wrong[0].stain}) to "
                         f"{stain} images")
    covered: set[str] | None = {o for m in zoo for o in m.organs}
    for run in run_dirs:
        organs = _run_organs(run)
        if organs is None:
            covered = None  # an all-organ run covers everything: routing has nothing to refuse
            break
        covered |= set(organs)
    if covered is None or not items:
        return notes
    only = next(iter(covered)) if len(covered) == 1 else None
    listed = ", ".join(sorted(covered))
    guessed, forced = 0, 0
    for it in items:
        if it.organ is None:
            if only is None:
                raise FtusegError(f"{it.image_path}: organ unknown and the models ({names}) cover {listed}: "
                                  "pass --organ")
            it.organ = only
            guessed += 1
        elif it.organ not in covered:
            if not force:
                raise FtusegError(f"{it.image_path}: organ {it.organ!r}: the models ({names}) were trained on "
                                  f"{listed} only; pass --force-model to apply them anyway")
            if only is None:
                raise FtusegError(f"{it.image_path}: --force-model: the models cover several organs ({listed}); "
                                  "say which to predict as with --organ")
            it.organ = only
            forced += 1
    if guessed:
        notes.append(f"{guessed} image(s) without an organ predicted as {only} (the organ of {names})")
    if forced:
        notes.append(f"--force-model: {forced} image(s) of other organs predicted as {only}")
    return notes
