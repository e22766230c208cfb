"""Test-only instrumentation of ftuseg processes that tests start (``PYTHONPATH=tests/hooks``).

Python imports ``sitecustomize`` at start-up in every process, torchrun's workers included, so these
patches reach processes a test cannot monkeypatch directly; production code carries no hook. Each acts
only when its environment variable is set:

``FTUSEG_TEST_PAUSE_BEFORE_RENAME=SECONDS`` (with ``FTUSEG_TEST_PAUSE_MATCH``, a file-name glob): before an
``os.replace`` onto a matching name (an atomic write whose temp file is complete), print ``ftuseg-test:
pause before rename PATH`` to stderr and sleep, so a test can kill the process at exactly that point.

``FTUSEG_TEST_DDP_CHECKSUMS=FOLDER``: at the end of every epoch (after the replicas' BatchNorm buffers are
averaged) each rank writes ``FOLDER/rank<r>.json`` with SHA-256 checksums of its parameters and buffers.
"""

from __future__ import annotations

import os


def _pause_before_rename(seconds: float, match: str) -> None:
    import fnmatch
    import sys
    import time
    from pathlib import Path

    replace = os.replace

    def paused_replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(Path(dst).name, match):
            print(f"ftuseg-test: pause before rename {dst}", file=sys.stderr, flush=True)
            time.sleep(seconds)
        return replace(src, dst, *args, **kwargs)

    os.replace = paused_replace


def _ddp_checksums(folder: str) -> None:
    import json
    from pathlib import Path

    from ftuseg.training import distributed

    average_buffers = distributed.average_buffers

    def average_then_record(module, info, *args, **kwargs):
        out = average_buffers(module, info, *args, **kwargs)
        Path(folder).mkdir(parents=True, exist_ok=True)
        record = {"rank": info.rank, "world_size": info.world_size, **distributed.state_checksums(module)}
        (Path(folder) / f"rank{info.rank}.json").write_text(json.dumps(record))
        return out

    distributed.average_buffers = average_then_record


if os.environ.get("FTUSEG_TEST_PAUSE_BEFORE_RENAME"):
    _pause_before_rename(float(os.environ["FTUSEG_TEST_PAUSE_BEFORE_RENAME"]),
                         os.environ.get("FTUSEG_TEST_PAUSE_MATCH", "*"))
if os.environ.get("FTUSEG_TEST_DDP_CHECKSUMS"):
    _ddp_checksums(os.environ["FTUSEG_TEST_DDP_CHECKSUMS"])
