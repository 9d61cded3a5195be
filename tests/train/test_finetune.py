"""`senet train --weights`: fine-tuning a saved SE-ResNet-20 onto a 5-class subset of real CIFAR-10."""

from __future__ import annotations

import pytest
import torch
import yaml

from senet.train import load_checkpoint, load_config, train


def _five_classes(cifar10_jpeg, root):
    """train/ and test/ with the first 5 classes of the CIFAR-10 copy (links)."""
    classes = sorted(p.name for p in (cifar10_jpeg / "train").iterdir())[:5]
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for c in classes:
            (root / split / c).symlink_to(cifar10_jpeg / split / c)
    return root, classes


def _run(data, out, **extra):
    fields = dict(model="se_resnet20", train_subset=20, val_subset=20, batch_size=20, epochs=1, lr=0.05)
    fields.update(warmup_epochs=0.2, threads=1, cache_dir="", seed=3, data_dir=str(data), out=str(out))
    return train(load_config("cifar10-quick", overrides={**fields, **extra}))


def test_finetune_from_saved_weights_starts_above_random_init(trained_cifar, cifar10_jpeg, tmp_path, capsys):
    data, classes = _five_classes(cifar10_jpeg, tmp_path / "five")
    tuned = _run(data, tmp_path / "tuned", weights=str(trained_cifar), freeze_backbone_epochs=1)
    out = capsys.readouterr().out
    assert f"starts from the weights {trained_cifar}" in out
    notices = [line for line in out.splitlines() if "notice:" in line]
    assert len(notices) == 1 and "re-initialised for 5 classes" in notices[0]
    scratch = _run(data, tmp_path / "scratch", freeze_backbone_epochs=1)
    # Same data, seed and schedule, classifier-only epoch: features learnt on CIFAR-10 beat random ones.
    assert tuned.final["val_top1"] >= scratch.final["val_top1"] + 5
    assert tuned.final["val_loss"] < scratch.final["val_loss"]

    # The backbone did not move in the frozen epoch (weights and BN statistics), the classifier did.
    before, after = load_checkpoint(trained_cifar)["model"], load_checkpoint(tmp_path / "tuned/last.pt")
    for k, v in after["model"].items():
        if k.startswith("fc."):
            assert v.shape[0] == 5
        elif not k.endswith("num_batches_tracked"):
            assert torch.equal(v, before[k]), k
    assert after["classes"] == classes
    assert yaml.safe_load((tmp_path / "tuned/config.yaml").read_text())["weights"] == str(trained_cifar)


def test_weights_field_in_a_recipe_file_and_missing_weights(cifar10_jpeg, tmp_path):
    recipe = "base: cifar10-quick\nweights: runs/base/best.pt\nfreeze_backbone_epochs: 2\n"
    (tmp_path / "ft.yaml").write_text(recipe)
    cfg = load_config(config=tmp_path / "ft.yaml")
    assert (cfg.weights, cfg.freeze_backbone_epochs, cfg.lr) == ("runs/base/best.pt", 2, 0.2)
    with pytest.raises(ValueError, match="freeze_backbone_epochs=20 must be in"):
        load_config("cifar10-quick", overrides={"freeze_backbone_epochs": 20})
    data, _ = _five_classes(cifar10_jpeg, tmp_path / "five")
    with pytest.raises(FileNotFoundError, match="nope.pt' does not exist"):
        _run(data, tmp_path / "bad", weights=str(tmp_path / "nope.pt"))
