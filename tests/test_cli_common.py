"""Shared CLI pieces (ftuseg.cli._common): global flags and the generated run-configuration flags."""

from __future__ import annotations

import dataclasses

import pytest

from ftuseg.cli import build_parser, main
from ftuseg.config import PRESETS, RunConfig


@pytest.mark.parametrize("argv", [["-q", "synth"], ["--quiet", "synth"], ["synth", "-q"], ["synth", "--quiet"]],
                         ids=["-q before", "--quiet before", "-q after", "--quiet after"])
def test_quiet_is_accepted_before_and_after_the_verb(capsys, tmp_path, argv):
    out = tmp_path / "synth"
    assert main([*argv, "--out", str(out), "--n-train", "2", "--n-test", "1"]) == 0
    assert (out / "train.csv").exists()
    assert capsys.readouterr().err == ""  # quiet: no progress or summary lines


def test_without_quiet_the_verb_reports(capsys, tmp_path):
    assert main(["synth", "--out", str(tmp_path / "s"), "--n-train", "2", "--n-test", "1"]) == 0
    assert capsys.readouterr().err.strip() != ""


def test_quiet_before_train_reaches_the_command():
    args = build_parser().parse_args(["-q", "train", "data", "--out", "run"])
    assert args.quiet is True and args.verb == "train"
    assert build_parser().parse_args(["train", "data", "--out", "run"]).quiet is False


def _config_actions() -> dict[str, object]:
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # noqa: SLF001 - argparse keeps sub-parsers here
    return {a.dest[4:]: a for a in train._actions if a.dest.startswith("cfg_")}


def test_every_config_field_documents_itself_in_one_place():
    """Each RunConfig field carries its help text (meaning and unit) in its own metadata."""
    missing = [f.name for f in dataclasses.fields(RunConfig) if not f.metadata.get("help")]
    assert missing == []


def test_train_help_shows_meaning_and_default_of_every_flag():
    actions = _config_actions()
    for f in dataclasses.fields(RunConfig):
        if f.name == "preset":
            continue
        text = actions[f.name].help
        assert text.startswith(f.metadata["help"].replace("%", "%%")), f.name
        assert "config field" not in text
    assert "default 0.5" in actions["fg_fraction"].help and "preset tiled: 0.2" in actions["fg_fraction"].help
    assert "µm/px" in actions["organ_mpp"].help and "preset tiled: kidney=3.0" in actions["organ_mpp"].help
    assert "default none" in actions["max_minutes"].help
    # a preset value shown in the help is the preset's real value
    assert f"preset tiled: {PRESETS['tiled']['epochs']}" in actions["epochs"].help


def test_help_renders(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--fg-fraction" in out and "share of training tiles centred on an FTU pixel" in out
