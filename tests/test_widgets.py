import pytest
import torch
from matplotlib.figure import Figure

from cvlab.models import LinearModel
from cvlab.widgets import PredictionBrowser

NAMES = ["dark", "bright"]


@pytest.fixture
def browser(toy_data):
    images, labels = toy_data
    torch.manual_seed(0)
    model = LinearModel(in_features=64, num_classes=2)
    return PredictionBrowser(model, images, labels, NAMES, k=2), model, images, labels


def test_predict_matches_the_model(browser):
    b, model, images, labels = browser
    info = b.predict(5)
    with torch.no_grad():
        probs = torch.softmax(model(images[5:6].float() / 255), 1)[0]
    assert info["true"] == NAMES[int(labels[5])]
    assert info["predicted"] == NAMES[int(probs.argmax())]
    assert [p for _, p in info["top_k"]] == pytest.approx(sorted((100 * probs).tolist(), reverse=True), rel=1e-5)
    assert info["correct"] == (info["true"] == info["predicted"])


def test_class_filter_and_errors(browser):
    b, _, _, labels = browser
    assert b.indices("bright") == torch.nonzero(labels == 1).flatten().tolist()
    assert len(b.indices()) == 200
    with pytest.raises(ValueError, match="choose one of"):
        b.indices("purple")
    with pytest.raises(IndexError, match="0..199"):
        b.predict(200)
    with pytest.raises(ValueError, match="k must be"):
        PredictionBrowser(b.model, b.images, b.labels, NAMES, k=3)


def test_figure_and_widget_wiring(browser):
    b, *_ = browser
    assert isinstance(b.figure(0), Figure)
    ui = b.widget()
    dropdown, slider = ui.children[0].children
    dropdown.value = "bright"
    assert slider.max == len(b.indices("bright")) - 1 and slider.value == 0
    slider.value = 3  # redraws without error


from cvlab.transforms import AUGMENTATION_SPECS  # noqa: E402
from cvlab.widgets import AugmentationExplorer  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    return AugmentationExplorer()


@pytest.mark.parametrize("name", list(AUGMENTATION_SPECS))
def test_every_augmentation_applies_with_its_defaults(explorer, name):
    out = explorer.apply("chelsea", name, seed=1)
    assert out.dtype == torch.uint8 and out.shape[0] == 3
    assert torch.equal(out, explorer.apply("chelsea", name, seed=1))  # same seed, same result


def test_apply_leaves_the_global_random_state_alone(explorer):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    out = explorer.apply("chelsea", "RandomResizedCrop", seed=4)
    assert torch.equal(torch.get_rng_state(), state), "apply must not reseed or advance torch's generator"
    assert torch.equal(out, explorer.apply("chelsea", "RandomResizedCrop", seed=4))  # same seed, same crop
    assert not torch.equal(out, explorer.apply("chelsea", "RandomResizedCrop", seed=5))  # the seed decides it


def test_parameters_change_the_result(explorer):
    a = explorer.apply("chelsea", "RandomRotation", degrees=10.0)
    b = explorer.apply("chelsea", "RandomRotation", degrees=90.0)
    assert not torch.equal(a, b)
    flipped = explorer.apply("chelsea", "HorizontalFlip")
    assert torch.equal(flipped, explorer.images["chelsea"].flip(-1))


def test_explorer_errors(explorer):
    with pytest.raises(ValueError, match="unknown transform"):
        explorer.apply("chelsea", "Mixup")
    with pytest.raises(ValueError, match="unknown image"):
        explorer.apply("dog", "Grayscale")
    with pytest.raises(ValueError, match="no parameter 'angle'"):
        explorer.apply("chelsea", "RandomRotation", angle=3)
    with pytest.raises(ValueError, match=r"bits must be in \[1, 8\]"):
        explorer.apply("chelsea", "RandomPosterize", bits=12)
    with pytest.raises(ValueError, match="uint8"):
        AugmentationExplorer({"x": torch.rand(3, 4, 4)})


def test_explorer_widget_wiring(explorer):
    ui = explorer.widget()
    image, transform, seed = ui.children[0].children
    sliders = ui.children[1]
    assert [s.description for s in sliders.children] == ["degrees"]
    transform.value = "ColorJitter"
    assert [s.description for s in sliders.children] == ["brightness", "contrast", "saturation", "hue"]
    sliders.children[0].value = 0.8  # redraws without error
    assert isinstance(explorer.figure("coffee", "RandomPosterize", bits=2), Figure)


from cvlab.widgets import GradCAMExplorer  # noqa: E402


@pytest.fixture(scope="module")
def cam_explorer():
    from cvlab.images import read_photo
    from cvlab.pretrained import pretrained
    from cvlab.transforms import pretrained_transforms

    model, weights = pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)
    preprocess = pretrained_transforms(weights, crop_size=160, resize_size=160)
    inputs = {name: preprocess(read_photo(name)) for name in ("chelsea", "coffee")}
    return GradCAMExplorer(model, inputs, weights.meta["categories"], ["features.18", "features.14"], top_k=3), model


def test_cam_explorer_classes_and_maps(cam_explorer):
    from cvlab.interpretation import GradCAM

    ex, model = cam_explorer
    top = ex.classes("coffee")
    assert len(top) == 3 and top[0][1] == "espresso" and top[0][2] > top[1][2] > top[2][2]
    second = ex.classes("chelsea")[1][0]
    heat = ex.heatmap("chelsea", second, "features.14")
    with GradCAM(model, "features.14") as cam:
        assert torch.allclose(heat, cam(ex.inputs["chelsea"][None], second)[0])
    assert ex.heatmap("chelsea", second, "features.14") is heat  # kept, not recomputed
    assert not torch.allclose(heat, ex.heatmap("chelsea", second, "features.18"))
    assert heat.shape == (160, 160) and isinstance(ex.figure("chelsea"), Figure)


def test_cam_explorer_errors(cam_explorer):
    ex, model = cam_explorer
    with pytest.raises(ValueError, match="unknown image"):
        ex.heatmap("dog")
    with pytest.raises(ValueError, match="not offered"):
        ex.heatmap("chelsea", None, "features.3")
    with pytest.raises(ValueError, match="0..999"):
        ex.heatmap("chelsea", 1000)
    with pytest.raises(ValueError, match="nearest: .*features.18"):
        GradCAMExplorer(model, ex.inputs, ex.class_names, ["features.81"])
    with pytest.raises(ValueError, match=r"float tensor \(C, H, W\)"):
        GradCAMExplorer(model, {"x": torch.zeros(3, 8, 8, dtype=torch.uint8)}, ex.class_names, ["features.18"])


def test_cam_explorer_widget_wiring(cam_explorer):
    ex, _ = cam_explorer
    ui = ex.widget()
    image, target, layer = ui.children[0].children
    assert target.options[0][0].startswith("Egyptian cat") or target.options[0][0].startswith("tabby")
    image.value = "coffee"
    assert target.options[0][0].startswith("espresso") and target.value == target.options[0][1]
    layer.value = "features.14"  # redraws without error


def test_detection_explorer_keeps_fewer_boxes_as_the_thresholds_tighten():
    from cvlab.widgets import DetectionExplorer
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 60
    raw = {"boxes": torch.cat([xy, xy + 10 + torch.rand(40, 2, generator=g) * 20], 1),
           "scores": torch.rand(40, generator=g), "labels": torch.randint(1, 3, (40,), generator=g)}
    explorer = DetectionExplorer(torch.rand(3, 96, 96), raw, ["bg", "a", "b"])
    counts = [[len(explorer.kept(s, i)["boxes"]) for i in (0.2, 0.5, 1.0)] for s in (0.0, 0.5, 0.9)]
    assert counts[0][2] == 40                                          # no threshold, no suppression
    assert all(a <= b for row in counts for a, b in zip(row, row[1:]))  # a looser NMS keeps more
    assert all(a >= b for a, b in zip(counts[0], counts[1])) and all(a >= b for a, b in zip(counts[1], counts[2]))
    fig = explorer.figure(0.5, 0.5)
    assert isinstance(fig, Figure) and fig.axes[0].get_title().startswith(f"{counts[1][1]} of 40 boxes kept")
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\]"):
        explorer.kept(2.0, 0.5)
    with pytest.raises(TypeError, match="dict with tensors"):
        DetectionExplorer(torch.rand(3, 9, 9), [raw], ["bg"])
    with pytest.raises(ValueError, match="one score and one label per box"):
        DetectionExplorer(torch.rand(3, 9, 9), {**raw, "labels": raw["labels"][:3]}, ["bg"])


def test_mask_explorer_renders_each_view_and_the_toggled_classes():
    from cvlab.segmentation import class_colors
    from cvlab.widgets import MaskExplorer
    images = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    truth = torch.zeros(2, 8, 8, dtype=torch.int64)
    truth[:, :4], truth[:, 4:6] = 1, 2
    pred = truth.clone()
    pred[0, 4:6] = 1                                                   # scene 0: class 2 predicted as 1
    explorer = MaskExplorer(images, truth, pred, ["bg", "a", "b"])
    colors = class_colors(3)
    shown = explorer.render(0, "truth", alpha=1.0)
    assert tuple(shown[:, 5, 0].tolist()) == colors[2]
    assert tuple(explorer.render(0, "prediction", alpha=1.0)[:, 5, 0].tolist()) == colors[1]
    only_b = explorer.render(0, "truth", classes=[2], alpha=1.0)
    assert only_b[:, :4].sum() == 0 and tuple(only_b[:, 5, 0].tolist()) == colors[2]
    errors = explorer.render(0, "errors", alpha=1.0)
    assert tuple(errors[:, 5, 0].tolist()) == (230, 30, 30) and errors[:, :4].sum() == 0
    assert explorer.render(1, "errors", alpha=1.0).sum() == 0            # scene 1 is predicted right
    assert not torch.equal(explorer.render(0, alpha=0.3), explorer.render(0, alpha=0.9))
    fig = explorer.figure(0, "errors")
    assert isinstance(fig, Figure) and "pixel accuracy 75.0 %" in fig.axes[0].get_title()
    with pytest.raises(IndexError, match="choose 0..1"):
        explorer.render(2)
    with pytest.raises(ValueError, match="view must be one of"):
        explorer.render(0, "overlay")
    with pytest.raises(ValueError, match="one true and one predicted mask per image"):
        MaskExplorer(images, truth, pred[:1], ["bg", "a", "b"])


def test_every_explorer_widget_carries_a_png_of_its_figure():
    """Where widgets cannot run (an untrusted notebook, GitHub, HTML export) the output shows the
    figure, not ``VBox(children=...``."""
    import base64
    from cvlab.widgets import DetectionExplorer, MaskExplorer
    masks = torch.zeros(2, 8, 8, dtype=torch.int64)
    boxes = {"boxes": torch.tensor([[1.0, 1.0, 6.0, 6.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    for explorer in (MaskExplorer(torch.zeros(2, 1, 8, 8), masks, masks, ["bg", "a"]),
                     DetectionExplorer(torch.rand(3, 16, 16), boxes, ["bg", "a"])):
        bundle = explorer.widget()._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert base64.b64decode(bundle["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
