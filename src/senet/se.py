"""The Squeeze-and-Excitation block (paper Sec. 3) and every variant of its ablation study (Sec. 7).

One module serves every network of the package: the variants are arguments, not copies
(:class:`SEBlock`): squeeze by average or max pooling or none (NoSqueeze, Sec. 7.1, Table 11); an
excitation of two FC layers written as 1x1 convolutions with bias (as in the official release, so
state dicts look like it) and a sigmoid, tanh, ReLU (Table 12) or ``2*sigmoid`` gate; hidden width
``channels // reduction`` as in the paper, or rounded as timm does (``divisor=8``); 1-D, 2-D or 3-D
feature maps (audio, images, video: the squeeze averages over every spatial dimension, Eq. 2).

:class:`SEConfig` gathers these block options together with the network-level ones (where the block
sits: ``integration``, ``position``, ``stages``) so that every SE network takes the same knobs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

SQUEEZES = ("avg", "max", "none")
EXCITATIONS = ("sigmoid", "tanh", "relu", "sigmoid2x")
INTEGRATIONS = ("standard", "pre", "post", "identity")
POSITIONS = ("after_block", "3x3")
INITS = ("default", "identity")
DIMS = (1, 2, 3)
_SHAPES = {1: "L", 2: "H, W", 3: "T, H, W"}
_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}

__all__ = ["SEBlock", "SEConfig", "ScaledSigmoid", "se_random_stream", "se_width"]


def se_width(channels: int, reduction: int, divisor: int = 1) -> int:
    """Hidden width of the excitation: ``channels // reduction`` (at least 1), as in the paper; with
    ``divisor > 1`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), as timm and
    mmpretrain do."""
    if divisor <= 1:
        return max(1, channels // reduction)
    v = channels / reduction
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


@contextmanager
def se_random_stream() -> Iterator[None]:
    """Draw SE parameters from a random stream of their own (a forked CPU generator re-seeded from
    one draw of the global stream, which is then restored), so every layer an SE network shares with
    its plain twin gets the twin's initial weights for the same seed (``senet compare``)."""
    with torch.random.fork_rng(devices=[]):
        seed = int(torch.randint(0, 2**62, (1,), device="cpu").item())  # also inside torch.device("meta")
        torch.random.default_generator.manual_seed(seed ^ 0x5E5E5E5E)
        yield


class ScaledSigmoid(nn.Module):
    """``scale * sigmoid(x)``: with ``scale=2`` the gate is exactly 1 where the logit is 0."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.sigmoid(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


_GATES: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "sigmoid2x": ScaledSigmoid,  # 2 * sigmoid: exactly 1 at zero (init="identity")
}


def _choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"SE option {name}={value!r} is not one of {allowed}")


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: ``x * gate(fc2(relu(fc1(squeeze(x)))))`` (paper Eq. 2-4).

    Args:
        channels: channels C of the feature map it recalibrates.
        reduction: ratio r; the hidden width is ``C // r`` (Sec. 6.1 / Table 10 ablate 2..32).
        squeeze: ``"avg"`` (paper), ``"max"`` or ``"none"`` (NoSqueeze, Sec. 7.1).
        excitation: gate ``"sigmoid"`` (paper), ``"tanh"``, ``"relu"`` or ``"sigmoid2x"``.
        bias: biases in the two FC layers (the release has them; the ablation study drops them).
        divisor: round the hidden width as timm does (1 = the paper's ``C // r``).
        init: ``"identity"`` zero-initialises ``fc2`` and uses the ``2*sigmoid`` gate, so the block
            starts as the exact identity (for adding SE to an already trained network).
        dims: spatial dimensions of the feature maps: 1 (N, C, L), 2 (N, C, H, W; default) or
            3 (N, C, T, H, W). The squeeze averages (or maxes) over all of them.
    """

    dims: int = 2  # class default: blocks pickled before 1-D / 3-D support are 2-D

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        squeeze: str = "avg",
        excitation: str = "sigmoid",
        bias: bool = True,
        divisor: int = 1,
        init: str = "default",
        dims: int = 2,
    ) -> None:
        super().__init__()
        if dims not in DIMS:
            raise ValueError(f"SEBlock dims={dims!r} is not one of {DIMS} (1-D, 2-D or 3-D feature maps)")
        if channels < 1 or reduction < 1:
            raise ValueError(f"SEBlock needs channels >= 1 and reduction >= 1, got {channels}, {reduction}")
        _choice("squeeze", squeeze, SQUEEZES)
        _choice("excitation", excitation, EXCITATIONS)
        _choice("init", init, INITS)
        if init == "identity":
            if excitation not in ("sigmoid", "sigmoid2x"):
                raise ValueError("init='identity' needs the sigmoid gate (it becomes 2*sigmoid)")
            excitation = "sigmoid2x"
        self.channels = channels
        self.hidden = se_width(channels, reduction, divisor)
        self.squeeze_mode = squeeze
        self.dims = dims
        conv = _CONVS[dims]
        with se_random_stream():
            self.fc1 = conv(channels, self.hidden, 1, bias=bias)
            self.act = nn.ReLU(inplace=True)
            self.fc2 = conv(self.hidden, channels, 1, bias=bias)
        self.gate = _GATES[excitation]()
        if init == "identity":
            nn.init.zeros_(self.fc2.weight)
            if self.fc2.bias is not None:
                nn.init.zeros_(self.fc2.bias)

    @property
    def spatial(self) -> tuple[int, ...]:
        """The dimensions the squeeze reduces: ``(2,)``, ``(2, 3)`` or ``(2, 3, 4)``."""
        return tuple(range(2, 2 + self.dims))

    def expand(self, s: torch.Tensor) -> torch.Tensor:
        """Gates (N, C) as (N, C, 1, ...) with one singleton per spatial dimension."""
        return s[(slice(None), slice(None)) + (None,) * self.dims]

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values s (N, C, 1, 1) -- one 1 per spatial dimension -- or, for the NoSqueeze
        variant, a map of the input's shape."""
        if x.dim() != self.dims + 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"SEBlock(channels={self.channels}, dims={self.dims}) got an input of shape {list(x.shape)}: "
                f"it takes feature maps (N, {self.channels}, {_SHAPES[self.dims]}); build it with the "
                "channel count of the layer it follows and dims=1 (N, C, L), 2 (N, C, H, W) or "
                "3 (N, C, T, H, W)"
            )
        if self.squeeze_mode == "none":  # NoSqueeze: the 1x1 convolutions run over the whole map
            return self.gate(self.fc2(self.act(self.fc1(x))))
        z = x.mean(self.spatial) if self.squeeze_mode == "avg" else x.amax(self.spatial)
        return self.expand(self.excitation(z))

    def excitation(self, z: torch.Tensor) -> torch.Tensor:
        """The gates (N, C) of squeezed descriptors ``z`` (N, C), Eq. 3: the 1x1-convolution weights run
        as matrix products (oneDNN's convolution of a 1x1 map is up to 1000x slower for narrow SE layers,
        e.g. 16 -> 1 channels in CIFAR networks)."""
        h = self.act(F.linear(z, self.fc1.weight.flatten(1), self.fc1.bias))
        return self.gate(F.linear(h, self.fc2.weight.flatten(1), self.fc2.bias))

    def forward(self, x: torch.Tensor, *, inplace: bool = False) -> torch.Tensor:
        """``x * s`` (Eq. 4); ``inplace=True`` writes it into ``x`` (for a caller that owns ``x``, such as
        a residual unit scaling its branch output: on CPU a new feature map costs more than the
        product, docs/performance.md), unless autograd records the step or a forward hook sees ``x``.
        """
        s = self.excite(x)
        if (
            inplace
            and not self._input_observed()
            and not (torch.is_grad_enabled() and (x.requires_grad or s.requires_grad))
        ):
            return x.mul_(s)
        return x * s

    def scale_add_relu(
        self, x: torch.Tensor, shortcut: torch.Tensor, *, inplace: bool = True
    ) -> torch.Tensor:
        """``relu(x * s(x) + shortcut)``: the end of a post-activation SE residual unit (Fig. 3).

        When autograd records the step, this is one operation with a hand-written backward
        (:class:`_SEScaleAddReLU`: it saves ``x``, the gates and the output and computes the gradient
        of ``x`` in one pass; the generic chain made an SE-ResNet-56 step 1.24x its plain twin's on
        CPU, this 1.03-1.06x). Other cases -- no gradient, max/no squeeze, hooks on this block,
        tracing or compiling -- take the generic chain, in place where allowed (``inplace=False``:
        never into ``x``, which a hook on the module that produced it may hold).
        """
        if (
            torch.is_grad_enabled()
            and self.squeeze_mode == "avg"
            and x.requires_grad
            and not self._input_observed()
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        ):
            return _SEScaleAddReLU.apply(x, shortcut, self, *self.parameters())
        if not torch.is_grad_enabled() and not self._input_observed():
            # inference: x * s + shortcut written into x (the unit owns it), then ReLU: two passes
            s = self.excite(x)
            return (
                torch.addcmul(shortcut, x, s, out=x) if inplace else torch.addcmul(shortcut, x, s)
            ).relu_()
        out = self(x, inplace=inplace)
        out += shortcut
        return torch.relu_(out)

    def _input_observed(self) -> bool:
        return bool(self._forward_hooks or nn.modules.module._global_forward_hooks)

    def extra_repr(self) -> str:
        dims = f", dims={self.dims}" if self.dims != 2 else ""
        return f"channels={self.channels}, hidden={self.hidden}, squeeze={self.squeeze_mode!r}{dims}"


class _SEScaleAddReLU(torch.autograd.Function):
    """``relu(x * excitation(mean(x)) + shortcut)`` with a backward that reads each map once or twice.

    Forward: the squeeze, the excitation (a tiny graph on (N, C) recorded apart), ``addcmul`` and an
    in-place ReLU. Backward, with ``m`` the ReLU mask of the output: ``g = grad * m`` is the
    shortcut's gradient; ``g_s = sum_hw(g * x)`` goes back through the excitation graph to the SE
    parameters and to ``g_z``; the gradient of ``x`` is ``g * s + g_z / (H W)`` in one ``addcmul``
    (``H W`` being the number of positions: ``L`` or ``T H W`` for 1-D and 3-D blocks).
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, shortcut: torch.Tensor, se: SEBlock, *params: torch.Tensor
    ) -> torch.Tensor:
        with torch.enable_grad():
            z = x.detach().mean(se.spatial).requires_grad_()
            s = se.excitation(z)
        s4 = se.expand(s.detach()).to(x.dtype)
        out = torch.addcmul(shortcut, x, s4, out=torch.empty_like(x)).relu_()  # x's memory format
        ctx.save_for_backward(x, s4, out)
        ctx.graph = (z, s, params)
        ctx.spatial = se.spatial
        ctx.expand = se.expand
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, s4, out = ctx.saved_tensors
        z, s, params = ctx.graph
        g = torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=torch.empty_like(out))
        g_s = (g * x).sum(ctx.spatial, dtype=torch.promote_types(x.dtype, torch.float32)).to(s.dtype)
        wanted = [z, *(p for p in params if p.requires_grad)]
        grads = iter(torch.autograd.grad(s, wanted, g_s))
        g_z = next(grads)
        g_params = [next(grads) if p.requires_grad else None for p in params]
        hw = math.prod(x.shape[d] for d in ctx.spatial)
        g_x = torch.addcmul(ctx.expand(g_z / hw).to(x.dtype), g, s4, out=torch.empty_like(g))
        return (g_x, g, None, *g_params)


@dataclass(frozen=True)
class SEConfig:
    """Every SE knob of the paper, accepted by every SE network (``create_model(name, **knobs)``).

    Block options: see :class:`SEBlock`. Network options:

    * ``integration`` (Fig. 5): ``"standard"`` SE on the residual branch before the summation,
      ``"pre"`` SE on the input of the residual branch, ``"post"`` SE after the summation (and its
      ReLU), ``"identity"`` SE on the identity (shortcut) branch, in parallel to the residual branch;
    * ``position``: ``"after_block"`` (default) or ``"3x3"`` (SE_3x3, Sec. 7: SE right after the
      3x3 convolution of the bottleneck and its non-linearity);
    * ``stages``: which stages get SE (ImageNet ResNets: 2, 3, 4, 5 as conv2_x..conv5_x; each family
      documents its numbering); ``None`` = all.
    """

    reduction: int = 16
    squeeze: str = "avg"
    excitation: str = "sigmoid"
    bias: bool = True
    divisor: int = 1
    init: str = "default"
    integration: str = "standard"
    position: str = "after_block"
    stages: frozenset[int] | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"SE option reduction={self.reduction!r} must be a positive integer")
        _choice("squeeze", self.squeeze, SQUEEZES)
        _choice("excitation", self.excitation, EXCITATIONS)
        _choice("init", self.init, INITS)
        _choice("integration", self.integration, INTEGRATIONS)
        _choice("position", self.position, POSITIONS)
        if self.position == "3x3" and self.integration != "standard":
            raise ValueError("SE option position='3x3' works with integration='standard' only")
        if self.stages is not None:
            stages = (self.stages,) if isinstance(self.stages, int) else self.stages
            object.__setattr__(self, "stages", frozenset(int(s) for s in stages))

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        """Names of the options (the keywords ``create_model`` routes to SE)."""
        return tuple(cls.__dataclass_fields__)

    def block(self, channels: int, dims: int = 2) -> SEBlock:
        """An :class:`SEBlock` for ``channels`` with this configuration, for ``dims``-D feature maps
        (a property of the place the block goes, not a knob of the network, so not a field)."""
        block_options = ("reduction", "squeeze", "excitation", "bias", "divisor", "init")
        return SEBlock(channels, dims=dims, **{k: getattr(self, k) for k in block_options})

    def in_stage(self, stage: int) -> bool:
        """Whether stage ``stage`` gets SE blocks."""
        return self.stages is None or stage in self.stages

    def for_stage(self, stage: int) -> SEConfig | None:
        """This configuration for the blocks of stage ``stage``, or ``None`` when it gets no SE
        (``SE_Stage_k`` of Sec. 7); ``se and se.for_stage(k)`` is ``None`` for a plain network too."""
        return self if self.in_stage(stage) else None

    def check_supported(self, family: str, stages: Iterable[int], **supported: Iterable[str]) -> None:
        """Refuse options a family does not implement, naming what it does support.

        ``supported`` maps an option name (``integration``, ``position``) to the values the family
        accepts; ``stages`` are the stage numbers the family has.
        """
        for name, allowed in supported.items():
            allowed = tuple(allowed)
            if getattr(self, name) not in allowed:
                raise ValueError(f"{family} supports SE {name} in {allowed}, not {getattr(self, name)!r}")
        stages = set(stages)
        if self.stages is not None and not self.stages <= stages:
            raise ValueError(
                f"{family} has stages {sorted(stages)}; SE stages {sorted(self.stages)} do not exist"
            )

    def replace(self, **changes: Any) -> SEConfig:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["stages"] is not None:
            d["stages"] = sorted(d["stages"])
        return d
