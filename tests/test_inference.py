"""BN folding (``fuse_for_inference``), channels-last, torch.compile and bf16 autocast on CPU.

Fusion is checked against the unfused network in eval mode, with BN statistics and affine
parameters randomised (a fresh BN is the identity, which would fold trivially), and the BNs that
remain are checked by an independent forward-hook pass not to sit directly after a convolution.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import senet
from senet import inference
from senet.inference import PrepackedConv2d, conv_bn_pairs, fold_bn, fuse_for_inference
from senet.preprocessing import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD

CIFAR10, IMAGENET = (CIFAR10_MEAN, CIFAR10_STD), (IMAGENET_MEAN, IMAGENET_STD)

# One network per family module (the smallest SE one); test_every_family_is_covered keeps it complete.
FAMILY_NETWORKS = {
    "senet.models.resnet": "se_resnet18",
    "senet.models.cifar": "se_resnet20",
    "senet.models.inception": "se_bn_inception",
    "senet.models.vgg": "se_vgg16",
    "senet.models.mobilenet": "se_mobilenet",
    "senet.models.shufflenet": "se_shufflenet",
}
# Networks where some BNs cannot be folded: pre-activation units (BN after a sum) and the
# Shake-Shake shortcut (BN after a concatenation of two convolutions).
PARTLY_FOLDED = ["se_wrn16_8", "se_shake_shake26_2x96d"]


def _size(model: nn.Module) -> int:
    """32 for CIFAR networks; 64 (or the minimum) for ImageNet ones, so that the last stage's BNs
    see more than one position per image."""
    name = getattr(model, "model_name", None)
    if name is None or senet.model_info(name).dataset == "cifar":
        return 32
    return max(64, model.min_input_size)


def _input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    size = _size(model)
    return torch.randn(batch, model.in_chans, size, size)


def _bns_fed_by_a_conv(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of BatchNorm2d layers whose input is the output of a Conv2d (forward hooks)."""
    names = {id(m): n for n, m in model.named_modules()}
    outputs: dict[int, torch.Tensor] = {}
    found: list[str] = []
    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(lambda m, i, o: outputs.__setitem__(id(o), o)))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(
                m.register_forward_pre_hook(
                    lambda m, i: found.append(names[id(m)]) if outputs.get(id(i[0])) is i[0] else None
                )
            )
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return found


def test_every_family_is_covered():
    families = {senet.model_info(n).builder.__module__ for n in senet.list_models()}
    assert families <= set(FAMILY_NETWORKS), f"add a network of {families - set(FAMILY_NETWORKS)}"


@pytest.mark.parametrize("name", sorted(set(FAMILY_NETWORKS.values()) | set(PARTLY_FOLDED)))
def test_fusion_keeps_the_outputs_and_folds_every_bn_after_a_conv(measure_bn, name):
    model = senet.create_model(name)
    measure_bn(model, _size(model), batch=16)
    x = _input(model)
    fused = fuse_for_inference(model, channels_last=False)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    bns_before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    bns_after = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert _bns_fed_by_a_conv(fused, x) == []
    if name in PARTLY_FOLDED:
        assert 0 < bns_after < bns_before
    else:
        assert bns_before > 0 and bns_after == 0
    # the SE gates survive as modules (the excitation analysis hooks them)
    assert sum(isinstance(m, senet.SEBlock) for m in fused.modules()) == sum(
        isinstance(m, senet.SEBlock) for m in model.modules()
    )


def test_fusion_on_a_bottleneck_network_with_channels_last(measure_bn):
    model = measure_bn(senet.create_model("se_resnext50_32x4d", layout="torchvision"), 64, batch=16)
    x = torch.randn(2, 3, 64, 64)
    pairs = conv_bn_pairs(model)
    assert len(pairs) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 53
    assert ("layer1.0.downsample.0", "layer1.0.downsample.1") in pairs
    fused = fuse_for_inference(model)  # the CPU default: channels-last
    assert fused.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = fused(x)
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-4)
    assert out.shape == (2, 1000)


def test_fusion_copies_unless_inplace(measure_bn):
    model = measure_bn(senet.create_model("resnet18"), batch=16)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fused = fuse_for_inference(model, channels_last=False)
    assert fused is not model and isinstance(model.layer1[0].bn1, nn.BatchNorm2d)
    assert isinstance(fused.layer1[0].bn1, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    same = fuse_for_inference(model, channels_last=False, inplace=True)
    assert same is model and isinstance(model.layer1[0].bn1, nn.Identity)


def _packed_shapes(model: nn.Module) -> set[tuple[int, ...]]:
    return {
        shape
        for m in model.modules()
        if isinstance(m, PrepackedConv2d)
        for shape in m.__dict__.get("_packed", {})
    }


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_prepacked_convolutions_match_plain_ones_at_every_input_shape(measure_bn):
    """Grouped, strided and 1x1 convolutions; one packing per input shape, outputs as nn.Conv2d's."""
    model = measure_bn(senet.create_model("se_resnext50_32x4d", layout="torchvision"), 64, batch=16)
    packed = fuse_for_inference(model)
    plain = fuse_for_inference(model, prepack=False)
    assert sum(isinstance(m, PrepackedConv2d) for m in packed.modules()) == 53  # every conv but SE's FCs
    torch.manual_seed(0)
    with torch.inference_mode():
        for shape in [(1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 96, 80), (1, 3, 64, 64)]:
            x = torch.randn(shape)
            # oneDNN picks other kernels (and summation orders) for the prepacked weight: on AVX-512
            # the 50-layer logits differ by up to ~1.2e-5
            torch.testing.assert_close(packed(x), plain(x), rtol=1e-5, atol=3e-5)
            torch.testing.assert_close(packed(x), model(x), rtol=1e-4, atol=1e-4)
    assert _packed_shapes(packed) >= {(1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 96, 80)}
    with torch.inference_mode():
        for side in (32, 40, 48):  # 6 shapes seen: each convolution keeps the last 4
            packed(torch.randn(1, 3, side, side))
    caches = [m.__dict__["_packed"] for m in packed.modules() if isinstance(m, PrepackedConv2d)]
    assert all(len(c) == PrepackedConv2d.max_packed for c in caches)
    assert (1, 3, 48, 48) in _packed_shapes(packed) and (3, 3, 64, 64) not in _packed_shapes(packed)


def test_prepacked_network_keeps_the_conv_state_dict_and_copies(measure_bn):
    import copy
    import pickle

    model = measure_bn(senet.create_model("se_resnet18"), batch=16)
    packed = fuse_for_inference(model)
    plain = fuse_for_inference(model, prepack=False)
    assert packed.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = packed(x)
        for twin in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
            torch.testing.assert_close(twin(x), ref, rtol=0, atol=0)
        # new weights are packed anew (the packing follows the weight's version)
        other = measure_bn(senet.create_model("se_resnet18"), batch=16)
        for m in other.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.mul_(1.1)
        plain_other = fuse_for_inference(other, prepack=False)
        packed.load_state_dict(plain_other.state_dict())
        torch.testing.assert_close(packed(x), plain_other(x), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(packed(x), ref, atol=1e-3)


def test_prepacked_convolution_falls_back_where_the_packed_kernel_does_not_apply():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    packed = PrepackedConv2d.from_conv(conv)
    assert packed.weight is conv.weight and packed.bias is conv.bias
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    y = packed(x)  # autograd: the Conv2d path, gradients flow
    y.sum().backward()
    assert conv.weight.grad is not None and x.grad is not None
    with torch.no_grad():
        torch.testing.assert_close(packed(x), conv(x), rtol=1e-5, atol=1e-5)
        x64 = x.detach().double()
        torch.testing.assert_close(packed.double()(x64), conv.double()(x64))  # float64: Conv2d path
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert packed.float()(x).dtype == torch.bfloat16
    # torch.export sees a plain convolution (a portable graph, no oneDNN op)
    graph = torch.export.export(nn.Sequential(packed.float()).eval(), (x.detach(),)).graph
    targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
    assert any("convolution" in t or "conv2d" in t for t in targets)
    assert not any("mkldnn" in t for t in targets)


def test_fold_bn_by_hand():
    conv, bn = nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4, eps=1e-3).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    nn.init.uniform_(bn.weight, 0.5, 1.5)
    nn.init.uniform_(bn.bias, -1, 1)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = conv(x)
        ref = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        ref = ref * bn.weight[:, None, None] + bn.bias[:, None, None]
        fold_bn(conv, bn)
        torch.testing.assert_close(conv(x), ref, rtol=1e-5, atol=1e-5)


class _ConvUsedTwice(nn.Module):
    """The conv output feeds the BN *and* the sum: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class _SharedConv(nn.Module):
    """One conv called twice, its BN after one call only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.conv(x)


class _AcrossModules(nn.Module):
    """A conv at the end of one Sequential, its BN at the start of the next, registered in reverse."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x))


@pytest.mark.parametrize(("cls", "folded"), [(_ConvUsedTwice, 0), (_SharedConv, 0), (_AcrossModules, 1)])
def test_only_exact_foldings_happen(measure_bn, cls, folded):
    model = measure_bn(cls(), 10, batch=16)
    x = torch.randn(2, 3, 10, 10)
    assert len(conv_bn_pairs(model, x)) == folded
    fused = fuse_for_inference(model, example_input=x, channels_last=False)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="nn.Module"):
        fuse_for_inference("se_resnet50")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="example_input"):
        fuse_for_inference(senet.create_model("resnet18"), example_input=torch.randn(1, 5, 32, 32))


def test_torch_compile_of_a_fused_channels_last_network_matches_eager(measure_bn):
    model = measure_bn(senet.create_model("se_resnet20"), 32, batch=16)
    fused = fuse_for_inference(model, channels_last=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(fused)(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", senet.list_models())
def test_every_network_is_captured_by_torch_compile_in_one_graph(name):
    """Dynamo captures the whole forward without graph breaks (backend: eager, to keep it quick)."""
    torch._dynamo.reset()
    model = senet.create_model(name).eval()
    x = _input(model, 1)
    with torch.no_grad():
        out = torch.compile(model, backend="eager", fullgraph=True)(x)
        torch.testing.assert_close(out, model(x))


def test_bf16_autocast_inference_on_cpu(measure_bn):
    """bf16 keeps 8 bits of mantissa: logits move by about 1% of their size (docs/performance.md)."""
    model = measure_bn(senet.create_model("se_resnet20"), 32, batch=16)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            out_fused = fuse_for_inference(model)(x)
    assert out.dtype == torch.bfloat16 and out_fused.dtype == torch.bfloat16
    for o in (out, out_fused):
        rel = ((o.float() - ref).norm() / ref.norm()).item()
        assert 0 < rel < 0.05


def test_se_scales_in_place_only_when_nothing_needs_its_input():
    se = senet.SEBlock(8, 4).eval()
    x = torch.randn(2, 8, 5, 5)
    ref = x * se.excite(x)
    with torch.no_grad():
        y = x.clone()
        out = se(y, inplace=True)
        assert out.data_ptr() == y.data_ptr()  # no new feature map
        torch.testing.assert_close(out, ref)
        assert se(x).data_ptr() != x.data_ptr()  # the default copies
        seen = []
        handle = se.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
        y = x.clone()
        se(y, inplace=True)
        torch.testing.assert_close(seen[0], x)  # a hook sees the input, not the result
        handle.remove()
    y = x.clone().requires_grad_()
    out = se(y, inplace=True)  # autograd needs y: copies
    assert out.data_ptr() != y.data_ptr()
    out.sum().backward()
    assert y.grad is not None and se.fc1.weight.grad is not None


@pytest.mark.parametrize("grad", [False, True])
def test_residual_units_with_in_place_ops_match_timm(grad):
    """Same weights as timm's seresnet18 (an independent implementation): same logits and gradients."""
    timm = pytest.importorskip("timm")
    peer = timm.create_model("seresnet18", num_classes=10)
    ours = senet.create_model("se_resnet18", num_classes=10, layout="torchvision", divisor=8)  # timm rounds
    senet.load_weights(ours, peer.state_dict())
    x = torch.randn(2, 3, 64, 64)
    if not grad:
        with torch.inference_mode():
            torch.testing.assert_close(ours.eval()(x), peer.eval()(x))
        return
    ours.train()(x).square().sum().backward()
    peer.train()(x).square().sum().backward()
    torch.testing.assert_close(ours.layer2[0].se.fc1.weight.grad, peer.layer2[0].se.fc1.weight.grad)
    torch.testing.assert_close(ours.stem.conv1.weight.grad, peer.conv1.weight.grad, rtol=1e-4, atol=1e-4)


class _Lockstep:
    """Two calls run their lines of ``senet/inference.py`` in turn (one thread each): call 0 runs its
    first ``lead`` lines alone, then the calls alternate line by line. Trying every ``lead`` tries
    every way two concurrent calls can interleave at line granularity, deterministically."""

    def __init__(self, lead: int) -> None:
        self.lead, self.step, self.done = lead, 0, [False, False]
        self.cond = threading.Condition()

    def _slot(self, who: int, n: int) -> int:
        """The global step at which line ``n`` of call ``who`` runs."""
        if who == 1:
            return self.lead + 2 * n + 1
        return n if n < self.lead else self.lead + 2 * (n - self.lead)

    def run(self, who: int, fn: Callable[[], Any], out: list) -> None:
        n = -1  # lines started by this call, less one

        def trace(frame: Any, event: str, arg: Any) -> Any:
            nonlocal n
            if frame.f_code.co_filename != inference.__file__:
                return None
            if event == "line":
                with self.cond:
                    self.step += n >= 0  # the previous line of this call has run
                    n += 1
                    self.cond.notify_all()
                    self.cond.wait_for(lambda: self.step >= self._slot(who, n) or self.done[1 - who], 10)
            return trace

        sys.settrace(trace)
        try:
            out[who] = fn()
        except Exception as e:  # noqa: BLE001 - the test reports it
            out[who] = e
        finally:
            sys.settrace(None)
            with self.cond:
                self.step, self.done[who] = self.step + 1, True
                self.cond.notify_all()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_prepacked_cache_eviction_is_safe_under_concurrent_calls():
    """Two threads each convolve an input of a new shape, so both evict from a full cache: at every
    interleaving of their lines neither may fail (e.g. StopIteration from ``next(iter(cache))`` on
    a cache the other thread just emptied) and both outputs are the convolution's."""
    conv = nn.Conv2d(2, 3, 1)
    xs = [torch.randn(1, 2, s, s) for s in (3, 4, 5)]
    with torch.no_grad():
        want = [conv(x) for x in xs[1:]]
    for lead in range(80):  # a call runs ~60 lines
        packed = PrepackedConv2d.from_conv(conv).eval()
        packed.max_packed = 1  # the cache is full after one call: every new shape evicts
        with torch.inference_mode():
            packed(xs[0])
        out: list = [None, None]
        lockstep = _Lockstep(lead)

        def call(x: torch.Tensor, packed: nn.Module = packed) -> torch.Tensor:
            with torch.inference_mode():
                return packed(x)

        threads = [
            threading.Thread(target=lockstep.run, args=(k, lambda k=k: call(xs[k + 1]), out)) for k in (0, 1)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for got, ref in zip(out, want, strict=True):
            assert not isinstance(got, Exception), f"lead {lead}: {got!r}"
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        assert len(packed.__dict__["_packed"]) == 1


@pytest.mark.parametrize(("name", "rgb"), [("resnet20", CIFAR10), ("resnet18", IMAGENET)])
def test_preprocessing_of_another_channel_count(name, rgb, tmp_path):
    """in_chans=1 is a grey image: the average of the colour statistics (as the first conv sums its
    RGB kernels); 5 channels are no colours (FRN's event voxel grid): no normalisation, mean 0 std 1."""
    mean, std = rgb
    grey = senet.create_model(name, in_chans=1).preprocessing
    assert grey.mean == pytest.approx([sum(mean) / 3]) and grey.std == pytest.approx([sum(std) / 3])
    assert grey.input_size[0] == 1
    photo = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    assert grey.transform()(photo).shape[0] == 1  # a colour photo becomes grey
    five = senet.create_model(name, in_chans=5).preprocessing
    assert (five.mean, five.std, five.input_size[0]) == ((0.0,) * 5, (1.0,) * 5, 5)
    assert senet.create_model(name).preprocessing.mean == pytest.approx(mean)  # 3 channels: as before
    # weights that record RGB preprocessing, loaded into a grey network: the statistics follow
    path = senet.save_weights(senet.create_model(name), tmp_path / "rgb.pt")
    assert senet.create_model(name, in_chans=1, weights=path).preprocessing == grey
