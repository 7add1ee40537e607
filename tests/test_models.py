import pytest
import torch

from cvlab import models as M
from cvlab.checkpoints import CheckpointError, save_checkpoint


@pytest.mark.parametrize("arch, kwargs, params", [
    ("LinearModel", {}, 784 * 10 + 10),
    ("MLP", {"hidden_units": 16}, 784 * 16 + 16 + 16 * 10 + 10),
    ("TinyVGG", {}, None),
    ("CompactCNN", {}, 29_178),
])
def test_models_return_logits(arch, kwargs, params):
    torch.manual_seed(0)
    model = M.build_model(arch, **kwargs)
    out = model(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10) and out.dtype == torch.float32
    assert (out < 0).any(), "logits must be able to go negative (no activation on the output)"
    if params is not None:
        assert M.count_parameters(model) == params


def test_rgb_and_other_sizes():
    assert M.TinyVGG(in_channels=3, image_size=64, num_classes=4)(torch.rand(2, 3, 64, 64)).shape == (2, 4)
    assert M.CompactCNN(in_channels=3, image_size=32, num_classes=3)(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="too small"):
        M.CompactCNN(image_size=4)


def test_build_model_aliases_and_unknown():
    assert isinstance(M.build_model("model_0"), M.LinearModel)
    assert isinstance(M.build_model("model_1"), M.MLP)
    with pytest.raises(ValueError, match="choose one of"):
        M.build_model("ResNet9000")


def test_count_trainable_only():
    model = M.MLP(hidden_units=8)
    for p in model.layers[1].parameters():
        p.requires_grad_(False)
    assert M.count_parameters(model, trainable_only=True) == 8 * 10 + 10
    assert M.count_parameters(model) == 784 * 8 + 8 + 8 * 10 + 10


def test_load_model_rebuilds_identical(tmp_path):
    torch.manual_seed(0)
    model = M.CompactCNN(widths=(8, 16), dropout=0.1).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, model_kwargs={"widths": (8, 16), "dropout": 0.1},
                           class_names=list("abcdefghij"))
    loaded, ckpt = M.load_model(path)
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))
    assert ckpt["class_names"] == list("abcdefghij") and not loaded.training


def test_load_model_unknown_arch(tmp_path):
    class Mystery(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 2)
    path = save_checkpoint(tmp_path / "x.pt", Mystery())
    with pytest.raises(CheckpointError, match="does not build"):
        M.load_model(path)


def test_compact_cnn_without_batch_norm():
    plain = M.CompactCNN(batch_norm=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert plain(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    # same architecture otherwise: conv biases replace the BatchNorm shifts and scales
    assert M.count_parameters(plain) == 29_178 - 2 * (16 + 32 + 64) + (16 + 32 + 64)


def test_find_layer_names_the_nearest_layers():
    model = M.CompactCNN()
    assert M.find_layer(model, "features.4") is model.features[4]
    with pytest.raises(ValueError, match="CompactCNN has no layer 'feature.4'; nearest: .*features.4"):
        M.find_layer(model, "feature.4")
