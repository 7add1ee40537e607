"""Hostile cases for training and checkpoints (issue 9, items 2-4): divergence, resume with other
settings or to more epochs, and bad checkpoint files. Each case asserts the message or the result.

Categories: divergence, resume (other settings, more epochs), checkpoint files, saving (disk full,
permissions).
"""
import errno
import math
import os
import pickle
import stat

import pytest
import torch
from torch import nn

from cvlab import checkpoints as C
from cvlab.checkpoints import CheckpointError, load_checkpoint
from cvlab.loaders import InMemoryLoader
from cvlab.models import LinearModel
from cvlab.history import TrainingDiverged
from cvlab.training import fit

FIT = dict(progress=False, device="cpu")


def _model(seed=0):
    torch.manual_seed(seed)
    return LinearModel(in_features=64, num_classes=2)


def _loaders(toy_data, seed=3, noisy=False):
    """Training and validation loaders; ``noisy`` flips every 4th training label, so that the
    problem is not separable and a huge learning rate cannot land on a zero loss by luck."""
    images, labels = toy_data
    if noisy:
        labels = labels.clone()
        labels[:160:4] = 1 - labels[:160:4]
    return (InMemoryLoader(images[:160], labels[:160], 32, shuffle=True, seed=seed),
            InMemoryLoader(images[160:], labels[160:], 16))


# --- divergence ----------------------------------------------------------------------------------

def test_huge_learning_rate_stops_with_advice(toy_data):
    train, val = _loaders(toy_data, noisy=True)
    model = _model()
    with pytest.raises(TrainingDiverged) as info:
        fit(model, train, val, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=1e6), **FIT)
    msg = str(info.value)
    assert "diverged in epoch 1" in msg and "1e+06" in msg and "lower learning rate" in msg
    assert "max_grad_norm" in msg and "inputs" in msg and "no epoch finished" in msg
    assert isinstance(info.value, FloatingPointError)
    assert len(info.value.history) == 0 and info.value.history.diverged


def _blow_up_after_one_epoch(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 if e < 1 else 1e7)


def test_divergence_after_good_epochs_keeps_history_and_checkpoints(toy_data, tmp_path):
    train, val = _loaders(toy_data, noisy=True)
    model = _model()
    opt, sched = _blow_up_after_one_epoch(model)
    with pytest.raises(TrainingDiverged, match=r"diverged in epoch 2.*Learning rate at that point: 5e\+05") as info:
        fit(model, train, val, epochs=4, optimizer=opt, scheduler=sched, scheduler_step="epoch",
            checkpoint_dir=tmp_path, **FIT)
    h = info.value.history
    assert len(h) == 1 and h.diverged and "History(1 epochs, diverged)" == repr(h)
    assert str(tmp_path) in str(info.value) and "1 finished epoch(s)" in str(info.value)
    last = load_checkpoint(tmp_path / "last.pt", _model())
    assert last["epoch"] == 1 and last["history"] == h.records
    assert load_checkpoint(tmp_path / "best.pt", _model())["epoch"] == 1


def test_nan_loss_in_a_later_epoch_keeps_the_earlier_epochs(toy_data, tmp_path):
    train, val = _loaders(toy_data)

    class NaNLoss(nn.CrossEntropyLoss):
        calls = 0

        def forward(self, logits, y):
            NaNLoss.calls += torch.is_grad_enabled()  # training batches only
            loss = super().forward(logits, y)
            return loss * float("nan") if NaNLoss.calls > 2 * len(train) + 1 else loss

    with pytest.raises(TrainingDiverged, match=r"non-finite in epoch 3 .*nan.*Learning rate at that point") as info:
        fit(_model(), train, val, epochs=5, lr=1e-2, loss_fn=NaNLoss(), checkpoint_dir=tmp_path, **FIT)
    assert len(info.value.history) == 2
    assert load_checkpoint(tmp_path / "last.pt", _model())["epoch"] == 2


def test_nan_weights_raise_a_floating_point_error_with_advice(toy_data):
    train, val = _loaders(toy_data)
    model = _model()
    with torch.no_grad():
        model.linear.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(model, train, val, epochs=1, **FIT)


def test_several_parameter_groups_report_each_learning_rate(toy_data):
    train, val = _loaders(toy_data, noisy=True)
    model = _model()
    opt = torch.optim.SGD([{"params": [model.linear.weight], "lr": 1e6}, {"params": [model.linear.bias], "lr": 1e5}])
    with pytest.raises(TrainingDiverged, match=r"Learning rates at that point: 1e\+06, 1e\+05"):
        fit(model, train, val, epochs=2, optimizer=opt, **FIT)


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9),
                                      lambda p: torch.optim.AdamW(p, lr=1e-2)])
def test_normal_one_cycle_run_never_triggers_it(toy_data, make_opt):
    train, val = _loaders(toy_data)
    model = _model()
    opt = make_opt(model.parameters())
    h = fit(model, train, val, epochs=4, optimizer=opt, **FIT,
            scheduler=lambda o, n: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=n))
    assert len(h) == 4 and not h.diverged and all(math.isfinite(v) for v in h["train_loss"])


# --- resume: other settings, more epochs ---------------------------------------------------------

def _one_cycle(o, n):
    return torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=n)


def _first_run(toy_data, tmp_path, epochs=2, make_opt=lambda p: torch.optim.AdamW(p, lr=0.05), scheduler=_one_cycle,
               **kw):
    train, val = _loaders(toy_data)
    model = _model()
    h = fit(model, train, val, epochs=epochs, optimizer=make_opt(model.parameters()), scheduler=scheduler,
            checkpoint_dir=tmp_path, **FIT, **kw)
    return train, val, h


def test_resume_to_more_epochs_rebuilds_a_factory_schedule(toy_data, tmp_path, capsys):
    train, val, first = _first_run(toy_data, tmp_path)
    capsys.readouterr()
    model = _model(seed=5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    h = fit(model, train, val, epochs=3, optimizer=opt, scheduler=_one_cycle, checkpoint_dir=tmp_path,
            resume_from=tmp_path / "last.pt", **FIT)
    out = capsys.readouterr().out
    assert len(h) == 3 and h.records[:2] == first.records
    assert f"rebuilt for {3 * len(train)} steps (it was planned for {2 * len(train)})" in out
    assert f"advanced to step {2 * len(train)}" in out and "differ from those of a run planned for 3 epochs" in out
    # the learning rate continued from the 3-epoch schedule's point: it ends at that schedule's end
    ref = _one_cycle(torch.optim.AdamW(_model().parameters(), lr=0.05), 3 * len(train))
    for _ in range(3 * len(train)):
        ref.optimizer.step()
        ref.step()
    assert h.last()["lr"] == pytest.approx(ref.get_last_lr()[0])
    assert load_checkpoint(tmp_path / "last.pt", _model())["epoch"] == 3


def test_rebuilt_schedule_position_matches_the_new_schedule(toy_data, tmp_path):
    """After resuming 2 -> 4 epochs with one epoch per step (StepLR-like factory), lr follows the 4-epoch plan."""
    cosine = lambda o, n: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=n)
    train, val, first = _first_run(toy_data, tmp_path, scheduler=cosine, scheduler_step="epoch",
                                   make_opt=lambda p: torch.optim.SGD(p, lr=0.1))
    model = _model()
    h = fit(model, train, val, epochs=4, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), scheduler=cosine,
            scheduler_step="epoch", resume_from=tmp_path / "last.pt", **FIT)
    planned = [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (3, 4)]
    assert h["lr"][2:] == pytest.approx(planned, abs=1e-9)


def test_resume_same_length_with_a_factory_is_exact(toy_data, tmp_path):
    train, val, full = _first_run(toy_data, tmp_path / "a", epochs=3)
    _first_run(toy_data, tmp_path / "b", epochs=2)
    model = _model()
    # a fresh factory run planned for 3 epochs, stopped at 2, then resumed: the same total, no rebuild
    train, val = _loaders(toy_data)
    fit(model, train, val, epochs=2, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05),
        scheduler=lambda o, n: _one_cycle(o, 3 * len(train)), checkpoint_dir=tmp_path / "c", **FIT)
    model = _model(seed=9)
    h = fit(model, train, val, epochs=3, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05),
            scheduler=_one_cycle, resume_from=tmp_path / "c" / "last.pt", **FIT)
    strip = lambda r: [{k: v for k, v in x.items() if k != "seconds"} for x in r.records]
    assert strip(h) == strip(full)


def test_resume_with_a_scheduler_instance_too_short_is_refused(toy_data, tmp_path):
    train, val, _ = _first_run(toy_data, tmp_path)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    with pytest.raises(CheckpointError, match=r"planned for .* steps.*pass the scheduler as a factory"):
        fit(model, train, val, epochs=3, optimizer=opt, scheduler=_one_cycle(opt, 2 * len(train)),
            resume_from=tmp_path / "last.pt", **FIT)
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    with pytest.raises(CheckpointError, match=r"planned for 10 steps, and the scheduler given now is planned for "
                                              r"30.*factory"):
        fit(model, train, val, epochs=3, optimizer=opt, scheduler=_one_cycle(opt, 30),
            resume_from=tmp_path / "last.pt", **FIT)


@pytest.mark.parametrize("make_opt, expected", [
    (lambda p: torch.optim.SGD(p, lr=0.05), "optimizer: saved AdamW, now SGD"),
    (lambda p: torch.optim.AdamW(p, lr=0.01), "optimizer lr: saved 0.05, now 0.01"),
    (lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1), "optimizer weight_decay: saved 0.01, now 0.1"),
    (lambda p: torch.optim.AdamW(p, lr=0.05, betas=(0.8, 0.99)), "optimizer betas: saved [0.9, 0.999], now [0.8, 0.99]"),
])
def test_resume_with_another_optimizer_is_refused(toy_data, tmp_path, make_opt, expected):
    train, val, _ = _first_run(toy_data, tmp_path)
    model = _model()
    with pytest.raises(CheckpointError) as info:
        fit(model, train, val, epochs=3, optimizer=make_opt(model.parameters()), scheduler=_one_cycle,
            resume_from=tmp_path / "last.pt", **FIT)
    assert expected in str(info.value) and "start a new run" in str(info.value)
    assert "last.pt" in str(info.value)


def test_resume_with_an_implementation_flag_changed_is_accepted(toy_data, tmp_path):
    train, val, _ = _first_run(toy_data, tmp_path)
    model = _model()
    h = fit(model, train, val, epochs=2, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05, foreach=False),
            scheduler=_one_cycle, resume_from=tmp_path / "last.pt", **FIT)
    assert len(h) == 2


@pytest.mark.parametrize("scheduler, step, expected", [
    (None, "batch", "scheduler: saved OneCycleLR, now none"),
    (lambda o, n: torch.optim.lr_scheduler.StepLR(o, 1), "epoch", "scheduler: saved OneCycleLR, now StepLR"),
    (lambda o, n: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=n), "batch",
     "scheduler max_lr: saved [0.05], now [0.1]"),
    (lambda o, n: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=n, pct_start=0.5), "batch",
     "scheduler pct_start: saved 0.3, now 0.5"),
])
def test_resume_with_another_scheduler_is_refused(toy_data, tmp_path, scheduler, step, expected):
    train, val, _ = _first_run(toy_data, tmp_path)
    model = _model()
    with pytest.raises(CheckpointError) as info:
        fit(model, train, val, epochs=3, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05), scheduler=scheduler,
            scheduler_step=step, resume_from=tmp_path / "last.pt", **FIT)
    assert expected in str(info.value)


def test_resume_of_a_step_schedule_with_other_settings(toy_data, tmp_path):
    step = lambda g: (lambda o, n: torch.optim.lr_scheduler.StepLR(o, 1, gamma=g))
    train, val, _ = _first_run(toy_data, tmp_path, scheduler=step(0.5), scheduler_step="epoch")
    model = _model()
    with pytest.raises(CheckpointError, match="scheduler gamma: saved 0.5, now 0.1"):
        fit(model, train, val, epochs=3, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05), scheduler=step(0.1),
            scheduler_step="epoch", resume_from=tmp_path / "last.pt", **FIT)


def test_resume_longer_with_a_setting_derived_from_the_length(toy_data, tmp_path, capsys):
    """The CLI's step schedule: step_size = total // 3 changes with the length; the same factory is accepted."""
    step = lambda o, n: torch.optim.lr_scheduler.StepLR(o, step_size=max(1, n // 3), gamma=0.5)
    train, val, _ = _first_run(toy_data, tmp_path, epochs=6, scheduler=step, scheduler_step="epoch")
    model = _model()
    h = fit(model, train, val, epochs=9, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05), scheduler=step,
            scheduler_step="epoch", resume_from=tmp_path / "last.pt", **FIT)
    assert "rebuilt for 9 steps (it was planned for 6)" in capsys.readouterr().out
    assert h["lr"][6:] == pytest.approx([0.05 * 0.5 ** (e // 3) for e in (7, 8, 9)])
    model = _model()
    other = lambda o, n: torch.optim.lr_scheduler.StepLR(o, step_size=max(1, n // 3), gamma=0.1)
    with pytest.raises(CheckpointError, match="scheduler gamma: saved 0.5, now 0.1"):
        fit(model, train, val, epochs=9, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05), scheduler=other,
            scheduler_step="epoch", resume_from=tmp_path / "last.pt", **FIT)


def test_resume_longer_with_a_plateau_factory_keeps_its_state(toy_data, tmp_path, capsys):
    plateau = lambda o, n: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.3, patience=0)
    train, val, first = _first_run(toy_data, tmp_path, scheduler=plateau, scheduler_step="epoch")
    model = _model()
    h = fit(model, train, val, epochs=3, optimizer=torch.optim.AdamW(model.parameters(), lr=0.05), scheduler=plateau,
            scheduler_step="epoch", resume_from=tmp_path / "last.pt", **FIT)
    assert len(h) == 3 and "rebuilt" not in capsys.readouterr().out and h["lr"][2] <= h["lr"][1]


def test_load_training_state_refuses_another_optimizer_type(toy_data, tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    path = C.save_training_state(tmp_path / "last.pt", model, epoch=1, optimizer=opt)
    with pytest.raises(CheckpointError, match="optimizer: saved Adam, now SGD"):
        C.load_training_state(path, _model(), torch.optim.SGD(model.parameters(), lr=0.01))


def test_an_old_checkpoint_without_settings_and_another_optimizer_is_a_clear_error(toy_data, tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = C.save_checkpoint(tmp_path / "last.pt", model, epoch=1, optimizer=opt.state_dict(), rng=C.rng_state())
    other = torch.optim.SGD([{"params": [model.linear.weight]}, {"params": [model.linear.bias]}], lr=0.01)
    with pytest.raises(CheckpointError, match="another optimizer or other parameters"):
        C.load_training_state(path, _model(), other)


# --- checkpoint files ---------------------------------------------------------------------------

def _saved(tmp_path):
    return C.save_checkpoint(tmp_path / "m.pt", _model())


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty \(0 bytes\).*save \(or train\) the model again") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [1, 50, 200, 0.9])
def test_truncated_file(tmp_path, keep):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, _model())
    assert str(path) in str(info.value) and "truncated or corrupt" in str(info.value)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are my notes\n")
    with pytest.raises(CheckpointError, match="not a checkpoint at all.*check the path") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_bare_state_dict(tmp_path):
    torch.save(_model().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match=r"not written by cvlab.*model.load_state_dict"):
        load_checkpoint(tmp_path / "bare.pt", _model())


def test_pickle_of_plain_objects(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not written by cvlab"):
        load_checkpoint(path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unsafe_pickle_shows_the_whole_security_reason(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"arch": "LinearModel", "state_dict": Evil()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "refused for safety" in msg and "only if you made this file yourself" in msg.lower()
    assert "posix.system" in msg or "nt.system" in msg
    try:
        torch.load(path, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc)
    assert len(reason) > 200 and reason in msg  # whole, not cut


def test_unsafe_pickle_of_a_newer_protocol(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump(Evil(), f, protocol=4)
    with pytest.warns(UserWarning, match="pickle protocol"), pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "could run code" in msg and "Unsupported operand" in msg


def test_pickle_of_a_custom_object(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_model(), path)  # the whole module, pickled
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)


def test_a_folder_instead_of_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path)


# --- saving: disk full, permissions -----------------------------------------------------------

@pytest.mark.parametrize("where", ["save", "fsync"])
def test_disk_full_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = C.save_checkpoint(tmp_path / "m.pt", _model(), metrics={"v": 1})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(*((torch, "save") if where == "save" else (os, "fsync")), full)
    with pytest.raises(OSError, match=r"no space left to save .*m.pt \(the previous m.pt is intact\)") as info:
        C.save_checkpoint(path, _model(), metrics={"v": 2})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path)["metrics"] == {"v": 1}
    assert os.listdir(tmp_path) == ["m.pt"]


def test_disk_full_on_the_first_save(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    with pytest.raises(OSError, match="nothing was written"):
        C.save_checkpoint(tmp_path / "m.pt", _model())
    assert os.listdir(tmp_path) == []


def test_disk_full_during_fit_keeps_the_history_and_the_old_files(toy_data, tmp_path, monkeypatch):
    train, val = _loaders(toy_data)
    real_fsync, calls = os.fsync, []

    def fsync(fd):  # epoch 1 writes best.pt and last.pt; the disk is full from epoch 2 on
        calls.append(fd)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match=r"training stopped after epoch 2: its checkpoint could not be written") as info:
        fit(_model(), train, val, epochs=3, lr=1e-2, monitor="train_loss", checkpoint_dir=tmp_path, **FIT)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and "no space left to save" in str(info.value)
    assert len(info.value.history) == 2 and ".history" in str(info.value)
    assert load_checkpoint(tmp_path / "last.pt", _model())["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "last.pt"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_file_has_the_users_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = C.save_checkpoint(tmp_path / "m.pt", _model())
        plain = tmp_path / "plain"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o666 & ~umask
