"""cvlab.checkpoints: atomic save and safe load of models, and whole training states for resume."""
import os
import random

import numpy as np
import pytest
import torch

from cvlab import checkpoints as C
from cvlab.loaders import InMemoryLoader
from cvlab.models import LinearModel, TinyVGG


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TinyVGG(hidden_units=4).eval()
    path = C.save_checkpoint(tmp_path / "sub" / "tiny.pt", model, model_kwargs={"hidden_units": 4},
                             class_names=["a", "b"], metrics={"test_acc": 88.5}, epoch=3)
    fresh = TinyVGG(hidden_units=4).eval()
    ckpt = C.load_checkpoint(path, fresh)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))
    assert ckpt["metrics"] == {"test_acc": 88.5} and ckpt["epoch"] == 3 and ckpt["arch"] == "TinyVGG"
    assert os.listdir(tmp_path / "sub") == ["tiny.pt"]  # no temporary file left behind


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = LinearModel()
    path = C.save_checkpoint(tmp_path / "m.pt", model, metrics={"v": 1})

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(path, model, metrics={"v": 2})
    monkeypatch.undo()
    assert C.load_checkpoint(path)["metrics"] == {"v": 1}
    assert os.listdir(tmp_path) == ["m.pt"]


def test_checkpoint_of_another_architecture(tmp_path):
    path = C.save_checkpoint(tmp_path / "lin.pt", LinearModel())
    with pytest.raises(C.CheckpointError, match="holds a 'LinearModel' model, but a 'TinyVGG'"):
        C.load_checkpoint(path, TinyVGG())


def test_checkpoint_with_other_shapes(tmp_path):
    path = C.save_checkpoint(tmp_path / "t.pt", TinyVGG(hidden_units=4), model_kwargs={"hidden_units": 4})
    with pytest.raises(C.CheckpointError, match="hidden_units"):
        C.load_checkpoint(path, TinyVGG(hidden_units=8))


def test_corrupt_and_missing_checkpoints(tmp_path):
    path = C.save_checkpoint(tmp_path / "m.pt", LinearModel())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(C.CheckpointError, match="truncated or corrupt"):
        C.load_checkpoint(path, LinearModel())
    with pytest.raises(C.CheckpointError, match="no checkpoint at"):
        C.load_checkpoint(tmp_path / "none.pt")
    torch.save(LinearModel().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(C.CheckpointError, match="not written by cvlab"):
        C.load_checkpoint(tmp_path / "bare.pt", LinearModel())


def test_unloadable_entries_are_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match=r"checkpoint\['epoch'\] is a numpy"):
        C.save_checkpoint(tmp_path / "m.pt", LinearModel(), epoch=np.int64(3))
    assert not (tmp_path / "m.pt").exists()


# --- training states: everything resume needs -----------------------------------------------------

def _trained(toy_data, seed):
    """A model, its Adam optimizer after two steps (so it has state) and a shuffling loader."""
    images, labels = toy_data
    torch.manual_seed(seed)
    model = LinearModel(in_features=64, num_classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = InMemoryLoader(images, labels, 50, shuffle=True, seed=seed)
    for x, y in list(loader)[:2]:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, opt, loader


def test_training_state_round_trip(toy_data, tmp_path):
    model, opt, loader = _trained(toy_data, seed=1)
    history = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}]
    torch.manual_seed(11)
    np.random.seed(12)
    random.seed(13)
    path = C.save_training_state(tmp_path / "last.pt", model, epoch=2, optimizer=opt, history=history,
                                 train_loader=loader, class_names=["dark", "bright"])
    # what would happen next in the uninterrupted run
    expected = (torch.rand(4), np.random.rand(), random.random(), [y.tolist() for _, y in loader])

    model2, opt2, loader2 = _trained(toy_data, seed=2)  # other weights, optimizer state and shuffling
    torch.manual_seed(999)
    state = C.load_training_state(path, model2, opt2, train_loader=loader2)
    assert state["epoch"] == 2 and state["history"] == history and state["class_names"] == ["dark", "bright"]
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    saved, loaded = opt.state_dict(), opt2.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for k in saved["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(saved["state"][k][name], loaded["state"][k][name]), (k, name)
    assert torch.equal(torch.rand(4), expected[0])  # torch's random state is restored
    assert np.random.rand() == expected[1] and random.random() == expected[2]  # NumPy's and Python's too
    assert [y.tolist() for _, y in loader2] == expected[3]  # and the loader shuffles as the saved one would


def test_training_state_restores_a_scheduler(toy_data, tmp_path):
    model, opt, _ = _trained(toy_data, seed=1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    for _ in range(3):
        opt.step()
        sched.step()
    C.save_training_state(tmp_path / "last.pt", model, epoch=3, optimizer=opt, scheduler=sched)
    model2, opt2, _ = _trained(toy_data, seed=2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1, gamma=0.5)
    C.load_training_state(tmp_path / "last.pt", model2, opt2, scheduler=sched2)
    assert sched2.last_epoch == 3 and sched2.get_last_lr() == sched.get_last_lr()


def test_load_training_state_refuses_a_weights_only_checkpoint(toy_data, tmp_path):
    model, opt, _ = _trained(toy_data, seed=1)
    path = C.save_checkpoint(tmp_path / "best.pt", model)
    with pytest.raises(C.CheckpointError, match="weights only") as info:
        C.load_training_state(path, model, opt)
    assert str(path) in str(info.value)
