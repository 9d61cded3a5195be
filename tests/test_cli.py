"""The `senet` command line, run as a user runs it (a subprocess) and in-process."""

from __future__ import annotations

import json
import subprocess
import sys

from senet.cli import main


def test_list(capsys):
    assert main(["list", "se_resnext*"]) == 0
    assert capsys.readouterr().out.split() == ["se_resnext101_32x4d", "se_resnext50_32x4d"]


def test_profile_json_beside_the_paper(capsys):
    assert main(["profile", "se_resnet50", "resnet50", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["se_resnet50"]["params"] == 28_088_024
    assert rows["se_resnet50"]["paper_gmacs"] == 3.87
    assert abs(rows["resnet50"]["gmacs"] - 3.86) / 3.86 < 0.01


def test_profile_table_and_input_size(capsys):
    assert main(["profile", "resnet18", "--input-size", "112"]) == 0
    out = capsys.readouterr().out
    assert "112x112" in out and "resnet18" in out


def test_unknown_model_is_one_line_error():
    r = subprocess.run(
        [sys.executable, "-m", "senet", "profile", "se_resnet500"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert (
        r.stderr.strip().splitlines() == [r.stderr.strip()]
        and "Unknown model 'se_resnet500'. Did you mean" in r.stderr
    )
    assert "Traceback" not in r.stderr


def test_bugs_keep_their_traceback_and_user_errors_get_one_line(monkeypatch, capsys):
    """A KeyError of a dictionary lookup or a ValueError from inside torch is a bug: main() lets it
    propagate (traceback). A ValueError senet raises on purpose, or a missing file, is one line."""
    import importlib

    import pytest
    import torch

    profile = importlib.import_module("senet.analysis.profile")  # the module, not senet.analysis.profile()

    def lookup_bug(*args, **kwargs):
        return {}["params"]  # a bug in senet: no raise statement

    monkeypatch.setattr(profile, "compare", lookup_bug)
    with pytest.raises(KeyError):
        main(["profile", "se_resnet50"])

    def torch_bug(*args, **kwargs):
        return torch.zeros(2).view(3)  # a RuntimeError deep inside torch

    monkeypatch.setattr(profile, "compare", torch_bug)
    with pytest.raises(RuntimeError):
        main(["profile", "se_resnet50"])

    def value_bug(*args, **kwargs):
        return int("x")  # a ValueError raised by Python, not by senet

    monkeypatch.setattr(profile, "compare", value_bug)
    with pytest.raises(ValueError):
        main(["profile", "se_resnet50"])
    monkeypatch.undo()

    assert main(["profile", "no_such_net"]) == 2  # senet's own refusal: one line
    assert "error:" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", "/no/such/run.pt", "--data-dir", "/tmp"]) == 2
    assert "/no/such/run.pt" in capsys.readouterr().err
