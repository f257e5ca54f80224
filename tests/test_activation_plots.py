"""Plots of learned PWLU curves: unit discovery, curve data, the PNG, errors and the CLI."""

import numpy as np
import pytest
import torch
from PIL import Image
from tool_runs import run_tool
from torch import nn

from pwlu_det.checkpoint import find_pwlu_units
from pwlu_det.layers import PARAM_NAMES, PWLU, STATE_NAMES, Phase, pwlu_reference
from pwlu_det.utils import compute_unit_curves, plot_pwlu_activations
from pwlu_det.utils.activation_plots import HEADER_INCHES

PANEL = (3.0, 2.5)
DPI = 40


class TinyModel(nn.Module):
    """Three PWLU modules (two channel-wise, one layer-wise) and two near-miss decoys."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)  # running_mean, num_batches_tracked: not a PWLU
        self.act = PWLU(4)  # channel-wise, realigned on statistics, then "trained"
        self.head = nn.Sequential(nn.Linear(4, 4), PWLU())  # layer-wise, phase 0
        self.block = nn.Module()
        self.block.act = PWLU(3, num_intervals=8)  # channel-wise, phase 0
        self.decoy = nn.Module()  # 8 of the 9 keys: not a PWLU
        for name in STATE_NAMES[:-1]:
            self.decoy.register_buffer(name, torch.zeros(2))


@pytest.fixture
def model():
    torch.manual_seed(0)
    net = TinyModel()
    act = net.act
    act.start_statistics()
    act.train()
    for _ in range(3):
        act(0.5 * torch.randn(8, 4, 5, 5) + torch.tensor([1.0, -0.5, 0.2, 0.9]).view(1, 4, 1, 1))
    act.realign()
    with torch.no_grad():
        act.heights.add_(0.3 * torch.randn_like(act.heights))
        act.left_slope.add_(torch.tensor([-0.2, 0.1, 0.0, 0.3]))
    assert int(act.phase) == Phase.TRAINING
    assert (act.left_bound - (-3.0)).abs().min() > 0.3, "realigned bounds must differ from -3"
    assert (act.right_bound - 3.0).abs().min() > 0.3, "realigned bounds must differ from +3"
    return net


@pytest.fixture
def checkpoint(tmp_path, model):
    path = tmp_path / "model_final.pth"
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    return path


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def _expected_size(panels, columns):
    rows = -(-panels // columns)
    return round(columns * PANEL[0] * DPI), round((rows * PANEL[1] + HEADER_INCHES) * DPI)


def test_find_pwlu_units_finds_exactly_the_units(model):
    state = model.state_dict()
    units = find_pwlu_units(state)
    assert list(units) == ["act", "head.1", "block.act"]
    for name, unit in units.items():
        assert set(unit) == set(STATE_NAMES)
        for key, value in unit.items():
            assert torch.equal(value, state[f"{name}.{key}"])
    assert units["head.1"]["left_bound"].dim() == 0
    assert units["block.act"]["heights"].shape == (3, 9)


def test_plot_checkpoint_writes_a_valid_nontrivial_png(tmp_path, checkpoint):
    output = tmp_path / "plots" / "curves.png"
    result = plot_pwlu_activations(checkpoint, output, columns=2, dpi=DPI, panel_size=PANEL)

    assert result.path == output and output.is_file()
    with Image.open(output) as image:
        assert image.format == "PNG"
        assert image.size == _expected_size(3, 2) == result.size_px
    pixels = _pixels(output)
    assert pixels.std() > 20.0, "the image looks blank"
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 100, f"only {len(colours)} distinct colours"
    bluish = (pixels[..., 2] - pixels[..., 0]) > 60  # the curves and bands are tab:blue
    assert bluish.sum() > 300, f"only {bluish.sum()} pixels of curve colour"
    assert result.layers_plotted == result.layers_total == 3
    assert len(result.titles) == 3
    assert result.titles[0].startswith("act\n4 channels, N=16, phase=training")
    assert result.titles[1].startswith("head.1\nlayer-wise, N=16, phase=initial")
    assert result.titles[2].startswith("block.act\n3 channels, N=8, phase=initial")
    assert sorted(p.name for p in output.parent.iterdir()) == ["curves.png"], "temp file left"


def test_state_dict_model_and_checkpoint_give_the_same_picture(tmp_path, model, checkpoint):
    kwargs = {"columns": 3, "dpi": DPI, "panel_size": PANEL, "title": "same"}
    from_path = plot_pwlu_activations(checkpoint, tmp_path / "a.png", **kwargs)
    from_state = plot_pwlu_activations(model.state_dict(), tmp_path / "b.png", **kwargs)
    from_model = plot_pwlu_activations(model, tmp_path / "c.png", **kwargs)
    assert from_path.layers_plotted == from_state.layers_plotted == from_model.layers_plotted == 3
    reference = _pixels(from_path.path)
    assert np.array_equal(reference, _pixels(from_state.path))
    assert np.array_equal(reference, _pixels(from_model.path))
    residual = plot_pwlu_activations(model, tmp_path / "d.png", residual=True, **kwargs)
    assert residual.layers_plotted == 3
    assert not np.array_equal(reference, _pixels(residual.path))


def test_max_layers_limits_the_panels(tmp_path, checkpoint):
    output = tmp_path / "two.png"
    result = plot_pwlu_activations(
        checkpoint, output, max_layers=2, columns=2, dpi=DPI, panel_size=PANEL
    )
    assert result.layers_plotted == 2 and result.layers_total == 3
    assert [t.split("\n")[0] for t in result.titles] == ["act", "head.1"]
    with Image.open(output) as image:
        assert image.size == _expected_size(2, 2)


def test_median_curve_equals_the_reference_per_channel(model):
    unit = find_pwlu_units(model.state_dict())["act"]
    curves = compute_unit_curves(unit, "act", band=(10.0, 90.0))
    x = torch.from_numpy(curves.x)
    assert x.dtype == torch.float64
    # Independent evaluation: each channel as a layer-wise unit with 0-d parameters.
    per_channel = np.stack(
        [
            pwlu_reference(
                x,
                *(unit[k][c].double() for k in PARAM_NAMES),
            ).numpy()
            for c in range(4)
        ]
    )
    np.testing.assert_allclose(curves.curves, per_channel, rtol=0, atol=1e-12)
    np.testing.assert_allclose(curves.median, np.median(per_channel, axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(curves.band_low, np.percentile(per_channel, 10, axis=0), atol=1e-12)
    np.testing.assert_allclose(curves.band_high, np.percentile(per_channel, 90, axis=0), atol=1e-12)
    relu = np.maximum(curves.x, 0.0)
    assert np.abs(curves.median - relu).max() > 0.05, "the test unit must not be plain ReLU"
    assert curves.relu_gap > 0.05 and curves.height_gap > 0.05
    # The x range covers the bounds of the channels and the collected range, with a margin.
    left, right = unit["left_bound"].double(), unit["right_bound"].double()
    mean, std = unit["running_mean"].double(), unit["running_std"].double()
    assert curves.left_bound == pytest.approx(float(left.median()), abs=0.5)
    assert curves.range_low == pytest.approx(float(torch.quantile(mean - 3 * std, 0.5)))
    assert curves.range_high == pytest.approx(float(torch.quantile(mean + 3 * std, 0.5)))
    assert curves.x[0] < float(torch.quantile(left, 0.1)) and curves.x[0] < curves.range_low
    assert curves.x[-1] > float(torch.quantile(right, 0.9)) and curves.x[-1] > curves.range_high
    assert (
        curves.num_channels == 4 and curves.num_intervals == 16 and curves.phase == Phase.TRAINING
    )


def test_layerwise_curve_has_the_known_values():
    unit = {
        "left_bound": torch.tensor(-1.0),
        "right_bound": torch.tensor(1.0),
        "heights": torch.tensor([0.5, 0.0, 2.0]),
        "left_slope": torch.tensor(-1.0),
        "right_slope": torch.tensor(0.5),
        "running_mean": torch.tensor(0.5),
        "running_std": torch.tensor(1.0),
        "num_batches_tracked": torch.tensor(5),
        "phase": torch.tensor(Phase.INITIAL),
    }
    curves = compute_unit_curves(unit, "layer")
    assert curves.num_channels is None and curves.granularity == "layer-wise"
    assert (curves.range_low, curves.range_high) == (-2.5, 3.5)
    assert curves.curves.shape == (1, curves.x.size)
    expected = {-2.0: 1.5, -1.0: 0.5, -0.5: 0.25, 0.0: 0.0, 0.5: 1.0, 1.0: 2.0, 3.0: 3.0}
    got = np.interp(list(expected), curves.x, curves.median)
    np.testing.assert_allclose(got, list(expected.values()), rtol=0, atol=1e-12)
    assert np.array_equal(curves.band_low, curves.median)
    assert np.array_equal(curves.band_high, curves.median)
    # Heights vs ReLU at the breakpoints -1, 0, 1: |0.5 - 0|, 0, |2 - 1|.
    assert curves.height_gap == pytest.approx(1.0)
    unit["num_batches_tracked"] = torch.tensor(0)  # no statistics: no collected range
    assert compute_unit_curves(unit, "layer").range_low is None


def test_no_pwlu_raises_value_error(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"model": nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).state_dict()}, path)
    output = tmp_path / "none.png"
    with pytest.raises(ValueError, match="plain.pth has no PWLU units"):
        plot_pwlu_activations(path, output)
    with pytest.raises(ValueError, match="the state dict has no PWLU units"):
        plot_pwlu_activations({}, output)
    assert not output.exists()
    assert find_pwlu_units(torch.load(path)["model"]) == {}


def test_missing_file_raises_file_not_found(tmp_path):
    missing = tmp_path / "does_not_exist.pth"
    output = tmp_path / "out.png"
    with pytest.raises(FileNotFoundError, match="does_not_exist.pth"):
        plot_pwlu_activations(missing, output)
    assert not output.exists()


def test_cli_prints_the_output_and_the_layer_count(tmp_path, checkpoint):
    output = tmp_path / "cli.png"
    argv = ["--checkpoint", checkpoint, "--output", output, "--max-layers", "2", "--dpi", "30"]
    result = run_tool("plot_activations.py", *argv)
    assert result.returncode == 0, result.stdout
    assert str(output) in result.stdout and "2 of 3 PWLU layers" in result.stdout
    with Image.open(output) as image:
        assert image.format == "PNG"
    missing = run_tool(
        "plot_activations.py", "--checkpoint", tmp_path / "nope.pth", "--output", output
    )
    assert missing.returncode == 1 and "nope.pth" in missing.stdout


def test_non_finite_channels_are_left_out_of_the_summary(model, caplog):
    unit = {k: v.clone() for k, v in find_pwlu_units(model.state_dict())["act"].items()}
    unit["heights"][2, 5] = float("nan")
    with caplog.at_level("WARNING"):
        curves = compute_unit_curves(unit, "act")
    assert "1 of 4 channels have non-finite parameters" in caplog.text
    assert np.isnan(curves.curves[2]).any() and np.isfinite(curves.median).all()
    finite_rows = curves.curves[[0, 1, 3]]
    np.testing.assert_allclose(curves.median, np.median(finite_rows, axis=0), rtol=0, atol=1e-12)


def test_single_layerwise_unit_in_statistics_phase(tmp_path):
    act = PWLU()
    act.start_statistics()
    output = tmp_path / "one.png"
    result = plot_pwlu_activations(nn.Sequential(act), output, columns=4, dpi=DPI, panel_size=PANEL)
    assert result.layers_plotted == 1
    assert result.titles == ("0\nlayer-wise, N=16, phase=statistics",)
    with Image.open(output) as image:
        assert image.size == _expected_size(1, 1)
