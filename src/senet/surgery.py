"""``insert_se``: add SE blocks to an existing network, in place, where the paper puts them.

The places are found from the network's *structure*, not from a list of known classes: the model is
traced with ``torch.fx`` (in eval mode; modules of ``torch.nn`` and SE blocks are leaves) and its
graph is searched for

* **residual units** -- a sum of two tensors from different paths out of one fork, one of them a
  branch that ends (after layer scales, dropout or drop-path) in a convolution or a normalisation,
  possibly followed by a layout permutation. ``integration`` (Fig. 5) says where SE goes:
  ``"standard"`` on the branch after its last layer, before the sum (Fig. 3; ConvNeXt: after the
  permutation back to (N, C, H, W), before the layer scale); ``"pre"`` on the branch input;
  ``"post"`` after the sum and the non-linearity that follows it, if any; ``"identity"`` on the
  shortcut, in parallel to the branch;
* **plain chains** -- a convolution, a normalisation and a non-linearity in a row, each read only by
  the next: SE after the non-linearity (Sec. 3.3, VGG-like networks; DenseNet, which concatenates,
  is one too. The paper's Inception rule, "after the concatenation", is not searched for).

``where="auto"`` uses the residual units of a network that has any, else its plain chains (so a
ResNet's stem gets no SE, as in the paper's SE-ResNets); ``"plain"`` skips chains inside residual
units. Each block's width and rank (``dims=1`` for (N, C, L), 3 for video) are read from the graph.
Networks that already have squeeze-and-excitation (found by structure: EfficientNet, RegNetY,
MobileNetV3, ...) are refused by ``where="auto"``. A submodule that ``torch.fx`` cannot trace is kept
whole (no SE inside) and named in a warning -- senet's CIFAR zero-padding shortcuts, for instance.

The module that a block must follow is replaced by a container that calls it and then the block
(:class:`BNThenSE`, :class:`ActThenSE`, :class:`ModuleThenSE`; :class:`SEThenModule` for "pre"); an
output made by a shared module or a function (a sum) is recalibrated by wrapping the innermost module
that returns it (for "post", the whole unit). Only the identity shortcut of "identity" has no module
to wrap: the unit containing it is rewritten as a ``torch.fx.GraphModule`` (same class name and
parameter names, plus an ``se`` child) unless its code depends on the train/eval mode. SE blocks
are ordinary submodules, so they survive ``copy.deepcopy``, ``pickle``, ``torch.compile`` and ONNX.

State-dict keys after insertion (ResNet-50 shown; ``bn2`` for a BasicBlock)::

    layer1.0.bn3.weight        -> layer1.0.bn3.bn.weight  (likewise the other BN keys)
    (new)                         layer1.0.bn3.se.fc1.weight, .fc1.bias, .fc2.weight, .fc2.bias
    VGG: features.2 (a ReLU, no state)  ->  features.2.se.fc1.weight, ... (conv/BN keys unchanged)
    other wrapped modules:  <name>.<key>  ->  <name>.module.<key>, new <name>.se.*
    integration="identity" on an identity shortcut:  new layer1.0.se.*, other keys unchanged

A checkpoint without SE (e.g. torchvision's pretrained weights) still loads, the containers rename
its keys: ``load_state_dict(plain, strict=False)`` reports exactly the SE parameters as missing.
``init="identity"`` makes each new block the exact identity (zero ``fc2``, gate ``2*sigmoid``), so a
trained network keeps its outputs until fine-tuning moves them; the default is He-normal.

Stages (``stages=``): modules ``layer1`` .. ``layer4`` (torchvision, timm and senet ResNets) are
conv2_x .. conv5_x = 2 .. 5 as in the paper; elsewhere a plain chain's stage is 1 + the number of
pooling layers before it (VGG: 1 .. 5).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import operator
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from .models.common import check_input
from .se import ScaledSigmoid, SEBlock, SEConfig, se_random_stream

__all__ = ["ActThenSE", "BNThenSE", "ModuleThenSE", "SEThenModule", "insert_se"]

M = TypeVar("M", bound=nn.Module)
Where = str | Sequence[str] | Callable[[str, nn.Module], bool]

WHERE = ("auto", "residual", "plain")

_RESNET_STAGE = re.compile(r"(?:^|\.)layer([1-4])\.")


# --------------------------------------------------------------------------------------------------
# Containers that put an SE block after (or before) an existing module


class _WithSE(nn.Module):
    """One existing module (attribute ``inner``) followed by an SE block (``se``).

    State dicts written before the insertion load too: ``<prefix>key`` is read as
    ``<prefix><inner>.key`` when the new key is absent.
    """

    inner: ClassVar[str] = "module"

    def __init__(self, module: nn.Module, se: SEBlock) -> None:
        super().__init__()
        setattr(self, self.inner, module)  # registered first: it runs first
        self.se = se

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # ``load_state_dict`` hands every module its own copy of the dict, so renaming here leaves
        # the caller's checkpoint untouched.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            rest = key[len(prefix) :]
            new = f"{prefix}{self.inner}.{rest}"
            if rest.split(".", 1)[0] not in (self.inner, "se") and new not in state_dict:
                state_dict[new] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.se(getattr(self, self.inner)(*args, **kwargs))


class BNThenSE(_WithSE):
    """The last normalisation of a residual branch followed by SE: ``se(bn(x))`` (Fig. 3).

    It takes the place of ``bn3`` in a torchvision Bottleneck (``bn2`` in a BasicBlock), so the
    block's unchanged ``forward`` recalibrates the residual branch before adding the identity.
    """

    inner = "bn"


class ActThenSE(_WithSE):
    """A non-linearity followed by SE: ``se(act(x))`` (plain networks, Sec. 3.3)."""

    inner = "act"


class ModuleThenSE(_WithSE):
    """Any module followed by SE: ``se(module(...))`` -- e.g. a whole residual unit for
    ``integration="post"`` (Fig. 5c), or the last layer of a branch that is not a batch norm."""


class SEThenModule(_WithSE):
    """SE on the input of a module: ``module(se(x), ...)`` -- the first layer of a residual branch
    for ``integration="pre"`` (Fig. 5b), so that the shortcut still sees the unscaled input."""

    def __init__(self, module: nn.Module, se: SEBlock) -> None:
        nn.Module.__init__(self)
        self.se = se  # registered first: it runs first
        self.module = module

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.module(self.se(x), *args, **kwargs)


# --------------------------------------------------------------------------------------------------
# Tracing


class _Tracer(fx.Tracer):
    """``torch.fx`` tracer that records, for every module call, how often the module is called, the
    nodes it was given and the node it returned (the graph keeps no module boundaries otherwise).

    Leaves: modules whose ``forward`` is torch.nn's own (so subclasses of ``nn.Conv3d`` such as
    torchvision's ``Conv3DSimple`` stay one convolution), SE blocks, and the modules in ``opaque``.
    """

    def __init__(self, opaque: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.opaque = opaque
        self.calls: Counter[str] = Counter()
        self.inputs: dict[str, list[Any]] = {}
        self.returned_by: dict[fx.Node, list[str]] = {}
        self.stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, SEBlock) or module_qualified_name in self.opaque:
            return True
        if isinstance(m, nn.Sequential | nn.ModuleList | nn.ModuleDict):
            return False
        forward = getattr(type(m).forward, "__module__", "") or ""
        return forward.startswith("torch.nn.") or super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        path = self.path_of_module(m)
        self.calls[path] += 1
        self.inputs.setdefault(path, [a.node if isinstance(a, fx.Proxy) else a for a in args])
        self.stack.append(path)
        out = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        if isinstance(out, fx.Proxy):
            self.returned_by.setdefault(out.node, []).append(path)
        return out


def _skip_check(*args: Any, **kwargs: Any) -> None:
    """Stands in for ``check_input`` while tracing: it tests a real tensor, not an ``fx.Proxy``."""


@contextmanager
def _tracing(model: nn.Module, train: bool) -> Iterator[None]:
    """Eval (or train) mode, and senet's input check skipped, for the duration of a trace."""
    modes = [(m, m.training) for m in model.modules()]
    owners = {sys.modules.get(c.__module__) for m in model.modules() for c in type(m).__mro__} - {None}
    patched = [(mod, k, v) for mod in owners for k, v in vars(mod).items() if v is check_input]
    for mod, name, _ in patched:
        setattr(mod, name, _skip_check)
    model.train(train)
    try:
        yield
    finally:
        for mod, name, value in patched:
            setattr(mod, name, value)
        for m, training in modes:
            m.training = training


def _trace(
    model: nn.Module,
    train: bool = False,
    opaque: frozenset[str] = frozenset(),
    notes: list[str] | None = None,
) -> tuple[fx.Graph, _Tracer]:
    """Trace ``model``. A submodule that stops the trace is kept whole (a leaf; a note says so) and
    the trace starts again; when the model's own forward stops it, a one-line ``ValueError`` names
    the module that did."""
    while True:
        tracer = _Tracer(opaque)
        with _tracing(model, train):
            try:
                return tracer.trace(model), tracer
            except Exception as e:  # noqa: BLE001 - any error of user code stops the trace
                path = tracer.stack[-1] if tracer.stack else ""
                reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"
                if not path or path in opaque:
                    where = f"module {path!r}" if path else f"the forward of {type(model).__name__} itself"
                    raise ValueError(
                        f"insert_se cannot trace {type(model).__name__} with torch.fx: {where} stopped it "
                        f"({reason}); pass where=[module name patterns] to place SE by hand"
                    ) from e
                opaque = opaque | {path}
                if notes is not None:
                    notes.append(
                        f"{path} ({type(model.get_submodule(path)).__name__}) was kept whole, torch.fx "
                        f"cannot trace it ({reason})"
                    )


# --------------------------------------------------------------------------------------------------
# What the nodes are. Operator tables hold both functions (``call_function`` targets) and method
# names (``call_method`` targets): a function never equals a name, so one membership test serves.

_ADD = (operator.add, operator.iadd, torch.add, "add", "add_")
_MUL = (operator.mul, operator.imul, torch.mul, "mul", "mul_")
_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_NORM_OPS = (F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm)
_ACTS = tuple(  # Hardtanh: ReLU6
    getattr(nn, name)
    for name in "ReLU Hardtanh LeakyReLU PReLU ELU SELU CELU GELU SiLU Mish Hardswish Softplus".split()
)
_ACT_FUNCTIONS = "relu relu_ relu6 leaky_relu elu selu gelu silu mish hardswish hardtanh".split()
_ACT_OPS = (*(getattr(F, name) for name in _ACT_FUNCTIONS), torch.relu, torch.relu_, "relu", "relu_")
_GATES = (nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, ScaledSigmoid)
_GATE_OPS = (torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.tanh, "sigmoid", "sigmoid_", "tanh")
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_POOLS = tuple(getattr(nn, f"{kind}Pool{d}d") for kind in ("Max", "Avg") for d in (1, 2, 3))
_POOL_OPS = tuple(getattr(F, f"{kind}_pool{d}d") for kind in ("max", "avg") for d in (1, 2, 3))
_GLOBAL_POOLS = tuple(getattr(nn, f"Adaptive{kind}Pool{d}d") for kind in ("Avg", "Max") for d in (1, 2, 3))
_SAME_CHANNELS = (*_ACTS, *_GATES, *_PASS_MODULES, *_POOLS, *_GLOBAL_POOLS, nn.Upsample, nn.LayerNorm)
_TENSOR_OPS = ("contiguous", "clone", "to", "float", "type_as")
_RESHAPES = ("permute", "reshape", "view", "flatten", torch.permute, torch.reshape, torch.flatten)
_ELEMENTWISE = (*_ADD, *_MUL, operator.sub, operator.truediv, torch.sub, torch.div)
# operations that keep the channels of their (first feature-map) input where they are
_SAME_CHANNEL_OPS = (*_TENSOR_OPS, *_ELEMENTWISE, *_ACT_OPS, *_NORM_OPS, *_GATE_OPS)
# what a node may be (see _Graph.isa): kind -> (module classes, functions and method names)
_KINDS: dict[str, tuple[tuple[type, ...], tuple[Any, ...]]] = {
    "add": ((), _ADD),
    "mul": ((), _MUL),
    "act": (_ACTS, _ACT_OPS),
    "gate": (_GATES, _GATE_OPS),
    "norm": (_NORMS, _NORM_OPS),
    "pool": (_POOLS, _POOL_OPS),
    "layout": ((), (*_TENSOR_OPS, *_RESHAPES)),
    "mean": ((), (torch.mean, torch.amax, "mean", "amax")),
}
_DROP_PATH_NAMES = ("stochastic_depth", "drop_path")


@dataclass(frozen=True)
class _Fmap:
    """What is known of a node's value: ``channels`` on axis 1 (or last when ``last``), ``rank``."""

    channels: int
    rank: int | None
    last: bool = False


class _Graph:
    """The traced graph with what the search needs: module of each node, ancestors as bit sets,
    channel counts."""

    def __init__(self, model: nn.Module, graph: fx.Graph, tracer: _Tracer) -> None:
        self.model = model
        self.tracer = tracer
        self.nodes = list(graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self.modules = dict(model.named_modules())
        self.anc: dict[fx.Node, int] = {}
        self.feature = 0  # bits of the nodes computed from the input
        self.conv_bits = 0
        self.pool_bits = 0
        self.info: dict[fx.Node, _Fmap | None] = {}
        for n in self.nodes:
            bits = self.anc[n] = functools.reduce(operator.or_, map(self.incl, n.all_input_nodes), 0)
            if n.op == "placeholder" or bits & self.feature:
                self.feature |= self.bit(n)
            if isinstance(self.module(n), _ConvNd):
                self.conv_bits |= self.bit(n)
            if self.isa(n, "pool"):
                self.pool_bits |= self.bit(n)
            self.info[n] = self._infer(n)

    def bit(self, n: fx.Node) -> int:
        return 1 << self.index[n]

    def incl(self, n: fx.Node) -> int:
        return self.anc[n] | self.bit(n)

    def module(self, n: fx.Node) -> nn.Module | None:
        return self.modules.get(n.target) if n.op == "call_module" else None  # type: ignore[arg-type]

    def is_feature(self, n: Any) -> bool:
        return isinstance(n, fx.Node) and bool(self.feature & self.bit(n))

    def first_input(self, n: fx.Node) -> fx.Node | None:
        args = [*n.args, *n.kwargs.values()]
        return next((a for a in args if self.is_feature(a)), None)

    # -- classification -------------------------------------------------------------------------

    def isa(self, n: fx.Node, kind: str) -> bool:
        """``n`` calls a module, function or method of ``kind`` (a key of ``_KINDS``)."""
        modules, ops = _KINDS[kind]
        return isinstance(self.module(n), modules) or (
            n.op in ("call_function", "call_method") and n.target in ops
        )

    def is_fc(self, n: fx.Node) -> bool:
        m = self.module(n)
        return isinstance(m, nn.Linear) or (isinstance(m, _ConvNd) and all(k == 1 for k in m.kernel_size))

    def is_global_pool(self, n: fx.Node) -> bool:
        m = self.module(n)
        if isinstance(m, _GLOBAL_POOLS):
            size = m.output_size if isinstance(m.output_size, tuple) else (m.output_size,)
            return all(s == 1 for s in size)
        if n.op == "call_function" and n.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            return n.args[1:2] in ((1,), ((1, 1),))
        return self.isa(n, "mean")

    def is_drop_path(self, n: fx.Node) -> bool:
        return n.op == "call_function" and getattr(n.target, "__name__", "") in _DROP_PATH_NAMES

    def passthrough(self, n: fx.Node) -> fx.Node | None:
        """The input of ``n`` if ``n`` leaves channels where they are and mixes nothing: dropout,
        identity, drop-path, or a layer scale (a product with a parameter)."""
        if isinstance(self.module(n), _PASS_MODULES) or self.is_drop_path(n):
            return self.first_input(n)
        if self.isa(n, "mul"):
            feats = [a for a in n.args[:2] if self.is_feature(a)]
            return feats[0] if len(feats) == 1 else None
        return None

    def skip_back(self, n: fx.Node) -> fx.Node:
        while (prev := self.passthrough(n)) is not None:
            n = prev
        return n

    # -- channels -------------------------------------------------------------------------------

    def _infer(self, n: fx.Node) -> _Fmap | None:
        m = self.module(n)
        src = self.first_input(n)
        inp = self.info.get(src) if src is not None else None
        if isinstance(m, _ConvNd):
            return _Fmap(m.out_channels, len(m.kernel_size) + 2)
        if isinstance(m, (_BatchNorm, _InstanceNorm)):
            rank = {nn.BatchNorm2d: 4, nn.BatchNorm3d: 5, nn.InstanceNorm2d: 4, nn.InstanceNorm3d: 5}
            return _Fmap(m.num_features, inp.rank if inp else rank.get(type(m)))
        if isinstance(m, nn.GroupNorm):
            return _Fmap(m.num_channels, inp.rank if inp else None)
        if isinstance(m, nn.Linear):
            return _Fmap(m.out_features, inp.rank, last=True) if inp and inp.last else None
        if isinstance(m, _SAME_CHANNELS):
            return inp
        if inp is None or n.op not in ("call_function", "call_method"):
            return None
        if n.target in ("permute", torch.permute):  # channels to the end and back (ConvNeXt)
            dims = tuple(
                n.args[1] if len(n.args) == 2 and isinstance(n.args[1], (list, tuple)) else n.args[1:]
            )
            r = len(dims)
            if inp.rank not in (None, r):
                return None
            if not inp.last and dims == (0, *range(2, r), 1):
                return _Fmap(inp.channels, r, last=True)
            if inp.last and dims == (0, r - 1, *range(1, r - 1)):
                return _Fmap(inp.channels, r)
            return None
        return inp if n.target in _SAME_CHANNEL_OPS or self.is_drop_path(n) else None

    def fmap(self, n: fx.Node) -> _Fmap | None:
        """Channels and rank of ``n`` if it is a feature map with channels on axis 1."""
        info = self.info.get(n)
        return info if info is not None and not info.last and info.rank in (3, 4, 5) else None

    # -- where the module boundaries are --------------------------------------------------------

    def scope(self, n: fx.Node) -> str:
        """The module whose own code made ``n`` ('' for the root)."""
        paths = [v[0] for v in n.meta.get("nn_module_stack", {}).values()]
        if n.op == "call_module":
            paths = paths[:-1]
        return paths[-1] if paths else ""

    def in_scope(self, n: fx.Node, scope: str) -> bool:
        return scope == "" or any(v[0] == scope for v in n.meta.get("nn_module_stack", {}).values())

    def path_of(self, n: fx.Node) -> str:
        """A module name to show for node ``n``."""
        return n.target if n.op == "call_module" else self.scope(n) or n.name  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# The search


@dataclass
class _Unit:
    """A residual unit: ``add = branch + shortcut``, both from ``fork``."""

    add: fx.Node
    branch: fx.Node
    shortcut: fx.Node
    fork: fx.Node
    end: fx.Node  # the last node of the branch before layer scale / drop-path
    region: int  # bits of the nodes of the branch and of the shortcut


@dataclass
class _Place:
    """SE on the output of ``node`` (``before`` None) or on the edge ``node -> before`` (argument
    ``arg`` of ``before``)."""

    node: fx.Node
    channels: int
    dims: int
    stage: int
    what: str  # for messages
    before: fx.Node | None = None
    arg: int = 0


def _residual_units(g: _Graph, notes: list[str]) -> list[_Unit]:
    units = []
    for n in g.nodes:
        if not g.isa(n, "add"):
            continue
        ops = [a for a in n.args[:2] if g.is_feature(a)]
        if len(ops) != 2 or ops[0] is ops[1]:
            continue
        a, b = ops
        if g.anc[a] & g.bit(b):
            branch, shortcut, fork = a, b, b
        elif g.anc[b] & g.bit(a):
            branch, shortcut, fork = b, a, a
        else:
            common = g.incl(a) & g.incl(b) & g.feature
            if not common:
                continue
            fork = g.nodes[common.bit_length() - 1]  # the latest common ancestor
            convs = [(g.incl(x) & ~g.incl(fork) & g.conv_bits).bit_count() for x in (a, b)]
            if convs[0] == convs[1]:
                if convs[0]:
                    notes.append(f"the sum {n.name} in {g.path_of(n) or 'the model'}: no branch is longer")
                continue
            branch, shortcut = (a, b) if convs[0] > convs[1] else (b, a)
        region = g.incl(branch) & ~g.incl(fork)
        if not region & g.conv_bits:
            continue
        end = last = g.skip_back(branch)
        while g.isa(last, "layout") and g.is_feature(last.args[0]):
            last = last.args[0]  # type: ignore[assignment]
        if not (
            g.bit(end) & region and (g.isa(last, "norm") or isinstance(g.module(last), (_ConvNd, nn.Linear)))
        ):
            continue
        region |= g.incl(shortcut) & ~g.incl(fork)
        units.append(_Unit(n, branch, shortcut, fork, end, region))
    return units


def _existing_se(g: _Graph) -> list[str]:
    """Modules holding a squeeze-and-excitation: ``x * gate(fc(act(fc(pool(x)))))``."""
    found = []
    for n in g.nodes:
        if isinstance(g.module(n), SEBlock):
            found.append(str(n.target))
        elif g.isa(n, "mul") and len(n.args) >= 2:
            a, b = n.args[:2]
            if _is_excitation(g, a, b) or _is_excitation(g, b, a):
                found.append(g.scope(n) or n.name)
    return found


def _is_excitation(g: _Graph, gate: Any, x: Any) -> bool:
    """``gate`` is ``gate(fc(act(fc(pool(x)))))``, maybe with layout changes, dropout and a norm."""
    if not (isinstance(gate, fx.Node) and isinstance(x, fx.Node) and g.isa(gate, "gate")):
        return False
    act = functools.partial(g.isa, kind="act")
    steps = [g.is_fc, act, g.is_fc, g.is_global_pool]  # walking back from the gate
    h = g.first_input(gate)
    while h is not None and steps:
        skip = g.isa(h, "layout") or isinstance(g.module(h), _PASS_MODULES)
        if not (skip or (steps[0] is act and g.isa(h, "norm"))) and not steps.pop(0)(h):
            return False
        h = g.first_input(h)
    return not steps and h is x


def _plain_chains(g: _Graph, skip: int) -> list[fx.Node]:
    """Non-linearities that follow a normalisation that follows a convolution (each read only by the
    next), outside the nodes in ``skip``."""
    acts = []
    for n in g.nodes:
        if not g.isa(n, "act") or g.bit(n) & skip:
            continue
        norm = g.first_input(n)
        if norm is None or not g.isa(norm, "norm") or len(norm.users) != 1:
            continue
        conv = g.first_input(norm)
        if conv is None or not isinstance(g.module(conv), _ConvNd) or len(conv.users) != 1:
            continue
        acts.append(n)
    return acts


def _stage(g: _Graph, n: fx.Node, path: str, plain: bool) -> int:
    match = _RESNET_STAGE.search(path + ".")
    if match:
        return int(match.group(1)) + 1
    return 1 + (g.anc[n] & g.pool_bits).bit_count() if plain else 0


def _place(
    g: _Graph,
    n: fx.Node,
    what: str,
    plain: bool,
    before: fx.Node | None = None,
    arg: int = 0,
    like: fx.Node | None = None,
) -> _Place | None:
    """SE on ``n`` (or on the edge ``n -> before``); ``like`` is a node of the same shape, asked
    when the graph does not tell the channels of ``n`` (the input of a unit that reads the model's
    input: a sum needs both operands of one shape)."""
    info = g.fmap(n) or (g.fmap(like) if like is not None else None)
    if info is None:
        return None
    path = g.path_of(before if before is not None else n)
    return _Place(n, info.channels, info.rank - 2, _stage(g, n, path, plain), what, before, arg)


def _find_places(g: _Graph, cfg: SEConfig, where: str, notes: list[str]) -> list[_Place]:
    units = _residual_units(g, notes)
    places: list[_Place | None] = []
    if units and where in ("auto", "residual"):
        for u in units:
            name = g.path_of(u.add) or "the model"
            if cfg.integration == "standard":
                places.append(_place(g, u.end, f"the residual branch of {name}", False))
            elif cfg.integration == "pre":
                first = [v for v in u.fork.users if g.bit(v) & g.incl(u.branch) & ~g.incl(u.fork)]
                if len(first) == 1:
                    idx = next((i for i, a in enumerate(first[0].args) if a is u.fork), 0)
                    places.append(_place(g, u.fork, f"the branch input of {name}", False, first[0], idx))
                else:
                    notes.append(f"{name}: the branch input is read {len(first)} times")
            elif cfg.integration == "post":
                users = list(u.add.users)
                out = users[0] if len(users) == 1 and g.isa(users[0], "act") else u.add
                places.append(_place(g, out, f"the output of {name}", False))
            else:  # identity: an identity shortcut is the edge fork -> sum
                edge = (u.add, list(u.add.args).index(u.fork)) if u.shortcut is u.fork else (None, 0)
                places.append(_place(g, u.shortcut, f"the shortcut of {name}", False, *edge, like=u.end))
    elif where == "residual":
        raise ValueError("insert_se(where='residual') found no residual unit in " + type(g.model).__name__)
    if where == "plain" or (where == "auto" and not units):
        if cfg.integration != "standard":
            raise ValueError(
                f"integration={cfg.integration!r} concerns residual units; the plain chains of "
                f"{type(g.model).__name__} take SE after their non-linearity (integration='standard')"
            )
        skip = functools.reduce(operator.or_, (u.region for u in units), 0)
        for act in _plain_chains(g, skip):
            places.append(_place(g, act, f"the conv-norm-act chain ending in {g.path_of(act)}", True))
    missing = [p for p in places if p is None]
    if missing:
        notes.append(f"{len(missing)} places whose channels could not be told from the graph")
    return [p for p in places if p is not None]


# --------------------------------------------------------------------------------------------------
# Putting the blocks in


@dataclass
class _Wrap:
    path: str
    before: bool
    place: _Place


def _wrapper(module: nn.Module, before: bool) -> type[_WithSE]:
    if before:
        return SEThenModule
    if isinstance(module, _BatchNorm):
        return BNThenSE
    if isinstance(module, _ACTS):
        return ActThenSE
    return ModuleThenSE


def _resolve(g: _Graph, place: _Place) -> _Wrap | None:
    """The module to wrap for ``place``, or None when no module sits there alone."""
    calls = g.tracer.calls
    if place.before is None:  # the module called at ``node``, else the innermost one returning it
        n = place.node
        paths = [str(n.target)] if n.op == "call_module" else []
        path = next((p for p in [*paths, *g.tracer.returned_by.get(n, [])] if p and calls[p] == 1), None)
        return _Wrap(path, False, place) if path else None
    c = place.before  # SE before module ``c``: it must read ``place.node`` as its first argument only
    read_once = c.args[:1] == (place.node,) and [*c.args, *c.kwargs.values()].count(place.node) == 1
    if c.op == "call_module" and calls[c.target] == 1 and read_once:  # type: ignore[index]
        return _Wrap(str(c.target), True, place)
    return None


def _new_block(cfg: SEConfig, place: _Place, like: torch.Tensor | None) -> SEBlock:
    se = cfg.block(place.channels, dims=place.dims)
    with se_random_stream():  # He-normal (fan-out) like init_weights, for every rank
        for fc in [se.fc1] if cfg.init == "identity" else [se.fc1, se.fc2]:  # identity: fc2 stays 0
            nn.init.kaiming_normal_(fc.weight, mode="fan_out", nonlinearity="relu")
            if fc.bias is not None:
                nn.init.zeros_(fc.bias)
    if like is not None:
        se.to(device=like.device, dtype=like.dtype)
    return se


def _like(model: nn.Module, g: _Graph | None, module: nn.Module, node: fx.Node | None) -> torch.Tensor | None:
    """A tensor whose device and dtype the new block takes: the wrapped module's, else upstream's."""
    for _ in range(22):  # the module, then up to 21 nodes upstream
        t = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
        if t is not None:
            return t
        node = g.first_input(node) if g is not None and node is not None else None
        if node is None:
            break
        module = g.module(node) or nn.Module()
    return next((t for t in model.parameters() if t.is_floating_point()), None)


def _set(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent), name, new)


def _rewrite(
    model: nn.Module, g: _Graph, scope: str, places: list[_Place], cfg: SEConfig
) -> nn.Module | None:
    """Insert SE nodes into the code of module ``scope`` (a ``GraphModule`` in its place).

    Returns the new module, or None when the module cannot be rewritten faithfully.
    """
    module = model.get_submodule(scope)
    prefix = f"{scope}." if scope else ""
    opaque = frozenset(p[len(prefix) :] for p in g.tracer.opaque if p.startswith(prefix))
    try:
        graph, _ = _trace(module, opaque=opaque)
        train_graph, _ = _trace(module, train=True, opaque=opaque)
    except ValueError:
        return None
    if fx.GraphModule(module, graph).code != fx.GraphModule(module, train_graph).code:
        return None  # the code depends on the mode: a traced copy would freeze one of them
    # the nodes of ``scope`` in the model's graph -> the same nodes in the module's own graph
    ops = ("call_module", "call_function", "call_method")
    outer = [n for n in g.nodes if n.op in ops and g.in_scope(n, scope)]
    inner = [n for n in graph.nodes if n.op in ops]
    if len(outer) != len(inner) or any(
        a.op != b.op or a.target != (f"{prefix}{b.target}" if b.op == "call_module" else b.target)
        for a, b in zip(outer, inner, strict=True)
    ):
        return None
    mapping = dict(zip(outer, inner, strict=True))
    holders = [n for n in graph.nodes if n.op == "placeholder"]
    args = g.tracer.inputs.get(scope, []) if scope else [n for n in g.nodes if n.op == "placeholder"]
    for arg, holder in zip(args, holders, strict=False):
        if isinstance(arg, fx.Node):
            mapping.setdefault(arg, holder)
    gm = fx.GraphModule(module, graph, class_name=type(module).__name__)
    taken = set(dict(module.named_children())) | set(vars(module))
    for k, place in enumerate(places):
        src = mapping.get(place.node)
        dst = mapping.get(place.before) if place.before is not None else None
        if src is None or (place.before is not None and dst is None):
            return None
        name = next(s for s in ("se" if i == 0 else f"se_{i}" for i in range(k, 10_000)) if s not in taken)
        taken.add(name)
        gm.add_submodule(name, _new_block(cfg, place, _like(model, g, nn.Module(), place.node)))
        with gm.graph.inserting_before(dst) if dst is not None else gm.graph.inserting_after(src):
            se_node = gm.graph.call_module(name, (src,))
        if dst is not None:
            dst.update_arg(place.arg, se_node)
        else:
            src.replace_all_uses_with(se_node, delete_user_cb=lambda user, new=se_node: user is not new)
    gm.recompile()
    for key, value in vars(module).items():  # plain attributes that other code may read
        if key[0] != "_" and key not in vars(gm) and not isinstance(value, nn.Module | torch.Tensor):
            setattr(gm, key, value)
    gm.train(module.training)
    return gm


def _apply(
    model: nn.Module, g: _Graph | None, wraps: list[_Wrap], places: list[_Place], cfg: SEConfig
) -> tuple[nn.Module, list[str]]:
    """Add SE at ``wraps`` and ``places``: rewrite the modules whose code holds a place with no module
    to wrap (deepest first), then wrap. Returns the model (a new one when the root was rewritten)
    and the places that got no SE."""
    scopes: dict[str, list[_Place]] = {}
    for place in places:
        w = _resolve(g, place)  # type: ignore[arg-type]
        if w is not None:
            wraps.append(w)
        else:
            node = place.before if place.before is not None else place.node
            scopes.setdefault(g.scope(node), []).append(place)  # type: ignore[union-attr]
    seen: set[tuple[str, bool]] = set()
    wraps = [w for w in wraps if (w.path, w.before) not in seen and not seen.add((w.path, w.before))]
    result = model
    skipped = []
    for scope, held in sorted(scopes.items(), key=lambda kv: -kv[0].count(".") - bool(kv[0])):
        new = None
        if not scope or g.tracer.calls[scope] == 1:  # type: ignore[union-attr]
            new = _rewrite(model, g, scope, held, cfg)  # type: ignore[arg-type]
        if new is None:
            skipped += [p.what for p in held]
        elif scope:
            _set(model, scope, new)
        else:
            result = new
    for w in sorted(wraps, key=lambda w: -w.path.count(".")):  # inner modules first
        old = result.get_submodule(w.path)
        new = _wrapper(old, w.before)(old, _new_block(cfg, w.place, _like(result, g, old, w.place.node)))
        new.train(old.training)
        _set(result, w.path, new)
    return result, skipped


# --------------------------------------------------------------------------------------------------
# The entry point


def _se_config(reduction: int, se_options: dict[str, Any]) -> SEConfig:
    fields = SEConfig.fields()
    for key in se_options:
        if key not in fields:
            close = difflib.get_close_matches(key, (*fields, "where"), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"insert_se got an unknown SE option {key!r}{hint}; options: where, {', '.join(fields)}"
            )
    return SEConfig(reduction=reduction, **se_options)


def _selector(where: Where) -> Callable[[str, nn.Module], bool] | None:
    if callable(where):
        return where
    if isinstance(where, str):
        if where in WHERE:
            return None
        where = [where]
    patterns = list(where)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(
            f"insert_se where={where!r}: use one of {WHERE}, a list of module-name patterns or a callable"
        )
    return lambda name, module: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _module_fmap(path: str, m: nn.Module) -> _Fmap:
    """Channels and rank of the output of ``m`` read from its attributes (the graph did not tell)."""
    channels = getattr(m, "out_channels", None) or getattr(m, "num_features", None)
    channels = channels or getattr(m, "num_channels", None)
    rank = {1: 3, 2: 4, 3: 5}.get(len(getattr(m, "kernel_size", ())), None)
    rank = rank or {nn.BatchNorm1d: 3, nn.BatchNorm2d: 4, nn.BatchNorm3d: 5}.get(type(m))
    if not isinstance(channels, int) or rank is None:
        raise ValueError(
            f"insert_se cannot tell the channels of {path!r} ({type(m).__name__}): select a "
            "convolution, a normalisation or a module whose output is a (N, C, ...) feature map"
        )
    return _Fmap(channels, rank)


def _explicit_places(
    model: nn.Module, select: Callable[[str, nn.Module], bool]
) -> tuple[list[_Wrap], _Graph | None]:
    """SE after every module ``select`` picks; channels from the graph, else from the module."""
    chosen = [(path, m) for path, m in model.named_modules() if path and select(path, m)]
    if not chosen:
        raise ValueError(f"insert_se: where= selects no module of {type(model).__name__}")
    try:
        g = _Graph(model, *_trace(model, notes=[]))
    except ValueError:
        g = None
    out = []
    for path, m in chosen:
        node = None
        if g is not None:
            if g.tracer.calls[path] > 1:
                raise ValueError(
                    f"insert_se: module {path!r} is called {g.tracer.calls[path]} times; SE needs one"
                )
            node = next((n for n in g.nodes if n.op == "call_module" and n.target == path), None)
            node = node or next((n for n, paths in g.tracer.returned_by.items() if path in paths), None)
        info = (g.fmap(node) if node is not None else None) or _module_fmap(path, m)  # type: ignore[union-attr]
        stage = _stage(g, node, path, True) if node is not None else 0  # type: ignore[arg-type]
        out.append(_Wrap(path, False, _Place(node, info.channels, info.rank - 2, stage, path)))  # type: ignore[arg-type,operator]
    return out, g


def _auto_places(
    model: nn.Module, cfg: SEConfig, where: str, notes: list[str]
) -> tuple[list[_Place], _Graph]:
    """The places the structure of ``model`` gives."""
    name = type(model).__name__
    g = _Graph(model, *_trace(model, notes=notes))
    existing = _existing_se(g)
    if existing:
        raise ValueError(
            f"{name} already has squeeze-and-excitation in {len(existing)} places (e.g. "
            f"{existing[0]!r}); insert_se adds SE to networks without it (pass where=[module name "
            "patterns] to add more)"
        )
    places = _find_places(g, cfg, where, notes)
    if not places:
        raise ValueError(
            f"insert_se found no place for SE in {name}: no residual unit (a branch ending in a "
            "convolution or normalisation, summed with a shortcut) and no conv -> norm -> "
            "activation chain"
            + (f" ({'; '.join(notes)})" if notes else "")
            + "; pass where=[module name patterns] to choose places yourself"
        )
    return places, g


def insert_se(model: M, where: Where = "auto", reduction: int = 16, **se_options: Any) -> M:
    """Add SE blocks to ``model`` in place, where its structure says the paper puts them; return it.

    Args:
        model: any ``nn.Module`` that ``torch.fx`` can trace (torchvision, timm, senet's plain
            networks, your own), without SE blocks.
        where: ``"auto"`` (residual units if there are any, else conv-norm-act chains),
            ``"residual"``, ``"plain"``, a list of module-name glob patterns or a callable
            ``(name, module) -> bool``: SE after each module selected (full control; ``integration``
            must stay "standard"). See the module docstring.
        reduction: ratio r; each block has ``C // r`` hidden units (paper default 16).
        **se_options: options of :class:`~senet.se.SEConfig`: block options (``squeeze``,
            ``excitation``, ``bias``, ``divisor``, ``init``), ``integration`` (Fig. 5: "standard",
            "pre", "post", "identity") and ``stages``. ``init="identity"`` keeps the outputs of a
            trained model.

    The new blocks take the device and dtype of the layer they follow and its train/eval mode.
    The model is changed in place and returned; only when its own forward must be rewritten
    (``integration="identity"`` on a shortcut in the root's code) a new ``GraphModule`` is returned.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(
            "insert_se takes an nn.Module such as torchvision.models.resnet50(), "
            f"got {type(model).__name__}; for senet's own networks use senet.create_model('se_...')"
        )
    if where in ("after_block", "3x3") and se_options.get("position") is None:
        raise ValueError(f"insert_se: where={where!r} looks like a position; use position={where!r}")
    cfg = _se_config(reduction, se_options)
    select = _selector(where)
    name = type(model).__name__
    present = sum(isinstance(m, SEBlock) for m in model.modules())
    if present:
        raise ValueError(
            f"{name} already has {present} SE blocks (was insert_se applied before?); "
            "insert_se adds SE to a network without it"
        )
    cfg.check_supported(
        f"insert_se on {name}", () if cfg.stages is None else cfg.stages, position=("after_block",)
    )
    notes: list[str] = []
    g: _Graph | None
    wraps: list[_Wrap] = []
    places: list[_Place] = []
    if select is None:
        places, g = _auto_places(model, cfg, str(where), notes)
    elif cfg.integration != "standard":
        raise ValueError(
            "insert_se: an explicit where= puts SE after the modules selected; "
            f"integration={cfg.integration!r} needs where='auto'"
        )
    else:
        wraps, g = _explicit_places(model, select)
    if cfg.stages is not None:
        stages = {p.stage for p in [*(w.place for w in wraps), *places]}
        if 0 in stages:
            raise ValueError(
                f"insert_se cannot number the stages of {name} (no layer1..layer4 modules); "
                "leave stages=None to add SE everywhere, or pass where=[module name patterns]"
            )
        cfg.check_supported(f"insert_se on {name}", stages)
        wraps = [w for w in wraps if cfg.in_stage(w.place.stage)]
        places = [p for p in places if cfg.in_stage(p.stage)]
    result, skipped = _apply(model, g, wraps, places, cfg)
    lost = [f"no SE on {s} (no module to wrap, and its code could not be rewritten)" for s in skipped]
    if not any(isinstance(m, SEBlock) for m in result.modules()):
        raise ValueError(f"insert_se added no SE block to {name}: {'; '.join([*lost, *notes])}")
    if lost or notes:
        warnings.warn(f"insert_se on {name}: {'; '.join([*lost, *notes])}", stacklevel=2)
    return result  # type: ignore[return-value]
