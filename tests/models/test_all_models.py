"""Every registered network, one test module (like timm's tests/test_models.py).

For each name of ``senet.list_models()``: forward at a small input and backward, every parameter gets
a gradient and every SE parameter a non-zero one (an SE block registered but never called would
not: moskomule's SE-Inception-v3); the network pickles and its copy computes the same outputs; and an
SE network has exactly the parameters of its plain twin plus Eq. 5's (``2 C^2 / r`` weights per SE
block, as ``C // r`` hidden units) and the FC biases. Random weights: nothing is downloaded.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import senet
from senet import SEBlock
from senet.models import model_info

NAMES = senet.list_models()
# Deep or wide networks: every family keeps members in the default run.
SLOW = {
    "inception_resnet_v2",
    "se_inception_resnet_v2",
    "resnet101",
    "resnet110",
    "resnet152",
    "resnet164",
    "resnext101_32x4d",
    "se_resnet101",
    "se_resnet110",
    "se_resnet152",
    "se_resnext101_32x4d",
    "se_shake_even29_2x4x64d",
    "senet154",
    "shake_even29_2x4x64d",
    "shake_shake26_2x96d",
    "se_shake_shake26_2x96d",
    "wrn16_8",
}


def _param(name: str) -> object:
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


def _input(name: str) -> torch.Tensor:
    info = model_info(name)
    if info.dataset == "cifar":
        size = 32
    else:  # the smallest cheap size that reaches the last stage; Inception-ResNet-v2 pads 'VALID'
        size = 75 if "inception_resnet" in name else 64
    return torch.randn(2, 3, size, size)


def _se_blocks(model: nn.Module) -> list[SEBlock]:
    return [m for m in model.modules() if isinstance(m, SEBlock)]


def _wake(model: nn.Module) -> None:
    """Make every SE parameter able to receive a gradient: BN scales and shifts away from their
    initial values (some families zero the last BN of a residual branch) and every SE hidden unit
    active (a CIFAR block of 16 channels has one hidden unit: a negative ReLU input would stop it)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            if isinstance(m, SEBlock) and m.fc1.bias is not None:
                m.fc1.weight.mul_(0.01)
                m.fc1.bias.fill_(1.0)


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_forward_backward_and_every_se_parameter_learns(name: str) -> None:
    model = senet.create_model(name, num_classes=7)
    _wake(model)
    x = _input(name)
    y = model(x)
    assert y.shape == (2, 7) and torch.isfinite(y).all()
    y.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    se = _se_blocks(model)
    assert bool(se) == model_info(name).se, "an SE network without SE blocks, or a plain one with them"
    dead = [
        f"{i}.{n}"
        for i, blk in enumerate(se)
        for n, p in blk.named_parameters()
        if not p.grad.abs().sum() > 0
    ]
    assert not dead, f"SE parameters with zero gradient: {dead[:5]}"


@pytest.mark.parametrize("name", [_param(n) for n in NAMES])
def test_pickles_and_the_copy_computes_the_same(name: str) -> None:
    model = senet.create_model(name, num_classes=7).eval()
    clone = pickle.loads(pickle.dumps(model)).eval()
    x = _input(name)[:1]
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
        # what a user replacing the classifier reads: num_features = channels of forward_features,
        # head_hidden_size = the width fc reads (VGG: 512 and 4096)
        assert model.forward_features(x).shape[1] == model.num_features
    assert model.fc.in_features == model.head_hidden_size
    assert clone.state_dict().keys() == model.state_dict().keys()


SE_NAMES = [n for n in NAMES if n.startswith("se_")]


@pytest.mark.parametrize("name", SE_NAMES)
@pytest.mark.parametrize("reduction", [16, 4])
def test_se_network_is_its_twin_plus_eq5(name: str, reduction: int) -> None:
    """The plain twin (``model_info(name).twin``) plus Eq. 5: each SE block of C channels adds
    2 * C * (C // r) weights and C // r + C biases (built on the meta device: no memory, any size)."""
    twin = model_info(name).twin
    assert twin and twin in NAMES and model_info(twin).twin == name
    with torch.device("meta"):
        se = senet.create_model(name, reduction=reduction)
        plain = senet.create_model(twin)
    blocks = _se_blocks(se)
    assert blocks
    eq5 = sum(2 * b.channels * max(1, b.channels // reduction) for b in blocks)
    biases = sum(max(1, b.channels // reduction) + b.channels for b in blocks)
    count = sum(p.numel() for p in se.parameters()) - sum(p.numel() for p in plain.parameters())
    assert count == eq5 + biases
    assert all(b.hidden == max(1, b.channels // reduction) for b in blocks)  # C // r, no rounding to 8
