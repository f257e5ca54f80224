"""The learned baselines PReLU, ACON-C, FReLU and PAU: values and gradients against their
formulas, their initialisation, where a Shapes model gets them and how many parameters they add,
every site kind (RetinaNet's P6/P7 and head, RegNetY's SE, LazyConfig), and export."""

from pathlib import Path

import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import CycleBatchNormList, FrozenBatchNorm2d
from detectron2.modeling import build_model
from detectron2.modeling.backbone.regnet import SE
from detectron2.utils.events import EventStorage
from test_lazy_configs import _regnet
from torch import nn
from torch.func import functional_call

from pwlu_det.config import load_pwlu_config
from pwlu_det.data import make_synthetic_batch
from pwlu_det.layers import (
    ACONC,
    ACTIVATION_LAYERS,
    PAU,
    ActivationSite,
    FReLU,
    LearnedActivation,
    PReLU,
    to_inference_form,
)
from pwlu_det.layers.learned_activations import PAU_LEAKY_RELU_INIT
from pwlu_det.modeling import ActivationFactory
from pwlu_det.modeling.regnet import ActRegNet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
#: registry name -> the config suffix of its Shapes row
SHAPES = {"PReLU": "prelu", "ACON-C": "aconc", "FReLU": "frelu", "PAU": "pau"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread (on a busy machine, a thread pool makes each op wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shapes_cfg(name: str, *opts):
    path = CONFIGS / "Shapes" / f"mask_rcnn_R_18_FPN_{SHAPES[name]}.yaml"
    return load_pwlu_config(str(path), list(opts))


def _units(module: nn.Module) -> list[LearnedActivation]:
    return [m for m in module.modules() if isinstance(m, LearnedActivation)]


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for u in _units(module) for p in u.parameters())


# Direct formulas, written from the docstrings, independently of the modules' code.
def _per_channel(p: torch.Tensor, dims: int) -> torch.Tensor:
    return p.reshape(-1, *([1] * (dims - 2)))


def _prelu(x, weight):
    a = _per_channel(weight, x.dim())
    return torch.where(x >= 0, x, a * x)


def _aconc(x, p1, p2, beta):
    p1, p2, beta = (_per_channel(p, x.dim()) for p in (p1, p2, beta))
    return (p1 - p2) * x * torch.sigmoid(beta * (p1 - p2) * x) + p2 * x


def _frelu_gn(x, weight, norm_weight, norm_bias, groups):
    t = F.conv2d(x, weight, padding=1, groups=x.shape[1])
    return torch.max(x, F.group_norm(t, groups, norm_weight, norm_bias))


def _frelu_fc(x, weight, bias):  # a 1x1 window on a vector: w * x + b per channel
    return torch.max(x, weight.reshape(1, -1) * x + bias)


def _pau(x, numerator, denominator):
    p = sum(a * x**j for j, a in enumerate(numerator))
    q = 1 + sum(b.abs() * x.abs() ** k for k, b in enumerate(denominator, 1))
    return p / q


def _moved(unit: LearnedActivation) -> LearnedActivation:
    """``unit`` with every parameter moved off its initial value, in place (the |b_k| of a PAU
    away from 0, where |.| has no derivative)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in unit.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen).to(p.dtype))
        if isinstance(unit, PAU):
            unit.denominator.copy_(torch.tensor([0.3, -0.8, 0.2, -0.4]))
    return unit


FORMULA_CASES = {
    "PReLU": (lambda: PReLU(3), (2, 3, 4, 5), lambda m, x: _prelu(x, m.weight)),
    "ACON-C": (lambda: ACONC(3), (2, 3, 4, 5), lambda m, x: _aconc(x, m.p1, m.p2, m.beta)),
    "FReLU": (
        lambda: FReLU(4, norm=nn.GroupNorm(2, 4)),
        (2, 4, 3, 3),
        lambda m, x: _frelu_gn(x, m.conv.weight, m.norm.weight, m.norm.bias, 2),
    ),
    "FReLU-fc": (
        lambda: FReLU.from_site(ActivationSite(5, spatial=False)),
        (3, 5),
        lambda m, x: _frelu_fc(x, m.conv.weight, m.conv.bias),
    ),
    "PAU": (lambda: PAU(), (2, 3, 4, 5), lambda m, x: _pau(x, m.numerator, m.denominator)),
}


@pytest.mark.parametrize("case", sorted(FORMULA_CASES))
def test_values_and_gradients_follow_the_formula(case):
    make, shape, formula = FORMULA_CASES[case]
    module = _moved(make().double())
    x = (2 * torch.randn(shape, dtype=torch.float64)).requires_grad_()
    y = module(x)
    torch.testing.assert_close(y, formula(module, x), rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(y.pow(2).sum(), [x, *module.parameters()])
    want = torch.autograd.grad(formula(module, x).pow(2).sum(), [x, *module.parameters()])
    for got, expected in zip(grads, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    names = [n for n, _ in module.named_parameters()]

    def call(x, *params):
        return functional_call(module, dict(zip(names, params, strict=True)), (x,))

    params = tuple(p.detach().requires_grad_() for p in module.parameters())
    assert torch.autograd.gradcheck(call, (x, *params))


@pytest.mark.parametrize("cls", [PReLU, ACONC])
def test_channel_wise_parameters_follow_channel_dim(cls):
    last = _moved(cls(3, channel_dim=-1).double())
    first = cls(3, channel_dim=1).double()
    first.load_state_dict(last.state_dict())
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    torch.testing.assert_close(last(x), first(x.movedim(-1, 1)).movedim(1, -1))
    shared = cls(None)
    assert all(p.shape == (1,) for p in shared.parameters())


def test_initialisations():
    x = torch.linspace(-6, 6, 1200)
    aconc = ACONC(4)
    assert [p.flatten().tolist() for p in (aconc.p1, aconc.p2, aconc.beta)] == [
        [1.0] * 4,
        [0.0] * 4,
        [1.0] * 4,
    ]
    maps = x.reshape(3, 4, 10, 10)
    torch.testing.assert_close(aconc(maps), F.silu(maps), rtol=1e-6, atol=1e-7)  # Swish
    assert torch.equal(PReLU(4).weight, torch.full((4,), 0.25))
    torch.testing.assert_close(PReLU(4)(maps), F.leaky_relu(maps, 0.25))
    pau = PAU()
    assert pau.numerator.tolist() == pytest.approx(PAU_LEAKY_RELU_INIT[0])
    assert pau.denominator.tolist() == pytest.approx(PAU_LEAKY_RELU_INIT[1])
    inside = x[x.abs() <= 3]
    with torch.no_grad():  # the authors' Leaky ReLU fit, as the docstring says
        assert (pau(inside) - F.leaky_relu(inside, 0.01)).abs().max() < 0.034
        slope = (pau(torch.tensor(1e4)) - pau(torch.tensor(1e3))) / 9e3
    assert slope.item() == pytest.approx(0.505, abs=1e-3)


def test_frelu_takes_a_fresh_copy_of_the_sites_norm():
    site = nn.GroupNorm(2, 4)
    with torch.no_grad():
        site.weight.fill_(3.0)
    frelu = FReLU(4, norm=site)
    assert isinstance(frelu.norm, nn.GroupNorm) and frelu.norm is not site
    assert frelu.norm.num_groups == 2 and torch.equal(frelu.norm.weight, torch.ones(4))
    assert frelu.conv.bias is None  # the norm learns the shift
    assert frelu.conv.kernel_size == (3, 3) and frelu.conv.groups == 4
    frozen = FReLU(4, norm=FrozenBatchNorm2d(4))
    assert isinstance(frozen.norm, FrozenBatchNorm2d) and frozen.conv.bias is not None
    assert FReLU(4).norm is None and FReLU(4).conv.bias is not None
    with pytest.raises(ValueError, match="for 8 channels, not 4"):
        FReLU(4, norm=nn.GroupNorm(2, 8))
    with pytest.raises(ValueError, match="needs the channel count and channels in dim 1"):
        FReLU.from_site(ActivationSite(None))
    with pytest.raises(ValueError, match="channels in dim 1"):
        FReLU.from_site(ActivationSite(4, channel_dim=-1))


def test_the_registry_and_the_factory():
    assert {"PReLU": PReLU, "ACON-C": ACONC, "FReLU": FReLU, "PAU": PAU}.items() <= (
        ACTIVATION_LAYERS.items()
    )
    # MODEL.PWLU.GRANULARITY is PWLU's: the baselines keep their own granularity.
    for channel_wise in (True, False):
        assert ActivationFactory("PReLU", channel_wise=channel_wise)(6).weight.shape == (6,)
        assert ActivationFactory("FReLU", channel_wise=channel_wise)(6).conv.out_channels == 6
    assert _num_params(ActivationFactory("PAU")(64)) == 10


# Learned activations per part of the Shapes Mask R-CNN R18-FPN (17 in the ResNet: stem + 2
# per BasicBlock; 1 in the RPN head; 4 convs + 1 fc in the box head; 4 convs + the deconv in the
# mask head), and the parameters they add there. Channels per part: ResNet 3904 (64 + 2 * 2 *
# (64 + 128 + 256 + 512)), RPN 64, box head 4 * 64 + 512, mask head 5 * 64. FReLU: 9 C for
# the 3x3 window, + 2 C for a GroupNorm site, + C (bias) without norm; 2 C at the fc.
PARTS = {
    "backbone.bottom_up": 17,
    "proposal_generator.rpn_head": 1,
    "roi_heads.box_head": 5,
    "roi_heads.mask_head": 5,
}
PARAMS_PER_PART = {
    "PReLU": [3904, 64, 4 * 64 + 512, 5 * 64],
    "ACON-C": [3 * 3904, 3 * 64, 3 * (4 * 64 + 512), 3 * 5 * 64],
    "FReLU": [11 * 3904, 10 * 64, 4 * 11 * 64 + 2 * 512, 4 * 11 * 64 + 10 * 64],
    "PAU": [10 * 17, 10, 10 * 5, 10 * 5],
}
#: What each adds to the Shapes model, in all.
PARAMS_ADDED = {"PReLU": 5056, "ACON-C": 15168, "FReLU": 50880, "PAU": 280}


@pytest.fixture(scope="module")
def relu_shapes_model():
    return build_model(load_pwlu_config(str(CONFIGS / "Shapes" / "mask_rcnn_R_18_FPN_relu.yaml")))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_units_and_parameters_per_site_of_the_shapes_model(name, relu_shapes_model):
    cfg = _shapes_cfg(name)
    model = build_model(cfg)
    kind = ACTIVATION_LAYERS[name]
    assert len(_units(model)) == sum(PARTS.values()) and all(type(u) is kind for u in _units(model))
    assert not any(isinstance(m, nn.ReLU | nn.SiLU) for m in model.modules())
    parts = {part: model.get_submodule(part) for part in PARTS}
    assert {part: len(_units(m)) for part, m in parts.items()} == PARTS
    assert [_num_params(m) for m in parts.values()] == PARAMS_PER_PART[name]
    added = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in relu_shapes_model.parameters()
    )
    assert added == _num_params(model) == PARAMS_ADDED[name]
    # Everything else is the ReLU model's.
    prefixes = tuple(n + "." for n, m in model.named_modules() if isinstance(m, kind))
    rest = {k: v.shape for k, v in model.state_dict().items() if not k.startswith(prefixes)}
    assert rest == {k: v.shape for k, v in relu_shapes_model.state_dict().items()}
    if name == "FReLU":  # GN sites keep GN; no-norm sites and the fc get a bias; fc: 1x1
        box = model.roi_heads.box_head
        assert isinstance(box.conv1.activation.norm, nn.GroupNorm)
        assert box.fc_relu1.norm is None and box.fc_relu1.conv.kernel_size == (1, 1)
        assert model.proposal_generator.rpn_head.conv.activation.norm is None
        assert model.roi_heads.mask_head.deconv_relu.conv.bias is not None
        assert model.backbone.bottom_up.res3[0].act2.norm.num_groups == 32


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_lazy_config_builds_the_yaml_model(name):
    cfg = LazyConfig.load(str(CONFIGS / "Shapes" / "mask_rcnn_R_18_FPN_pwlu.py"))
    cfg = LazyConfig.apply_overrides(cfg, [f"pwlu.ACTIVATION.NAME={name}"])
    lazy = instantiate(cfg.model)
    yacs = build_model(_shapes_cfg(name))
    assert {k: v.shape for k, v in lazy.state_dict().items()} == {
        k: v.shape for k, v in yacs.state_dict().items()
    }
    assert [type(u) for u in _units(lazy)] == [type(u) for u in _units(yacs)]


def _assert_trained(model: nn.Module, units: list[LearnedActivation]) -> None:
    trainable = [p for u in units for p in u.parameters()]
    assert trainable and all(p.grad is not None and p.grad.isfinite().all() for p in trainable)
    assert sum(p.grad.abs().sum().item() for p in trainable) > 0


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_retinanet_sites_p6p7_and_a_normed_head(name):
    retinanet = CONFIGS / "COCO-Detection" / "retinanet_R_50_FPN_1x_relu.yaml"
    opts = {
        "MODEL.ACTIVATION.NAME": name,
        "MODEL.DEVICE": "cpu",
        "MODEL.WEIGHTS": "",
        "MODEL.RESNETS.DEPTH": 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
        "MODEL.RESNETS.NORM": "GN",
        "MODEL.BACKBONE.FREEZE_AT": 0,
        "MODEL.FPN.OUT_CHANNELS": 64,
        "MODEL.RETINANET.NUM_CLASSES": 3,
        "MODEL.RETINANET.NUM_CONVS": 2,
        "MODEL.RETINANET.NORM": "BN",  # one BN per level (v0.6 cannot build a GN head)
    }
    model = build_model(load_pwlu_config(str(retinanet), [v for kv in opts.items() for v in kv]))
    assert len(_units(model.backbone.top_block)) == 1 and len(_units(model.head)) == 4
    if name == "FReLU":
        assert model.backbone.top_block.act.norm is None  # P6 has no norm
        assert all(isinstance(u.norm, CycleBatchNormList) for u in _units(model.head))
    model.train()
    with EventStorage(0):
        losses = model(make_synthetic_batch(num_images=2, height=96, width=128, seed=1))
    assert all(v.isfinite() for v in losses.values()), losses
    sum(losses.values()).backward()
    _assert_trained(model, _units(model))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_regnety_sites_squeeze_excitation_included(name):
    model = ActRegNet(
        **_regnet(se_ratio=0.25), activation=ActivationFactory(name), se_activation=True
    )
    se = [m for m in model.modules() if isinstance(m, SE)]
    assert len(_units(model)) == 1 + 4 * len(se) and se
    if name == "FReLU":  # SE sees 1x1 maps: a 1x1 window, no norm
        assert all(m.f_ex[1].conv.kernel_size == (1, 1) for m in se)
        assert isinstance(model.stem.af.norm, nn.BatchNorm2d)
    out = model(torch.randn(2, 3, 32, 32))
    sum(v.square().mean() for v in out.values()).backward()
    _assert_trained(model, _units(model))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_model_parts_export_to_torchscript_and_onnx(name, tmp_path):
    # The ResNet's stem and res2 (GN sites), the box head (GN convs and a vector fc) and the
    # mask head (GN convs and the deconv without norm).
    torch.manual_seed(0)
    model = build_model(_shapes_cfg(name)).eval()
    for unit in _units(model):
        _moved(unit)
    bottom_up, heads = model.backbone.bottom_up, model.roi_heads
    parts = {
        "resnet": (nn.Sequential(bottom_up.stem, bottom_up.res2), (1, 3, 32, 32)),
        "box_head": (heads.box_head, (3, 64, 7, 7)),
        "mask_head": (nn.Sequential(*heads.mask_head), (3, 64, 14, 14)),
    }
    for part, (module, shape) in parts.items():
        x = torch.randn(shape)
        with torch.no_grad():
            want = module(x)
            deployed = to_inference_form(module)  # kept as they are: no PWLU to convert
            assert deployed.state_dict().keys() == module.state_dict().keys()
            torch.testing.assert_close(deployed(x), want, rtol=0, atol=0)
            torch.testing.assert_close(torch.jit.script(module)(x), want)
        path = str(tmp_path / f"{part}.onnx")
        torch.onnx.export(module, (x,), path, dynamo=False, input_names=["x"])
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"x": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)
