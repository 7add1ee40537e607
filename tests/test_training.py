import math

import pytest
import torch
from torch import nn

from cvlab.checkpoints import CheckpointError, load_checkpoint
from cvlab.history import History, TrainingInterrupted
from cvlab.loaders import InMemoryLoader
from cvlab.models import LinearModel
from cvlab.training import evaluate, fit, train_one_epoch


def _model(seed=0):
    torch.manual_seed(seed)
    return LinearModel(in_features=64, num_classes=2)


def _loaders(toy_data, batch_size=32, seed=3):
    images, labels = toy_data
    return (InMemoryLoader(images[:160], labels[:160], batch_size, shuffle=True, seed=seed),
            InMemoryLoader(images[160:], labels[160:], 16))


def test_steps_learn_and_weight_by_sample(toy_data):
    train, val = _loaders(toy_data)
    model, loss_fn = _model(), nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before, _ = evaluate(model, val, loss_fn)
    for _ in range(5):
        train_one_epoch(model, train, loss_fn, opt)
    after, acc = evaluate(model, val, loss_fn)
    assert after < before and acc == 100.0
    # uneven batches (16, 16, 8): the step's accuracy equals the accuracy over all samples
    images, labels = toy_data
    uneven = InMemoryLoader(images[:40], labels[:40], 16)
    with torch.no_grad():
        logits = model(images[:40].float() / 255)
    expected_loss = nn.functional.cross_entropy(logits, labels[:40]).item()
    expected_acc = 100 * (logits.argmax(1) == labels[:40]).float().mean().item()
    loss, acc = evaluate(model, uneven, loss_fn)
    assert loss == pytest.approx(expected_loss, rel=1e-5) and acc == pytest.approx(expected_acc)


def test_fit_history_columns(toy_data):
    train, val = _loaders(toy_data)
    h = fit(_model(), train, val, epochs=3, lr=0.05, device="cpu", progress=False)
    assert isinstance(h, History) and len(h) == 3 and not h.interrupted
    assert set(h.last()) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert h["epoch"] == [1, 2, 3] and all(0 <= a <= 100 for a in h["val_acc"])
    assert h.total_seconds == pytest.approx(sum(h["seconds"]))
    assert h.best("val_loss", mode="min")["val_loss"] == min(h["val_loss"])
    with pytest.raises(KeyError, match="columns"):
        h["accuracy"]
    only_train = fit(_model(), train, epochs=1, progress=False, device="cpu")
    assert "val_acc" not in only_train.last()


def test_fit_equals_hand_written_loop(toy_data):
    train, val = _loaders(toy_data)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    hand = []
    for _ in range(2):
        tl, ta = train_one_epoch(model, train, loss_fn, opt)
        vl, va = evaluate(model, val, loss_fn)
        hand.append((tl, ta, vl, va))
    train, val = _loaders(toy_data)
    model = _model()
    h = fit(model, train, val, epochs=2, optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
            progress=False, device="cpu")
    assert [(r["train_loss"], r["train_acc"], r["val_loss"], r["val_acc"]) for r in h.records] == hand


def test_default_optimizer_is_adam_with_lr():
    from cvlab.training import _default_optimizer
    opt = _default_optimizer(_model(), 0.005)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["lr"] == 0.005


def test_fit_is_deterministic_with_a_seed(toy_data):
    runs = []
    for _ in range(2):
        train, val = _loaders(toy_data)
        h = fit(_model(), train, val, epochs=2, progress=False, seed=1, device="cpu")
        runs.append([(r["train_loss"], r["val_acc"]) for r in h.records])
    assert runs[0] == runs[1]


def test_scheduler_steps_per_batch(toy_data):
    train, val = _loaders(toy_data)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=2 * len(train))
    fit(model, train, val, epochs=2, optimizer=opt, scheduler=sched, progress=False, device="cpu")
    assert sched.last_epoch == 2 * len(train)


class RecordingFactory:
    """A scheduler factory ``(optimizer, total_steps) -> scheduler`` that remembers its calls."""

    def __init__(self):
        self.calls, self.made = [], []

    def __call__(self, optimizer, total_steps):
        self.calls.append((optimizer, total_steps))
        self.made.append(torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0))
        return self.made[-1]


@pytest.mark.parametrize("scheduler_step", ["batch", "epoch"])
def test_scheduler_factory_gets_the_number_of_steps(toy_data, scheduler_step):
    train, val = _loaders(toy_data)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    factory = RecordingFactory()
    fit(model, train, val, epochs=3, optimizer=opt, scheduler=factory, scheduler_step=scheduler_step,
        progress=False, device="cpu")
    steps = 3 * len(train) if scheduler_step == "batch" else 3
    assert len(factory.calls) == 1 and factory.calls[0][0] is opt and factory.calls[0][1] == steps
    assert factory.made[0].last_epoch == steps  # and fit stepped it exactly that often


def test_scheduler_factory_one_cycle(toy_data):
    """The recipe the notebooks use: no ``epochs * len(loader)`` to compute by hand."""
    train, val = _loaders(toy_data)
    model = _model()
    h = fit(model, train, val, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False,
            device="cpu", scheduler=lambda o, n: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=n))
    assert len(h) == 2 and 0.01 < h["lr"][0] < 0.1 and h["lr"][1] < 0.01  # annealed from the peak toward zero


def test_a_scheduler_that_is_neither_scheduler_nor_factory_is_refused(toy_data):
    train, val = _loaders(toy_data)
    with pytest.raises(TypeError, match="scheduler must be .*got float"):
        fit(_model(), train, val, epochs=1, scheduler=0.1, progress=False, device="cpu")


class InterruptingLoader:
    """Yields the wrapped loader's batches, then raises KeyboardInterrupt in epoch ``stop_at``."""

    def __init__(self, loader, stop_at):
        self.loader, self.stop_at, self.epoch = loader, stop_at, 0
        self.generator = loader.generator  # fit saves the shuffling state it finds here

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.epoch += 1
        for i, batch in enumerate(self.loader):
            if self.epoch == self.stop_at and i == 2:
                raise KeyboardInterrupt
            yield batch


def test_interrupt_is_raised_with_history_and_checkpoints(toy_data, tmp_path):
    """A stop (Ctrl-C, the stop button, nbval's time limit) is re-raised, never taken for a finished run."""
    train, val = _loaders(toy_data)
    with pytest.raises(TrainingInterrupted, match=r"interrupted after 2 finished epoch\(s\).*\.history.*"
                                                  r"last\.pt and best\.pt in .* resume_from") as info:
        fit(_model(), InterruptingLoader(train, stop_at=3), val, epochs=5, lr=0.05, progress=False, device="cpu",
            checkpoint_dir=tmp_path, monitor="val_acc", checkpoint_info={"class_names": ["dark", "bright"]})
    assert isinstance(info.value, KeyboardInterrupt)
    h = info.value.history
    assert h.interrupted and len(h) == 2
    best = load_checkpoint(tmp_path / "best.pt", _model())
    assert best["metrics"]["val_acc"] == max(h["val_acc"]) and best["class_names"] == ["dark", "bright"]
    last = load_checkpoint(tmp_path / "last.pt", _model())
    assert last["epoch"] == 2 and len(last["history"]) == 2


def _dropout_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(64, 2))


def _run(toy_data, ckpt_dir, epochs, stop_at=None, resume=False):
    """Train with dropout, a per-batch one-cycle schedule and a shuffling loader."""
    train, val = _loaders(toy_data, seed=5)
    model = _dropout_model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=4 * len(train))
    loader = InterruptingLoader(train, stop_at) if stop_at else train
    h = fit(model, loader, val, epochs=epochs, optimizer=opt, scheduler=sched, progress=False, device="cpu",
            checkpoint_dir=ckpt_dir, resume_from=(ckpt_dir / "last.pt") if resume else None, seed=None)
    return h, model


def test_resume_ends_exactly_like_an_uninterrupted_run(toy_data, tmp_path):
    torch.manual_seed(123)
    full, full_model = _run(toy_data, tmp_path / "a", epochs=4)
    torch.manual_seed(123)
    with pytest.raises(TrainingInterrupted) as info:
        _run(toy_data, tmp_path / "b", epochs=4, stop_at=3)
    part = info.value.history
    assert part.interrupted and len(part) == 2
    torch.manual_seed(999)  # a different global state: resume must restore its own
    resumed, resumed_model = _run(toy_data, tmp_path / "b", epochs=4, resume=True)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h.records]
    assert strip(resumed) == strip(full)
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_errors(toy_data, tmp_path):
    train, val = _loaders(toy_data)
    fit(_model(), train, val, epochs=1, progress=False, device="cpu", checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="weights only"):
        fit(_model(), train, val, epochs=2, progress=False, device="cpu", resume_from=tmp_path / "best.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        fit(_model(), train, val, epochs=2, progress=False, device="cpu", resume_from=tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="holds a 'LinearModel' model"):
        fit(_dropout_model(), train, val, epochs=2, progress=False, device="cpu", resume_from=tmp_path / "last.pt")


def test_early_stopping(toy_data, capsys):
    train, val = _loaders(toy_data)
    model = _model()
    h = fit(model, train, val, epochs=10, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
            early_stopping_patience=2, monitor="val_acc", progress=False, device="cpu")
    assert h.stopped_early and len(h) == 3  # epoch 1 sets the best, 2 and 3 do not improve
    assert "Early stopping after epoch 3" in capsys.readouterr().out


def test_epoch_and_plateau_schedulers(toy_data):
    train, val = _loaders(toy_data)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    h = fit(model, train, val, epochs=3, optimizer=opt, scheduler=torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
            scheduler_step="epoch", progress=False, device="cpu")
    assert h["lr"] == pytest.approx([0.05, 0.025, 0.0125])
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    h = fit(model, train, val, epochs=3, optimizer=opt, scheduler=plateau, progress=False, device="cpu")
    assert h["lr"][2] < h["lr"][0]


def test_gradient_clipping(toy_data):
    norms = []

    class Recording(torch.optim.SGD):
        def step(self, closure=None):
            norms.append(torch.norm(torch.stack([p.grad.norm() for p in self.param_groups[0]["params"]])).item())
            return super().step(closure)

    train, val = _loaders(toy_data)
    model = _model()
    fit(model, train, val, epochs=1, optimizer=Recording(model.parameters(), lr=0.01), max_grad_norm=0.01,
        progress=False, device="cpu")
    assert max(norms) <= 0.01 + 1e-6


def test_bfloat16_autocast_on_cpu(toy_data):
    from cvlab.models import TinyVGG
    images, labels = toy_data
    loader = InMemoryLoader(images, labels, 50)
    torch.manual_seed(0)
    h = fit(TinyVGG(hidden_units=4, num_classes=2, image_size=8), loader, loader, epochs=2, lr=1e-2,
            amp_dtype="bfloat16", progress=False, device="cpu")
    assert all(math.isfinite(v) for v in h["train_loss"])
    with pytest.raises(ValueError, match="float16 autocast is for CUDA"):
        fit(_model(), loader, epochs=1, amp_dtype="float16", device="cpu")
    with pytest.raises(ValueError, match="amp_dtype"):
        fit(_model(), loader, epochs=1, amp_dtype="int8", device="cpu")


def test_non_finite_loss_stops_with_advice(toy_data):
    train, val = _loaders(toy_data)
    model = _model()
    with torch.no_grad():
        model.linear.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(model, train, val, epochs=1, progress=False, device="cpu")


def test_bad_arguments(toy_data):
    train, val = _loaders(toy_data)
    with pytest.raises(ValueError, match="epochs"):
        fit(_model(), train, val, epochs=0)
    with pytest.raises(ValueError, match="scheduler_step"):
        fit(_model(), train, val, scheduler_step="step")
    with pytest.raises(ValueError, match="monitor"):
        fit(_model(), train, val, monitor="accuracy")
    with pytest.raises(TypeError, match="pair of tensors"):
        train_one_epoch(_model(), [([1, 2], [0, 1])], nn.CrossEntropyLoss(), torch.optim.SGD(_model().parameters(), lr=1))
    with pytest.raises(ValueError, match="no batches"):
        evaluate(_model(), [], nn.CrossEntropyLoss())


def test_channels_last_trains_a_cnn(toy_data):
    from cvlab.models import TinyVGG
    images, labels = toy_data
    torch.manual_seed(0)
    model = TinyVGG(hidden_units=4, num_classes=2, image_size=8)
    loader = InMemoryLoader(images, labels, 50)
    h = fit(model, loader, loader, epochs=2, lr=1e-2, channels_last=True, progress=False, device="cpu")
    assert model.block_1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert h.last()["val_acc"] > 50
