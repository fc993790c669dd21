"""Backbones: positive homogeneity of the bias-free nets (and its failure with biases), sizes, errors."""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jvp  # double-backward JVP: allows the BN running-σ update

from gdm.config import ModelConfig
from gdm.models import BIAS_FREE, MODELS, BiasFreeBatchNorm, build_model, check_image_size, count_parameters

TINY = {"bf_unet": ModelConfig("bf_unet", channels=4, blocks=2), "bf_cnn": ModelConfig("bf_cnn", channels=4, layers=5),
        "unet_bias": ModelConfig("unet_bias", channels=4, blocks=2)}


def tiny_net(name: str, mode: str) -> torch.nn.Module:
    """A float64 net whose BN running statistics have moved away from their initial values."""
    torch.manual_seed(0)
    net = build_model(TINY[name], 8).double()
    for key, p in net.named_parameters():  # O(1) BF-BN scales instead of the authors' tiny initial ones
        if key.endswith("gamma"):
            p.data.normal_()
    for module in net.modules():  # eps (1e-5) in √(var + eps) is the only departure from exact scaling
        if isinstance(module, BiasFreeBatchNorm):
            module.eps = 1e-14
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(6, 1, 8, 8, dtype=torch.float64) * 2)
    return net.train(mode == "train")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def denoise(net):
    return lambda y: y - net(y)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", MODELS)
def test_homogeneity_holds_only_without_biases(name, mode):
    """eval: f(a·y) = a·f(y) and f(y) = J_f(y)·y (Euler, degree 1).
    train: batch statistics make net degree 0: net(a·Y) = net(Y) and J_net(Y)·Y = 0 (Euler, degree 0)."""
    net = tiny_net(name, mode)
    y = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    errors = []
    for a in (0.5, 3.0):
        scaled = net(a * y) if mode == "train" else denoise(net)(a * y)
        expected = net(y) if mode == "train" else a * denoise(net)(y)
        errors.append(relative_error(scaled, expected))
    value, tangent = jvp(net if mode == "train" else denoise(net), y, y)
    euler = tangent.norm().item() / value.norm().item() if mode == "train" else relative_error(tangent, value)
    errors.append(euler)
    if name in BIAS_FREE:
        assert max(errors) < 1e-8, errors  # exact up to rounding
    else:
        assert min(errors) > 1e-2, errors  # the control is not homogeneous


def test_train_mode_is_not_degree_one():
    """Guard on the test above: batch statistics do change the map (so train-mode degree 0 is meaningful)."""
    net = tiny_net("bf_unet", "train")
    y = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    assert relative_error(net(3 * y), 3 * net(y)) > 0.1


@pytest.mark.parametrize(("blocks", "size", "low", "high"),
                         [(1, 20, 0.35e6, 0.39e6), (2, 40, 1.75e6, 1.9e6), (3, 80, 7.6e6, 7.7e6), (4, 160, 30e6, 32e6)])
def test_unet_parameter_counts_match_paper(blocks, size, low, high):
    assert low <= count_parameters(build_model(ModelConfig("bf_unet", channels=64, blocks=blocks), size)) <= high


def test_bf_cnn_parameter_count():
    assert 0.68e6 <= count_parameters(build_model(ModelConfig("bf_cnn", channels=64, layers=21), 40)) <= 0.72e6


def test_bias_free_models_have_no_bias_parameters():
    for name in BIAS_FREE:
        names = [n for n, _ in build_model(TINY[name], 8).named_parameters()]
        assert not any(n.endswith("bias") for n in names), names


def test_output_shape_is_input_shape():
    for name, cfg in TINY.items():
        assert build_model(cfg, 16)(torch.rand(2, 1, 16, 16)).shape == (2, 1, 16, 16), name


@pytest.mark.parametrize(("cfg", "size", "fragments"), [
    (ModelConfig("transformer"), 32, ["model.name", "bf_unet", "image_size"]),
    (ModelConfig("bf_unet", blocks=3), 30, ["divisible", "image_size 30", "model.blocks"]),
    (ModelConfig("bf_unet", blocks=0), 32, ["model.blocks"]),
    (ModelConfig("bf_cnn", layers=1), 32, ["model.layers"]),
    (ModelConfig("bf_unet", channels=0), 32, ["model.channels"]),
])
def test_bad_model_configs_name_their_key(cfg, size, fragments):
    with pytest.raises(ValueError) as caught:
        check_image_size(cfg, size)
    for fragment in fragments:
        assert fragment in str(caught.value)
    with pytest.raises(ValueError):
        build_model(cfg, size)


def test_bf_cnn_takes_any_size():
    check_image_size(ModelConfig("bf_cnn"), 30)


def test_bias_free_norm_survives_sync_batchnorm_conversion():
    """Lightning's sync_batchnorm uses convert_sync_batchnorm; BF-BN must not become a (biased) SyncBatchNorm."""
    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build_model(TINY["bf_unet"], 8))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in net.modules())
    assert any(isinstance(m, BiasFreeBatchNorm) for m in net.modules())


def test_bf_norm_divides_by_sd_without_centering():
    norm = BiasFreeBatchNorm(2)
    norm.gamma.data.fill_(1.0)
    x = torch.randn(8, 2, 4, 4) + 5.0
    expected = x / torch.sqrt(x.var(dim=(0, 2, 3), keepdim=True, unbiased=False) + 1e-5)
    assert torch.allclose(norm(x), expected)
    assert torch.allclose(norm.running_sd, 0.9 + 0.1 * x.std(dim=(0, 2, 3), unbiased=False).view(1, 2, 1, 1),
                          atol=1e-4)
    norm.eval()
    assert torch.allclose(norm(x), x / norm.running_sd)
