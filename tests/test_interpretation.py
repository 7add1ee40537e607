"""cvlab's Grad-CAM against the well-kept library pytorch-grad-cam (PyPI: grad-cam)."""
import numpy as np
import pytest
import torch

from cvlab.data import read_photo
from cvlab.interpretation import GradCAM, find_layer
from cvlab.models import CompactCNN, pretrained


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
