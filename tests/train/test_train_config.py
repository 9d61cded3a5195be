"""Config validation, recipes against the paper's numbers, schedules against torch's schedulers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import senet
from senet.train import Config, LRFactor, list_recipes, load_config


def test_unknown_field_names_the_close_match():
    with pytest.raises(ValueError, match=r"unknown field 'epoch'; did you mean epochs"):
        load_config("cifar10-quick", overrides={"epoch": 3})


def test_wrong_type_and_bad_value_are_one_line_errors():
    with pytest.raises(ValueError, match=r"field 'epochs' must be int, got 'abc'"):
        load_config("cifar10-quick", overrides={"epochs": "abc"})
    with pytest.raises(ValueError, match=r"field 'nesterov' must be bool"):
        load_config("cifar10-quick", overrides={"nesterov": 3})
    with pytest.raises(ValueError, match=r"schedule='poly': expected one of"):
        load_config("cifar10-quick", overrides={"schedule": "poly"})
    with pytest.raises(ValueError, match=r"lr=-1.0 must be > 0"):
        load_config("cifar10-quick", overrides={"lr": -1})
    with pytest.raises(ValueError, match=r"unknown recipe 'cifar10-quik'. Did you mean: cifar10-quick"):
        load_config("cifar10-quik")


def test_lossless_coercions():
    cfg = load_config("cifar10-quick", overrides={"lr": 1, "epochs": 4.0, "milestones": "2,3", "model": 123})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.epochs == 4 and cfg.milestones == [2, 3]
    assert cfg.model == "123"


def test_every_recipe_loads_and_names_a_registered_model():
    recipes = list_recipes()
    assert {"imagenet", "senet154", "cifar10-quick", "cifar-resnet110", "cifar-wrn16-8"} <= set(recipes)
    for name, desc in recipes.items():
        cfg = load_config(name)
        assert desc and cfg.recipe == name
        senet.models.model_info(cfg.model)


def test_imagenet_recipe_is_the_papers():
    # SENET.md "ImageNet training recipe": SGD 0.9, batch 1024, lr 0.6 /10 every 30 epochs, 100 epochs.
    cfg = load_config("imagenet")
    assert (cfg.momentum, cfg.batch_size, cfg.lr, cfg.step_size, cfg.gamma, cfg.epochs) == (
        0.9,
        1024,
        0.6,
        30,
        0.1,
        100,
    )
    assert (
        cfg.weight_decay == 1e-4
        and cfg.image_size == 224
        and cfg.eval_resize == 256
        and cfg.augment == "release"  # SENET.md "Official release": rotation, crop, flip, pixel jitter
        and cfg.sampling == "balanced"  # Sec. 6.1
    )
    assert load_config("imagenet", overrides={"batch_size": 256}).scaled_lr == pytest.approx(
        0.15
    )  # linear scaling
    s154 = load_config("senet154")
    assert s154.label_smoothing == 0.1 and s154.batch_size == 2048 and s154.scaled_lr == pytest.approx(1.0)
    assert senet.create_model("senet154").pre_logits.p == 0.2
    assert load_config("cifar-shake-shake26").cutout == 16
    mobile = load_config("mobile")  # Table 3: batch 256, lr 0.1 /10 on plateaus, wd 4e-5, ~400 epochs
    m = mobile
    assert (m.batch_size, m.lr, m.schedule, m.gamma, m.weight_decay, m.epochs) == (
        256,
        0.1,
        "plateau",
        0.1,
        4e-5,
        400,
    )
    ablation = load_config("ablation")  # Sec. 7: no FC biases, plateau schedule, label smoothing
    assert ablation.model_kwargs == {"bias": False} and ablation.schedule == "plateau"
    assert ablation.label_smoothing > 0
    irv2 = load_config("inception-resnet-v2")  # 299 crops from a 352 resize
    assert (irv2.model, irv2.image_size, irv2.eval_crop, irv2.eval_resize) == (
        "se_inception_resnet_v2",
        299,
        299,
        352,
    )
    assert load_config("places365").sampling == "balanced"
    assert load_config("cifar100-shake-even29").model == "se_shake_even29_2x4x64d"


def test_config_round_trips_through_a_yaml_file(tmp_path):
    import yaml

    cfg = load_config("cifar10-quick", overrides={"epochs": 3, "data_dir": "x"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(config=path) == cfg


def _torch_lrs(sched_fn, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = sched_fn(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedules_match_torch_schedulers():
    epochs, spe = 12, 5
    lrs = torch.optim.lr_scheduler
    step = LRFactor("step", epochs, spe, step_size=3, gamma=0.1)
    ref = _torch_lrs(lambda o: lrs.StepLR(o, 3, 0.1), epochs)  # stepped once per epoch
    assert [step(e * spe) for e in range(epochs)] == pytest.approx(ref)
    assert step(3 * spe - 1) == pytest.approx(1.0)
    multi = LRFactor("multistep", epochs, spe, milestones=[4, 9], gamma=0.2)
    ref = _torch_lrs(lambda o: lrs.MultiStepLR(o, [4, 9], 0.2), epochs)
    assert [multi(e * spe) for e in range(epochs)] == pytest.approx(ref)
    cos = LRFactor("cosine", epochs, spe)
    ref = _torch_lrs(lambda o: lrs.CosineAnnealingLR(o, epochs * spe), epochs * spe)
    assert [cos(s) for s in range(epochs * spe)] == pytest.approx(ref, abs=1e-9)
    one = LRFactor("onecycle", 10, 10, warmup_epochs=2, warmup_factor=0.1)
    assert one(0) == pytest.approx(0.1) and one(10) == pytest.approx(0.55) and one(20) == pytest.approx(1.0)
    assert one(60) == pytest.approx(0.5) and one(100) == pytest.approx(0.0)
    const = LRFactor(
        "multistep", 5, 10, milestones=[2], warmup="constant", warmup_epochs=1, warmup_factor=0.1
    )
    assert [const(s) for s in (0, 9, 10, 19, 20)] == pytest.approx([0.1, 0.1, 1.0, 1.0, 0.1])
    assert not math.isnan(LRFactor("cosine", 1, 1)(1))


def test_config_defaults_are_valid():
    assert Config().to_dict()["model"] == "se_resnet20"


def test_parts_hold_the_fields_and_flat_names_read_them():
    cfg = load_config("imagenet", overrides={"epochs": 3, "data_dir": "x"})
    assert (cfg.data.image_size, cfg.data.data_dir, cfg.optim.lr, cfg.runtime.eval_batch_size) == (
        224,
        "x",
        0.6,
        250,
    )
    assert (cfg.image_size, cfg.epochs, cfg.eval_batch_size) == (224, 3, 250)  # flat names read the parts
    assert cfg.scaled_lr == cfg.optim.scaled_lr == 0.6
    names = [set(dataclasses.fields(p)) for p in (cfg.data, cfg.optim, cfg.runtime)]
    assert sum(map(len, names)) + 5 == len(Config.fields()) == len(cfg.to_dict())  # unique over the parts
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 0.1  # changes go through replace(), which checks them
    assert cfg.replace(lr=0.3).optim.lr == 0.3 and cfg.optim.lr == 0.6


def test_nested_yaml_loads_like_flat(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text(
        "base: cifar10-quick\nmodel: resnet20\ndata: {image_size: 32, cutout: 8}\n"
        "optim:\n  lr: 0.05\n  schedule: cosine\nruntime: {seed: 3}\n"
    )
    flat = load_config(
        "cifar10-quick", overrides=dict(model="resnet20", cutout=8, lr=0.05, schedule="cosine", seed=3)
    )
    cfg = load_config(config=nested)
    assert cfg.to_dict() == {**flat.to_dict(), "recipe": "", "description": ""}
    assert cfg.data.cutout == 8 and cfg.optim.warmup_epochs == 3  # the base's fields survive the part's
    assert load_config("cifar10-quick", overrides={"optim": {"lr": 0.3}}).lr == 0.3
    assert Config.from_dict({"data": {"image-size": 64}}).data.image_size == 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data: {lr: 0.1}", r"unknown field 'data.lr'; lr is a field of optim"),
        ("data: {imag_size: 32}", r"unknown field 'data.imag_size'; did you mean image_size"),
        ("optim: {model: resnet20}", r"unknown field 'optim.model'; model is a field of the top level"),
        ("cutout: 4\ndata: {cutout: 8}", r"field 'cutout' is given twice"),
        ("optim: {lr: abc}", r"field 'lr' must be float, got 'abc'"),
        ("optim: {lr: -1}", r"config: lr=-1.0 must be > 0"),
        ("dat: {image_size: 32}", r"unknown field 'dat'; did you mean data"),
    ],
)
def test_nested_yaml_mistakes_are_one_line_errors(tmp_path, text, expected):
    path = tmp_path / "c.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=expected):
        load_config("cifar10-quick", path)


def test_config_yaml_is_flat_grouped_by_part_and_loads_back(tmp_path):
    import yaml

    cfg = load_config("cifar10-quick", overrides={"data_dir": "x", "milestones": [2, 3]})
    text = cfg.to_yaml()
    assert yaml.safe_load(text) == cfg.to_dict()  # flat: what older readers read
    at = {line.split(":")[0]: i for i, line in enumerate(text.splitlines())}  # keys are unique
    assert (
        at["model"] < at["# data"] < at["data_dir"] < at["# optim"] < at["lr"] < at["# runtime"] < at["seed"]
    )
    (tmp_path / "config.yaml").write_text(text)
    assert load_config(config=tmp_path / "config.yaml") == cfg


def test_an_old_onecycle_config_loads_as_the_triangle_schedule(tmp_path):
    """Run folders and docs/results/*/config.yaml written before the rename say ``schedule: onecycle``."""
    import yaml

    old = {**load_config("cifar10-quick").to_dict(), "schedule": "onecycle", "epochs": 10, "warmup_epochs": 2}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = load_config(config=path)
    assert cfg.schedule == "triangle" and cfg.to_dict()["schedule"] == "triangle"
    # its lr curve, step by step, is torch's linear warm-up then linear decay to 0 (an independent reference)
    steps = 7
    factor = LRFactor.from_config(cfg.optim, steps)
    warm = 2 * steps
    ref = _torch_lrs(
        lambda o: torch.optim.lr_scheduler.SequentialLR(
            o,
            [
                torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=warm),
                torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=8 * steps),
            ],
            milestones=[warm],
        ),
        10 * steps,
    )
    assert [factor(s) for s in range(10 * steps)] == pytest.approx(ref, abs=1e-9)
    assert [LRFactor.from_config(cfg, steps)(s) for s in range(10 * steps)] == [
        factor(s) for s in range(10 * steps)
    ]
    # ... and an old run folder is still that run: resumable, and the same experiment for `senet compare`
    from senet.train.compare import RunSpec, _check_same_experiment
    from senet.train.engine import _config_differences

    assert _config_differences(old, cfg) == []
    _check_same_experiment(RunSpec(cfg.model, cfg.seed, tmp_path, cfg))
    with pytest.raises(
        ValueError, match=r"schedule='poly': expected one of step, multistep, cosine, triangle"
    ):
        LRFactor("poly", 10, 10)
