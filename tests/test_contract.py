"""The contract written once in cvlab/__init__.py, checked across the modules: the top-level names,
the names that are gone, models left in the mode they were found in, and the argument defaults."""
import importlib
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

import cvlab
from cvlab.interpretation import GradCAM, occlusion, saliency
from cvlab.loaders import InMemoryLoader
from cvlab.metrics import predict
from cvlab.training import evaluate, fit, train_one_epoch
from cvlab.transfer import extract_features
from cvlab.utils import DEFAULT_SEED
from cvlab.widgets import GradCAMExplorer, PredictionBrowser

#: every module of the package (its files and sub-packages), except the command line (cli, __main__)
MODULES = sorted({p.stem for p in (Path(__file__).resolve().parents[1] / "cvlab").glob("*.py")
                  if p.stem not in ("__init__", "__main__", "cli")} | {"widgets"})
#: names two modules share on purpose: the same step for another task, named as torchvision's
#: reference scripts name it (references/classification and references/detection)
SHARED_NAMES = {"train_one_epoch": ["training", "detection", "segmentation"],
                "evaluate": ["training", "detection", "segmentation"]}


def test_the_lessons_names_are_at_the_top_level():
    from cvlab import training, utils
    assert cvlab.fit is training.fit
    assert cvlab.train_one_epoch is training.train_one_epoch
    assert cvlab.evaluate is training.evaluate
    assert cvlab.set_seed is utils.set_seed
    assert cvlab.get_device is utils.get_device
    assert sorted(cvlab.__all__) == ["evaluate", "fit", "get_device", "set_seed", "train_one_epoch"]


def test_old_names_are_gone():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("cvlab.data")
    from cvlab import interpretation, loaders, training, utils, widgets
    assert not hasattr(loaders, "seed_worker")
    assert not hasattr(training, "train_step") and not hasattr(training, "eval_step")
    assert not hasattr(utils, "save_checkpoint") and not hasattr(utils, "CheckpointError")
    assert "find_layer" not in interpretation.__all__ and "AUGMENTATION_SPECS" not in widgets.__all__


def test_every_public_name_has_one_home():
    homes = {}
    for name in MODULES:
        module = importlib.import_module(f"cvlab.{name}")
        for public in module.__all__:
            assert hasattr(module, public), f"cvlab.{name}.__all__ lists {public!r}, which it does not define"
            homes.setdefault(public, []).append(name)
    assert {k: sorted(v) for k, v in homes.items() if len(v) > 1} == {k: sorted(v) for k, v in SHARED_NAMES.items()}


# --- a function that switches a model's mode puts it back -----------------------------------------

class ModeProbe(nn.Module):
    """A tiny CNN that records the mode of each forward pass."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return self.head(torch.relu(self.conv(x)))


def _gradcam(model, x, loader):
    with GradCAM(model, "conv") as cam:
        cam(x)


def _explorer(model, x):
    return GradCAMExplorer(model, {"a": x[0]}, ["dark", "bright"], ["conv"], mean=(0.5,), std=(0.5,), top_k=2)


# name -> (call, the mode the model must be in while it runs)
CALLS = {
    "evaluate": (lambda m, x, loader: evaluate(m, loader, device="cpu"), False),
    "train_one_epoch": (lambda m, x, loader: train_one_epoch(m, loader, nn.CrossEntropyLoss(),
                                                             torch.optim.SGD(m.parameters(), lr=0.1), device="cpu"), True),
    "predict": (lambda m, x, loader: predict(m, loader, device="cpu"), False),
    "GradCAM": (_gradcam, False),
    "saliency": (lambda m, x, loader: saliency(m, x), False),
    "occlusion": (lambda m, x, loader: occlusion(m, x, patch=4, stride=4), False),
    "extract_features": (lambda m, x, loader: extract_features(m, loader, device="cpu", progress=False), False),
    "GradCAMExplorer.classes": (lambda m, x, loader: _explorer(m, x).classes("a"), False),
    "GradCAMExplorer.heatmap": (lambda m, x, loader: _explorer(m, x).heatmap("a"), False),
    "PredictionBrowser.predict": (lambda m, x, loader: PredictionBrowser(m, x, loader.labels[:2], ["d", "b"], k=2).predict(0),
                                  False),
    "fit": (lambda m, x, loader: fit(m, loader, loader, epochs=1, progress=False, device="cpu"), None),
}


@pytest.mark.parametrize("training", [True, False], ids=["train before", "eval before"])
@pytest.mark.parametrize("name", list(CALLS))
def test_the_model_is_left_in_its_mode(toy_data, name, training):
    images, labels = toy_data
    loader = InMemoryLoader(images[:16], labels[:16], 8)
    x = images[:2].float() / 255
    call, mode_inside = CALLS[name]
    model = ModeProbe().train(training)
    call(model, x, loader)
    assert model.seen, "the model was never run"
    if mode_inside is not None:
        assert set(model.seen) == {mode_inside}, f"{name} ran the model with training={model.seen}, expected {mode_inside}"
    else:  # fit trains and evaluates
        assert set(model.seen) == {True, False}
    assert model.training is training, f"{name} left the model in {'train' if model.training else 'eval'} mode"


# --- defaults: one seed, device=None picks, progress is a bool ------------------------------------

def _parameters():
    """(qualified name, parameter) for every public function, class and method of every module."""
    for mod_name in MODULES:
        module = importlib.import_module(f"cvlab.{mod_name}")
        for public in module.__all__:
            obj = getattr(module, public)
            funcs = [(public, obj)] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                funcs += [(f"{public}.{n}", f) for n, f in vars(obj).items()
                          if inspect.isfunction(f) and (n == "__init__" or not n.startswith("_"))]
            for qual, f in funcs:
                for p in inspect.signature(f).parameters.values():
                    yield f"cvlab.{mod_name}.{qual}", p


def test_argument_defaults_follow_the_contract():
    seeds, devices, progress = [], [], []
    for qual, p in _parameters():
        if p.name == "seed":
            # DEFAULT_SEED everywhere; None only where it means "do not reseed" (fit)
            seeds.append((qual, p.default))
        elif p.name == "device":
            devices.append((qual, p.default))
        elif p.name == "progress":
            progress.append((qual, p.default))
    assert len(seeds) >= 5 and len(devices) >= 5 and len(progress) >= 3  # the check has something to check
    assert [q for q, d in seeds if d is not None and d != DEFAULT_SEED] == []
    assert [q for q, d in seeds if d is None] == ["cvlab.training.fit"]
    assert [q for q, d in devices if d is not None] == []
    assert [q for q, d in progress if not isinstance(d, bool)] == []


def test_the_command_line_seed_is_the_default_seed():
    from cvlab.cli import build_parser
    assert build_parser().parse_args(["train"]).seed == DEFAULT_SEED == 0
