"""Output paths that cannot be written (missing, below a file, read-only) and a real process's exit:
one clear stderr line, exit status 2, a traceback only with --debug."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import (
    assert_one_error,
    edit_row,
    run_cli,
    train_argv,
)

from ftuseg.cli import main


# ------------------------------------------------------------------------------------------ output paths
def test_output_in_missing_folder(capsys, data, tmp_path):
    out = tmp_path / "no" / "such" / "sub.csv"
    code, _, err = run_cli(capsys, "baseline", data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "does not exist")


def test_output_below_a_file(capsys, data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "sub.csv"
    code, _, err = run_cli(capsys, "baseline", data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "is not a folder")


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write to, root included (tests run as root in CI).

    Non-root: chmod 555. Root ignores permission bits, so make the folder immutable with ``chattr +i``
    (needs CAP_LINUX_IMMUTABLE); failing that, /sys, which the kernel refuses new files in for anyone.
    """
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    if Path("/sys").is_dir():
        yield Path("/sys")
        return
    pytest.skip("cannot make a read-only folder here")


def test_output_in_read_only_folder(capsys, data, read_only_dir):
    out = read_only_dir / "sub.csv"
    code, _, err = run_cli(capsys, "baseline", data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "not writable")
    assert not out.exists()


def test_evaluate_report_in_read_only_folder(capsys, data, tmp_path, read_only_dir):
    sub = tmp_path / "sub.csv"
    assert main(["baseline", str(data), "--out", str(sub), "-q"]) == 0
    capsys.readouterr()
    out = read_only_dir / "dice.json"
    code, _, err = run_cli(capsys, "evaluate", sub, data / "test_solution.csv", "--json", out, "-q")
    assert_one_error(code, err, str(out), "not writable")


def test_train_into_read_only_folder(capsys, data, read_only_dir):
    out = read_only_dir / "run"
    code, _, err = run_cli(capsys, *train_argv(data, out))
    assert_one_error(code, err, str(out))


def test_predict_into_read_only_folder(capsys, data, tiny_run, read_only_dir):
    out = read_only_dir / "sub.csv"
    code, _, err = run_cli(capsys, "predict", tiny_run, data, "--out", out, "-q")
    assert_one_error(code, err, str(out), "not writable")


# ------------------------------------------------------------------------------- through a real process
def test_process_exit_has_no_traceback_and_debug_shows_one(data, tmp_path):
    """The installed entry point: one line and exit 2 normally; ``--debug`` shows the traceback."""
    edit_row(data / "test.csv", 0, pixel_size="abc")
    cmd = [sys.executable, "-m", "ftuseg", "baseline", str(data), "--out", str(tmp_path / "s.csv"), "-q"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "Traceback" not in res.stderr
    assert "column pixel_size: 'abc' must be a positive number" in res.stderr
    res = subprocess.run([sys.executable, "-m", "ftuseg", "--debug", *cmd[3:]], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode != 0 and "Traceback" in res.stderr and "FtusegError" in res.stderr
