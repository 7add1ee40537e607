"""cvlab's Grad-CAM against the well-kept library pytorch-grad-cam (PyPI: grad-cam)."""
import numpy as np
import pytest
import torch

from cvlab.images import read_photo
from cvlab.interpretation import GradCAM
from cvlab.models import CompactCNN, find_layer
from cvlab.pretrained import pretrained


@pytest.fixture(scope="module")
def mobilenet():
    model, weights = pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)
    x = weights.transforms()(read_photo("chelsea"))[None]
    return model, x


def _reference(model, layer, x, target):
    from pytorch_grad_cam import GradCAM as ReferenceGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    with ReferenceGradCAM(model=model, target_layers=[layer]) as ref:
        return ref(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]


def test_agrees_with_pytorch_grad_cam(mobilenet):
    model, x = mobilenet
    with torch.inference_mode():
        top2 = model(x)[0].topk(2).indices.tolist()
    for target in top2:  # the top class and a second one
        with GradCAM(model, "features.18") as cam:
            ours = cam(x, target)[0].numpy()
        theirs = _reference(model, model.features[18], x, target)
        assert ours.shape == theirs.shape == (224, 224)
        corr = np.corrcoef(ours.ravel(), theirs.ravel())[0, 1]
        assert corr >= 0.99, f"correlation with pytorch-grad-cam {corr:.4f} for class {target}"


def test_maps_shapes_range_and_hooks_removed(mobilenet):
    model, x = mobilenet
    layer = find_layer(model, "features.18")
    batch = torch.cat([x, x.flip(-1)])
    with GradCAM(model, layer) as cam:
        maps = cam(batch)
        assert cam.logits.shape == (2, 1000)
    assert maps.shape == (2, 224, 224) and maps.dtype == torch.float32
    assert float(maps.min()) == 0.0 and float(maps.max()) == pytest.approx(1.0)
    # the flipped image's map is the flipped map, near enough
    assert np.corrcoef(maps[0].numpy().ravel(), maps[1].flip(-1).numpy().ravel())[0, 1] > 0.9
    assert not layer._forward_hooks and not layer._backward_hooks
    with pytest.raises(RuntimeError, match="hooks were removed"):
        cam(x)


def test_on_a_small_cnn_and_bad_input():
    torch.manual_seed(0)
    model = CompactCNN()
    x = torch.rand(3, 1, 28, 28)
    with GradCAM(model, "features.8") as cam:
        assert cam(x, [0, 1, 2]).shape == (3, 28, 28)
        with pytest.raises(ValueError, match="3 images but 2 targets"):
            cam(x, [0, 1])
        with pytest.raises(ValueError, match="float tensor"):
            cam(torch.zeros(1, 28, 28))


def test_unknown_layer_lists_near_matches(mobilenet):
    model, _ = mobilenet
    with pytest.raises(ValueError, match="nearest: .*features.18"):
        GradCAM(model, "features.81")


# --- saliency, occlusion and the sanity check -----------------------------------------------------
from cvlab.interpretation import occlusion, randomize_layers, saliency  # noqa: E402


class TopLeftModel(torch.nn.Module):
    """Class 0's logit is the mean of the top-left 8x8 pixels; class 1's is minus that."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        s = self.scale * x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


def test_saliency_is_where_the_score_depends_on_the_pixels():
    x = torch.rand(2, 3, 16, 16)
    maps = saliency(TopLeftModel(), x, 0)
    assert maps.shape == (2, 16, 16) and maps.dtype == torch.float32
    assert bool((maps[:, :8, :8] == 1).all()) and bool((maps[:, 8:, :] == 0).all()) and bool((maps[:, :, 8:] == 0).all())
    with pytest.raises(ValueError, match="class.*\\[0, 1\\]"):
        saliency(TopLeftModel(), x, 5)
    with pytest.raises(ValueError, match="x\\[None\\]"):
        saliency(TopLeftModel(), x[0])


def test_occlusion_drops_probability_only_where_the_model_looks():
    x = torch.ones(1, 3, 16, 16)  # class 0 is sure: logits (4, -4)
    drop = occlusion(TopLeftModel(), x, 0, patch=4, stride=4, baseline=0.0)
    p0 = torch.softmax(torch.tensor([4.0, -4.0]), 0)[0]
    p_occluded = torch.softmax(torch.tensor([4.0 * 0.75, -4.0 * 0.75]), 0)[0]  # a 4x4 patch covers 1/4 of the 8x8
    assert drop.shape == (1, 16, 16)
    assert torch.allclose(drop[0, :8, :8], (p0 - p_occluded).expand(8, 8), atol=1e-6)
    assert float(drop[0, 8:].abs().max()) == 0 and float(drop[0, :, 8:].abs().max()) == 0
    odd = occlusion(TopLeftModel(), torch.ones(1, 3, 15, 15), 0, patch=4, stride=4)  # edges covered too
    assert float(odd[0, -1, :8].min()) == 0 and not torch.isnan(odd).any()
    with pytest.raises(ValueError, match="patch"):
        occlusion(TopLeftModel(), x, 0, patch=32)


def test_randomize_layers_changes_only_those_layers(mobilenet):
    model, x = mobilenet
    state = torch.random.get_rng_state()
    rand = randomize_layers(model, ["classifier", "features.18"], seed=1)
    assert torch.equal(torch.random.get_rng_state(), state), "the global random state is left alone"
    for name, p in model.state_dict().items():
        changed = not torch.equal(p, rand.state_dict()[name])
        assert changed == name.startswith(("classifier.", "features.18.")), name
    again = randomize_layers(model, ["classifier", "features.18"], seed=1)
    assert all(torch.equal(a, b) for a, b in zip(rand.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="nearest"):
        randomize_layers(model, ["clasifier"])


def test_sanity_check_grad_cam_depends_on_the_weights(mobilenet):
    """Adebayo et al. (2018): randomising the top layers must change the map."""
    model, x = mobilenet
    with GradCAM(model, "features.18") as cam:
        trained = cam(x, 285)[0]  # Egyptian cat
    rand = randomize_layers(model, ["classifier", "features.18"], seed=0)
    with GradCAM(rand, "features.18") as cam:
        randomized = cam(x, 285)[0]
    corr = np.corrcoef(trained.numpy().ravel(), randomized.numpy().ravel())[0, 1]
    assert corr < 0.5, f"map barely changed (correlation {corr:.2f})"


def test_in_place_relu_after_the_layer_gives_a_clear_error():
    torch.manual_seed(0)
    model = CompactCNN().eval()
    x = torch.rand(2, 1, 28, 28)
    with GradCAM(model, "features.10") as cam, pytest.raises(ValueError, match="in-place.*m.inplace = False"):
        cam(x)
    for m in model.modules():  # the fix the message gives
        if hasattr(m, "inplace"):
            m.inplace = False
    with GradCAM(model, "features.10") as cam:
        assert cam(x).shape == (2, 28, 28)
