"""Inference-time speed-ups that leave the function unchanged: BN folding and channels-last.

:func:`fuse_for_inference` folds every BatchNorm2d that directly follows a convolution into that
convolution (``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``, computed
in float64) and replaces the BN by ``nn.Identity``. The pairs are found by *data flow*, not by
names: one forward pass on a small example input records which BN reads the output of which
convolution, and a pair is folded only when

* the convolution and the BN each run exactly once,
* the BN's input is the very tensor the convolution returned, and
* nothing else reads that tensor (a torch-function mode counts every op that consumes it).

This covers every layout of the package alike (``ConvBNAct`` sequentials, the ``conv1``/``bn1``
pairs of the residual blocks, shortcuts whose BN sits in another module than their convolution)
and leaves alone what cannot be folded exactly: the BNs of pre-activation networks that follow a
summation or a ReLU, and BNs in training mode or without running statistics.

Channels-last: on CPU, oneDNN convolutions on NCHW tensors reorder every input to a blocked layout
on each call; in NHWC they do not. ``channels_last=None`` picks the measured default of
:func:`prefers_channels_last` (see docs/performance.md for the figures).

Prepacking: an eager ``F.conv2d`` on CPU also reorders the *weight* on every call, a large part of
a convolution's time at batch 1 (ResNet-50 reads 100 MB of weights a pass). :class:`PrepackedConv2d`
keeps a reordered copy (remade when the weight changes) for oneDNN's convolution -- the op
``torch.compile`` uses for frozen CPU graphs -- and is an ordinary ``nn.Conv2d`` wherever that op
does not apply (another device or dtype, autocast, autograd, tracing or compiling).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

__all__ = ["PrepackedConv2d", "conv_bn_pairs", "fold_bn", "fuse_for_inference", "prefers_channels_last"]


def prefers_channels_last(device: torch.device | str) -> bool:
    """Whether ``fuse_for_inference`` converts to channels-last by default on ``device``: on CPU
    (faster at batch 1 and 16, ``benchmarks/bench_inference.py``, docs/performance.md), not elsewhere
    (not measured; pass ``channels_last=True`` to opt in)."""
    return torch.device(device).type == "cpu"


def _example_input(model: nn.Module) -> torch.Tensor:
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    in_chans = int(getattr(model, "in_chans", 3))
    size = int(getattr(model, "min_input_size", 224))
    return torch.randn(2, in_chans, size, size, device=device, dtype=dtype)


class _ConsumerCount(TorchFunctionMode):
    """Counts, per watched tensor, the tensor-producing ops that read it outside a BN forward."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, torch.Tensor] = {}
        self.uses: Counter[int] = Counter()
        self.in_bn = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.in_bn and any(isinstance(t, torch.Tensor) for t in tree_leaves(out)):
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor) and id(t) in self.watched and self.watched[id(t)] is t:
                    self.uses[id(t)] += 1
        return out


def conv_bn_pairs(model: nn.Module, example_input: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """``(conv_name, bn_name)`` of every BatchNorm2d that can be folded into the conv feeding it.

    Runs one forward pass in eval mode on ``example_input`` (default: two random images of the
    model's ``in_chans`` x ``min_input_size``) and follows the data flow (see the module docstring).
    """
    return _trace(model, example_input)[0]


def _trace(model: nn.Module, example_input: torch.Tensor | None) -> tuple[list[tuple[str, str]], list[str]]:
    """The foldable ``(conv_name, bn_name)`` pairs and the names of the convolutions that ran as
    modules (SE's FC layers run as matrix products), from one forward pass."""
    x = _example_input(model) if example_input is None else example_input
    names = {id(m): n for n, m in model.named_modules()}
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    calls: Counter[int] = Counter()
    produced_by: dict[int, nn.Module] = {}
    fed_by: dict[int, tuple[nn.Module, int]] = {}
    mode = _ConsumerCount()

    def conv_hook(m: nn.Module, inp: Any, out: Any) -> None:
        calls[id(m)] += 1
        if isinstance(out, torch.Tensor):
            mode.watched[id(out)] = out
            produced_by[id(out)] = m

    def bn_pre(m: nn.Module, inp: tuple) -> None:
        calls[id(m)] += 1
        mode.in_bn += 1
        t = inp[0] if inp else None
        if isinstance(t, torch.Tensor) and mode.watched.get(id(t)) is t:
            fed_by[id(m)] = (produced_by[id(t)], id(t))

    def bn_post(m: nn.Module, inp: Any, out: Any) -> None:
        mode.in_bn -= 1

    handles = [c.register_forward_hook(conv_hook) for c in convs]
    handles += [b.register_forward_pre_hook(bn_pre) for b in bns]
    handles += [b.register_forward_hook(bn_post) for b in bns]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            model(x)
    except Exception as e:
        raise ValueError(
            f"could not run {type(model).__name__} on an example input of shape {tuple(x.shape)} to find "
            f"its conv-BN pairs ({type(e).__name__}: {e}); pass example_input= a batch the model accepts"
        ) from e
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    pairs = []
    for bn in bns:
        if id(bn) not in fed_by or bn.running_mean is None or bn.running_var is None:
            continue
        conv, tensor_id = fed_by[id(bn)]
        if calls[id(bn)] == 1 and calls[id(conv)] == 1 and mode.uses[tensor_id] == 0:
            pairs.append((names[id(conv)], names[id(bn)]))
    return pairs, [names[id(c)] for c in convs if calls[id(c)]]


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (its running statistics and affine parameters) into ``conv``, in place."""
    w = conv.weight.double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    shift = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter((w * scale.reshape(-1, 1, 1, 1)).to(dtype), conv.weight.requires_grad)
    conv.bias = nn.Parameter(shift.to(dtype), conv.weight.requires_grad)


class PrepackedConv2d(nn.Conv2d):
    """A Conv2d that, on CPU in float32 without autograd, convolves with a prepacked oneDNN weight.

    The outputs equal ``nn.Conv2d``'s on channels-last inputs (the same oneDNN kernel; the output is
    channels-last whatever the input's format). Build it with :meth:`from_conv`, which shares the
    original's parameters.
    """

    max_packed = 4  # input shapes whose packed weights are kept (oldest dropped first)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PrepackedConv2d:
        """A PrepackedConv2d with ``conv``'s hyper-parameters and the very same parameters."""
        hyper = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
        kwargs = {k: getattr(conv, k) for k in (*hyper, "padding_mode")}
        new = cls(**kwargs, bias=conv.bias is not None, device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new

    def _prepacked(self, x: torch.Tensor) -> bool:
        w = self.weight
        return (
            x.device.type == "cpu"
            and x.dtype == w.dtype == torch.float32
            and w.device.type == "cpu"
            and x.dim() == 4
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and not (torch.is_grad_enabled() and (w.requires_grad or x.requires_grad))
            and not torch.is_autocast_enabled("cpu")
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        )

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        # oneDNN picks the weight format for the input's shape: a weight packed for batch 16 runs
        # batch 1 slower than no packing at all, so each input shape gets its own packing. A cache
        # is never changed once stored, only replaced (one assignment): concurrent calls each see a
        # whole cache, never one another thread is emptying.
        w = self.weight
        version = (w.data_ptr(), w._version, id(w))
        same = self.__dict__.get("_packed_version") == version
        cache: dict[tuple[int, ...], torch.Tensor] = self.__dict__.get("_packed", {}) if same else {}
        shape = tuple(x.shape)
        packed = cache.get(shape)
        if packed is None:
            packed = torch.ops.mkldnn._reorder_convolution_weight(w.detach(), *self._geometry(), list(shape))
            kept = list(cache.items())[max(0, len(cache) + 1 - self.max_packed) :]  # oldest dropped
            self.__dict__.update(_packed=dict([*kept, (shape, packed)]), _packed_version=version)
        return packed

    def _geometry(self) -> tuple[list[int], list[int], list[int], int]:
        return list(self.padding), list(self.stride), list(self.dilation), self.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._prepacked(x):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.detach()
        weight = self._packed_weight(x)
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *self._geometry(), "none", [], "")

    def __getstate__(self) -> dict[str, Any]:
        # an opaque oneDNN tensor cannot be copied or pickled; it is remade on the next call
        state = self.__dict__.copy()
        state.pop("_packed", None)
        state.pop("_packed_version", None)
        return state


def _replace(model: nn.Module, target: nn.Module, new: nn.Module) -> None:
    for name, m in list(model.named_modules(remove_duplicate=False)):
        if m is target and name:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new)


def fuse_for_inference(
    model: nn.Module,
    *,
    channels_last: bool | None = None,
    prepack: bool = True,
    example_input: torch.Tensor | None = None,
    inplace: bool = False,
) -> nn.Module:
    """An eval-mode copy of ``model`` with every BN folded into its convolution.

    The outputs equal the unfused model's in eval mode up to float rounding (tests: 1e-4).
    For inference only: train the original, fuse after.

    Args:
        channels_last: convert weights to ``torch.channels_last``; ``None`` = the device's
            measured default (:func:`prefers_channels_last`: yes on CPU). Inputs need no
            conversion: the first convolution returns channels-last from there on.
        prepack: replace every convolution that runs as a module by a :class:`PrepackedConv2d`
            (same parameters; prepacked oneDNN weights on CPU, a plain Conv2d elsewhere).
        example_input: a batch the model accepts, for the one tracing pass (default: two
            random images of ``in_chans`` x ``min_input_size``).
        inplace: change ``model`` itself instead of a copy.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"fuse_for_inference needs an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    pairs, ran = _trace(model, example_input)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        fold_bn(conv, bn)
        _replace(model, bn, nn.Identity())
    p = next(model.parameters(), None)
    if channels_last is None:
        channels_last = prefers_channels_last(p.device if p is not None else "cpu")
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if prepack:
        for conv in map(model.get_submodule, ran):
            if type(conv) is nn.Conv2d:  # not a subclass, nor already prepacked
                _replace(model, conv, PrepackedConv2d.from_conv(conv))
    return model
