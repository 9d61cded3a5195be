"""BN-Inception against the official SE-BN-Inception prototxt, Inception-ResNet-v2 against timm, both
against the paper's multiply-adds (Table 2), and SE placed as Sec. 4 / Fig. 2 / Fig. 5 say."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from senet import SEConfig, create_model
from senet.analysis import profile
from senet.analysis.profile import count_macs
from senet.models import list_models, model_info
from senet.models.common import init_weights
from senet.models.inception import (
    Block8,
    Block17,
    Block35,
    Mixed5b,
    Mixed6a,
    Mixed7a,
    ReductionMaxPool,
    bn_inception_cadene_name,
    bn_inception_caffe_name,
)
from senet.se import SEBlock

# models/SE-BN-Inception.prototxt of hujie-frank/SENet, transcribed by hand. Per Inception module:
# num_output of the convolutions 1x1, 3x3_reduce, 3x3, double3x3_reduce, double3x3a, double3x3b,
# pool_proj (None: no such layer), the type of the "pool" layer, the num_output of the SE layer
# "<module>_1x1_down" and of "<module>_1x1_up" (= the width of the concat).
RELEASE_MODULES = {
    "inception_3a": ((64, 64, 64, 64, 96, 96, 32), "AVE", 16, 256),
    "inception_3b": ((64, 64, 96, 64, 96, 96, 64), "AVE", 20, 320),
    "inception_3c": ((None, 128, 160, 64, 96, 96, None), "MAX", 36, 576),
    "inception_4a": ((224, 64, 96, 96, 128, 128, 128), "AVE", 36, 576),
    "inception_4b": ((192, 96, 128, 96, 128, 128, 128), "AVE", 36, 576),
    "inception_4c": ((160, 128, 160, 128, 160, 160, 128), "AVE", 38, 608),
    "inception_4d": ((96, 128, 192, 160, 192, 192, 128), "AVE", 38, 608),
    "inception_4e": ((None, 128, 192, 192, 256, 256, None), "MAX", 66, 1056),
    "inception_5a": ((352, 192, 320, 160, 224, 224, 128), "AVE", 64, 1024),
    "inception_5b": ((352, 192, 320, 192, 224, 224, 128), "MAX", 64, 1024),
}
CONV_NAMES = ("1x1", "3x3_reduce", "3x3", "double3x3_reduce", "double3x3a", "double3x3b", "pool_proj")
CONV_KERNELS = (1, 1, 3, 1, 3, 3, 1)
# Stem of the prototxt: (num_output, kernel_size, stride); all without bias.
RELEASE_STEM = {"conv1/7x7_s2": (64, 7, 2), "conv2/3x3_reduce": (64, 1, 1), "conv2/3x3": (192, 3, 1)}
# Feature-map side after each module at 224x224: pool1 and pool2 are ceil-mode (112 -> 56 -> 28);
# with floor-mode pools the grid would be 27.
RELEASE_GRID = dict(zip(RELEASE_MODULES, (28, 28, 14, 14, 14, 14, 14, 7, 7, 7), strict=True))

# Paper, Table 2: GFLOPs (multiply-adds), re-implementation / SE version. BN-Inception at 224x224;
# Inception-ResNet-v2 at 297x297, the input size where the figure holds (see test below and
# the docstring of senet.models.inception: at 299x299 it is 13.16 G).
TABLE2_GMACS = {
    ("bn_inception", 224): 2.03,
    ("se_bn_inception", 224): 2.04,
    ("inception_resnet_v2", 297): 11.75,
    ("se_inception_resnet_v2", 297): 11.76,
}


def _release_convs() -> dict[str, tuple[int, int, int]]:
    """Caffe conv layer -> (num_output, kernel, stride) from the transcribed prototxt table."""
    convs = dict(RELEASE_STEM)
    for module, (widths, _, _, _) in RELEASE_MODULES.items():
        reduction = widths[0] is None
        for name, width, k in zip(CONV_NAMES, widths, CONV_KERNELS, strict=True):
            if width is not None:
                stride = 2 if reduction and name in ("3x3", "double3x3b") else 1
                convs[f"{module}/{name}"] = (width, k, stride)
    return convs


def _se_grads_all_nonzero(model: nn.Module) -> None:
    se_params = [
        (f"{name}.{pname}", p)
        for name, m in model.named_modules()
        if isinstance(m, SEBlock)
        for pname, p in m.named_parameters()
    ]
    assert se_params, "no SE parameters found"
    for name, p in se_params:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"SE parameter {name} got no gradient"


def test_registered_as_twins_with_native_input_sizes():
    assert {"bn_inception", "se_bn_inception", "inception_resnet_v2", "se_inception_resnet_v2"} <= set(
        list_models("*inception*")
    )
    assert model_info("se_bn_inception").twin == "bn_inception"
    assert model_info("se_inception_resnet_v2").twin == "inception_resnet_v2"
    assert model_info("bn_inception").input_size == (3, 224, 224)
    assert model_info("inception_resnet_v2").input_size == (3, 299, 299)


# ------------------------------------------------------------------------------------------- BN-Inception


def test_bn_inception_conv_shapes_equal_the_release_prototxt():
    model = create_model("bn_inception")
    expected = _release_convs()
    seen: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            layer, blob = bn_inception_caffe_name(f"{name}.weight")
            assert blob == 0
            assert layer in expected, f"{name} maps to {layer}, which the release does not have"
            assert layer not in seen, f"{name} and {seen[layer]} both map to {layer}"
            seen[layer] = name
            assert module.kernel_size[0] == module.kernel_size[1] and module.stride[0] == module.stride[1]
            assert (module.out_channels, module.kernel_size[0], module.stride[0]) == expected[layer], name
            assert module.bias is None, f"{name}: the release's convolutions have no bias"
    assert set(seen) == set(expected)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == 1e-5  # Caffe BatchNorm default
    assert model.fc.in_features == 1024


def test_bn_inception_module_widths_grids_and_pools_equal_the_release():
    with torch.device("meta"):
        model = create_model("bn_inception").eval()
    shapes = {}
    for name, module in model.blocks.named_children():
        module.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape[1:])))
        pool_type = "MAX" if isinstance(module.pool, (nn.MaxPool2d, ReductionMaxPool)) else "AVE"
        assert pool_type == RELEASE_MODULES[name][1], name
        if isinstance(module.pool, nn.AvgPool2d):
            assert module.pool.count_include_pad  # Caffe counts the padding in AVE pooling
    model(torch.zeros(1, 3, 224, 224, device="meta"))
    for name, (_, _, _, width) in RELEASE_MODULES.items():
        grid = RELEASE_GRID[name]
        assert shapes[name] == (width, grid, grid), name


def test_se_bn_inception_se_widths_equal_the_release():
    model = create_model("se_bn_inception")
    for name, module in model.blocks.named_children():
        _, _, down, up = RELEASE_MODULES[name]
        assert (module.se.channels, module.se.hidden) == (up, down), name
        assert down == up // 16  # the paper's C // r, no rounding (256->16, 320->20, 576->36, ...)


def test_bn_inception_caffe_and_cadene_names():
    model = create_model("se_bn_inception")
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    caffe = {k: bn_inception_caffe_name(k) for k in keys}
    assert len(set(caffe.values())) == len(keys)  # one Caffe blob per parameter / statistic
    assert caffe["stem.conv1_7x7_s2.conv.weight"] == ("conv1/7x7_s2", 0)
    assert caffe["stem.conv1_7x7_s2.bn.running_var"] == ("conv1/7x7_s2/bn", 1)
    assert caffe["stem.conv1_7x7_s2.bn.bias"] == ("conv1/7x7_s2/bn/scale", 1)
    assert caffe["blocks.inception_3c.conv_double3x3b.bn.weight"] == ("inception_3c/double3x3b/bn/scale", 0)
    assert caffe["blocks.inception_4e.se.fc1.weight"] == ("inception_4e_1x1_down", 0)
    assert caffe["blocks.inception_5b.se.fc2.bias"] == ("inception_5b_1x1_up", 1)
    assert caffe["fc.weight"] == ("classifier", 0)
    with pytest.raises(KeyError):
        bn_inception_caffe_name("stem.conv1_7x7_s2.bn.num_batches_tracked")
    # Keys of Cadene's pretrainedmodels/models/bninception.py (BNInception.__init__).
    assert bn_inception_cadene_name("stem.conv1_7x7_s2.conv.weight") == "conv1_7x7_s2.weight"
    assert bn_inception_cadene_name("stem.conv2_3x3_reduce.bn.weight") == "conv2_3x3_reduce_bn.weight"
    assert bn_inception_cadene_name("blocks.inception_3a.conv_double3x3a.conv.weight") == (
        "inception_3a_double_3x3_1.weight"
    )
    assert bn_inception_cadene_name("blocks.inception_3c.conv_double3x3b.bn.running_mean") == (
        "inception_3c_double_3x3_2_bn.running_mean"
    )
    assert bn_inception_cadene_name("blocks.inception_4a.conv_double3x3_reduce.bn.bias") == (
        "inception_4a_double_3x3_reduce_bn.bias"
    )
    assert bn_inception_cadene_name("blocks.inception_5b.conv_pool_proj.conv.weight") == (
        "inception_5b_pool_proj.weight"
    )
    assert bn_inception_cadene_name("fc.bias") == "last_linear.bias"


def test_reduction_pool_is_caffe_ceil_mode_on_even_grids_and_matches_the_conv_on_odd_ones():
    pool = ReductionMaxPool()
    x = torch.randn(2, 3, 28, 28)
    torch.testing.assert_close(pool(x), nn.MaxPool2d(3, 2, ceil_mode=True)(x))
    conv = nn.Conv2d(3, 3, 3, 2, 1)
    for h, w in ((15, 15), (15, 16), (7, 9)):
        x = torch.randn(1, 3, h, w)
        assert pool(x).shape == conv(x).shape
    # odd grid: the extra last window holds one input pixel, the rest is -inf padding / clipped
    x = torch.randn(1, 3, 15, 15)
    assert torch.equal(pool(x)[..., -1, -1], x[..., -1, -1])


@pytest.mark.parametrize("size", [7, 240, 299, 333])
def test_bn_inception_runs_on_any_size_from_its_minimum(size):
    with torch.device("meta"):
        model = create_model("se_bn_inception").eval()
    assert model(torch.zeros(1, 3, size, size + 1, device="meta")).shape == (1, 1000)


@pytest.mark.parametrize("name", ["bn_inception", "se_bn_inception"])
def test_bn_inception_forward_backward_at_224(name):
    model = create_model(name, num_classes=10).train()
    out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 10)
    out.square().sum().backward()
    assert model.fc.weight.grad.abs().sum() > 0
    if name.startswith("se_"):
        _se_grads_all_nonzero(model)


def test_bn_inception_refuses_se_variants_without_meaning():
    for bad in ({"integration": "pre"}, {"integration": "identity"}, {"position": "3x3"}, {"stages": {2}}):
        with pytest.raises(ValueError, match="BNInception"):
            create_model("se_bn_inception", **bad)
    model = create_model("se_bn_inception", stages={4})
    with_se = [n for n, m in model.blocks.named_children() if m.se is not None]
    assert with_se == ["inception_4a", "inception_4b", "inception_4c", "inception_4d", "inception_4e"]


# ------------------------------------------------------------------------------------ Inception-ResNet-v2


@pytest.mark.parametrize(("name", "size"), TABLE2_GMACS)
def test_multiply_adds_within_1pct_of_table2(name, size):
    assert profile(name, (3, size, size)).gmacs == pytest.approx(TABLE2_GMACS[name, size], rel=0.01)


def test_inception_resnet_v2_params_and_macs_equal_timm():
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ref = timm.create_model("inception_resnet_v2", pretrained=False).eval()
    ours = profile("inception_resnet_v2", (3, 299, 299))
    assert ours.params == sum(p.numel() for p in ref.parameters()) == 55_843_464
    assert ours.macs == count_macs(ref, torch.zeros(1, 3, 299, 299, device="meta"))
    # At the native 299x299 input the network costs 13.16 G multiply-adds, not Table 2's 11.75.
    assert ours.gmacs == pytest.approx(13.16, abs=0.01)


def test_inception_resnet_v2_computes_what_timm_computes():
    timm = pytest.importorskip("timm")
    ref = timm.create_model("inception_resnet_v2", pretrained=False).eval()
    init_weights(ref)  # He init: eval-mode activations stay O(1) through all 40 residual modules
    # key map timm -> ours: identical names except the classifier (timm "classif", ours "fc")
    state = {k.replace("classif.", "fc.", 1): v for k, v in ref.state_dict().items()}
    with torch.device("meta"):
        ours = create_model("inception_resnet_v2").eval()
    ours.load_state_dict(state, strict=True, assign=True)
    x = torch.randn(2, 3, 75, 75)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.std() > 0.5
    assert (expected - got).abs().max() <= 1e-4


def test_se_inception_resnet_v2_se_widths_and_stages():
    with torch.device("meta"):
        model = create_model("se_inception_resnet_v2")
    se = {n: (m.channels, m.hidden) for n, m in model.named_modules() if isinstance(m, SEBlock)}
    assert len(se) == 3 + 10 + 20 + 10  # every module: 3 non-residual + 40 residual
    assert se["mixed_5b.se"] == se["repeat.0.se"] == (320, 20)
    assert se["mixed_6a.se"] == se["repeat_1.19.se"] == (1088, 68)
    assert se["mixed_7a.se"] == se["repeat_2.8.se"] == se["block8.se"] == (2080, 130)
    with torch.device("meta"):
        stage4 = create_model("se_inception_resnet_v2", stages={4})
    names = [n for n, m in stage4.named_modules() if isinstance(m, SEBlock)]
    assert names == ["mixed_6a.se"] + [f"repeat_1.{i}.se" for i in range(20)]


def test_inception_resnet_v2_refuses_se_variants_without_meaning():
    for bad in ({"position": "3x3"}, {"stages": {2}}, {"stages": {6}}):
        with pytest.raises(ValueError, match="InceptionResNetV2"):
            create_model("se_inception_resnet_v2", **bad)


@pytest.mark.parametrize("integration", ["standard", "pre", "post", "identity"])
def test_residual_module_places_se_as_fig5(integration):
    block = Block35(0.17, SEConfig(integration=integration)).eval()
    x = torch.randn(2, 320, 5, 5)
    se, scale = block.se, 0.17
    with torch.no_grad():
        residual = block.conv2d(block.branches(se(x) if integration == "pre" else x))
        if integration == "standard":
            expected = torch.relu(x + scale * se(residual))
        elif integration == "identity":
            expected = torch.relu(se(x) + scale * residual)
        elif integration == "pre":
            expected = torch.relu(x + scale * residual)
        else:
            expected = se(torch.relu(x + scale * residual))
        torch.testing.assert_close(block(x), expected)
    assert isinstance(se, SEBlock) and se.channels == 320


def test_inception_resnet_v2_input_errors_name_the_fix():
    with torch.device("meta"):
        model = create_model("inception_resnet_v2").eval()
    model(torch.zeros(1, 3, 75, 75, device="meta"))
    with pytest.raises(ValueError, match=r"H, W >= 75"):
        model(torch.zeros(1, 3, 74, 299, device="meta"))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.zeros(1, 1, 299, 299, device="meta"))


@pytest.mark.parametrize(
    ("module", "channels"),
    [(Mixed5b, 192), (Block35, 320), (Mixed6a, 320), (Block17, 1088), (Mixed7a, 1088), (Block8, 2080)],
)
def test_every_inception_resnet_module_calls_its_se(module, channels):
    block = module(se=SEConfig()).train()
    block(torch.randn(2, channels, 5, 5)).square().sum().backward()
    _se_grads_all_nonzero(block)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["inception_resnet_v2", "se_inception_resnet_v2"])
def test_inception_resnet_v2_forward_backward_at_299(name):
    model = create_model(name, num_classes=10).train()
    out = model(torch.randn(2, 3, 299, 299))
    assert out.shape == (2, 10)
    out.square().sum().backward()
    assert model.fc.weight.grad.abs().sum() > 0
    if name.startswith("se_"):
        _se_grads_all_nonzero(model)
