"""`senet report` reads real run folders (made by a short training here) and refuses other folders."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import yaml

import senet
from senet.analysis.report import read_run, report
from senet.cli import main


def _row(text: str, model: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("| ") and f"| {model} |" in ln)
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_reads_the_run_files(run20, tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    assert main(["report", str(run20), "--out", str(out)]) == 0
    text = out.read_text()
    cells = _row(text, "se_resnet20")
    header = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    row = dict(zip(header, cells, strict=True))
    metrics = [json.loads(ln) for ln in (run20 / "metrics.jsonl").read_text().splitlines()]
    config = yaml.safe_load((run20 / "config.yaml").read_text())
    assert row["recipe"] == config["recipe"] == "cifar10-quick"
    assert row["epochs"] == str(config["epochs"])
    assert row["data"] == "cifar10 (subset)"
    assert row["top-1 err % (best)"].startswith(f"{100 - metrics[-1]['val_top1']:.2f} (")
    assert row["top-5 err %"] == f"{100 - metrics[-1]['val_top5']:.2f}"
    assert row["paper top-1 err %"] == "-"  # the paper has no ResNet-20 row
    params = sum(p.numel() for p in senet.create_model("se_resnet20").parameters())
    assert row["params (M)"] == f"{params / 1e6:.3f}"
    assert float(row["GFLOPs"]) == pytest.approx(0.041, abs=0.001)  # ResNet-20: ~41M multiply-adds
    link = re.fullmatch(r"\[curves\]\((.+)\)", row["curves"]).group(1)
    assert (out.parent / link).resolve() == (run20 / "curves.png").resolve()
    assert "used a subset: 2 training images per class, 3 test images per class" in text


def test_report_json_and_paper_figure_of_table4(run110, capsys):
    assert main(["report", str(run110), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["model"] == "se_resnet110" and run["dataset"] == "cifar10" and run["finished"]
    assert run["paper_top1_err"] == 5.21  # Table 4: SE-ResNet-110 on CIFAR-10
    assert run["images_per_s"] > 0 and run["train_seconds"] > 0


def test_unfinished_run_is_marked(run20, tmp_path):
    # A copy of the run whose config asks for more epochs than the metrics hold (as a run killed early).
    copy = tmp_path / "killed"
    shutil.copytree(run20, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**cfg, "epochs": 5}))
    assert not read_run(copy).finished
    assert "stopped after 1 of 5 epochs" in report([copy])


@pytest.mark.parametrize("content", [None, "notes.txt", "config.yaml"])
def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys, content):
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    if content:
        (folder / content).write_text("model: se_resnet20\nepochs: 3\n")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"senet report: error: {folder} is not a `senet train` run folder (no ")
    assert "Traceback" not in err[0]


def test_missing_folder_is_refused(capsys):
    assert main(["report", "/nonexistent/run"]) == 2
    assert "run folder /nonexistent/run does not exist" in capsys.readouterr().err
