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


from cvlab.widgets import AUGMENTATION_SPECS, AugmentationExplorer  # noqa: E402


@pytest.fixture(scope="module")
def explorer():
    return AugmentationExplorer()


@pytest.mark.parametrize("name", list(AUGMENTATION_SPECS))
def test_every_augmentation_applies_with_its_defaults(explorer, name):
    out = explorer.apply("chelsea", name, seed=1)
    assert out.dtype == torch.uint8 and out.shape[0] == 3
    assert torch.equal(out, explorer.apply("chelsea", name, seed=1))  # same seed, same result


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
