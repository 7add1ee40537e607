"""Hostile command lines for ``python -m cvlab train`` / ``setup`` (issue 9): every option answered
with its exit status and one line that names the option and the fix, never a stack trace.

Exit status 2: a bad command line, found before anything is trained or written (the numbers, the
paths, the device, the output folder, the --resume file, the data the options ask for).
Exit status 1: the run started and failed (Fashion-MNIST not set up, an unreadable image).

Each case runs ``cvlab.__main__.main`` in this process (no start-up cost) with a fresh, not yet
existing ``--output-dir``, and asserts that a refused run leaves nothing behind.
"""
import argparse
import os

import pytest
import torch

from cvlab.__main__ import main
from cvlab.checkpoints import save_checkpoint, save_training_state
from cvlab.datasets import write_image_folder
from cvlab.models import MLP, LinearModel


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    """The files the cases point at: small image folders, a file, read-only and used folders, checkpoints."""
    root = tmp_path_factory.mktemp("hostile")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8, generator=g)
    write_image_folder(root / "imgs" / "train", images[:6], torch.tensor([0, 0, 0, 1, 1, 1]), ["cat", "dog"])
    write_image_folder(root / "imgs" / "val", images[6:], torch.tensor([0, 0, 1, 1]), ["cat", "dog"])
    write_image_folder(root / "mismatch" / "train", images[:4], torch.tensor([0, 0, 1, 1]), ["cat", "dog"])
    write_image_folder(root / "mismatch" / "val", images[4:8], torch.tensor([0, 0, 1, 1]), ["cat", "bird"])
    write_image_folder(root / "noval" / "train", images[:4], torch.tensor([0, 0, 1, 1]), ["cat", "dog"])
    write_image_folder(root / "broken" / "train", images[:4], torch.tensor([0, 0, 1, 1]), ["cat", "dog"])
    write_image_folder(root / "broken" / "val", images[4:8], torch.tensor([0, 0, 1, 1]), ["cat", "dog"])
    (root / "broken" / "train" / "cat" / "zero-bytes.png").write_bytes(b"")
    for split in ("train", "val"):
        (root / "empty" / split / "cat").mkdir(parents=True)
    (root / "a_file.txt").write_text("not a folder\n")
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    (root / "oldrun").mkdir()
    (root / "oldrun" / "best.pt").write_bytes(b"an earlier run's best model")
    (root / "no_last").mkdir()
    (root / "nodata").mkdir()
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.pt").write_bytes(b"these are not the weights you are looking for" * 10)
    torch.save({"arch": "LinearModel", "state_dict": {}, "payload": argparse.Namespace(cmd="rm -rf ~")},
               root / "unsafe.pt")
    info = {"arch": "LinearModel", "model_kwargs": {"in_features": 784, "num_classes": 10}}
    lin = LinearModel(784, 10)
    opt = torch.optim.AdamW(lin.parameters())
    save_training_state(root / "linear_last.pt", lin, epoch=3, optimizer=opt, **info)
    save_checkpoint(root / "linear_best.pt", lin, epoch=3, **info)
    (root / "r1").mkdir()
    save_training_state(root / "r1" / "last.pt", lin, epoch=1, optimizer=opt, **info)
    mlp = MLP(784, 16, 10)
    save_training_state(root / "mlp_last.pt", mlp, epoch=1, optimizer=torch.optim.SGD(mlp.parameters(), lr=0.1),
                        arch="MLP", model_kwargs={"in_features": 784, "hidden_units": 16, "num_classes": 10})
    yield root
    (root / "ro").chmod(0o755)


not_root = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                              reason="root may write anywhere, so a read-only folder cannot be tested as root")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
no_mps = pytest.mark.skipif(hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
                            reason="this machine has MPS")
FM = ["--train-limit", "64", "--batch-size", "32"]  # Fashion-MNIST cases: a quick run should one pass by mistake


def case(args, code, *expected, env=None, marks=(), id=None, command="train"):
    """args and expected texts may hold {root} (the fixture's folder); env: environment variables to set."""
    return pytest.param(command, args, code, expected, env or {}, marks=marks, id=id)


CASES = [
    # --- numbers: NaN, inf, zero, negative, absurdly large, not a number -------------------------
    case(["--lr", "nan"], 2, "argument --lr: must be a finite number, got nan", "e.g. 1e-2", id="lr-nan"),
    case(["--lr", "inf"], 2, "argument --lr: must be a finite number, got inf", id="lr-inf"),
    case(["--lr", "-1"], 2, "argument --lr: must be > 0, got -1", "e.g. 1e-2 for AdamW", id="lr-negative"),
    case(["--lr", "0"], 2, "argument --lr: must be > 0", id="lr-zero"),
    case(["--lr", "fast"], 2, "argument --lr: 'fast' is not a number", id="lr-text"),
    case(["--epochs", "0"], 2, "argument --epochs: must be > 0 and <= 10000, got 0", "e.g. 3", id="epochs-zero"),
    case(["--epochs", "-3"], 2, "argument --epochs: must be > 0", id="epochs-negative"),
    case(["--epochs", "100000"], 2, "argument --epochs: must be > 0 and <= 10000, got 100000", id="epochs-huge"),
    case(["--epochs", "2.5"], 2, "argument --epochs: '2.5' is not a whole number", id="epochs-fraction"),
    case(["--batch-size", "0"], 2, "argument --batch-size: must be > 0, got 0", "e.g. 128", id="batch-zero"),
    case(["--batch-size", "-8"], 2, "argument --batch-size: must be > 0, got -8", id="batch-negative"),
    case(["--batch-size", "70000"], 2, "argument --batch-size: 70000 is larger than the training set (60,000 images)",
         "use at most 60000", id="batch-larger-than-fashion-mnist"),
    case(["--train-limit", "100", "--batch-size", "128"], 2,
         "argument --batch-size: 128 is larger than the training set (100 images after --train-limit 100)",
         "use at most 100", id="batch-larger-than-train-limit"),
    case(["--weight-decay", "-1"], 2, "argument --weight-decay: must be >= 0 and <= 1, got -1", "0 for none",
         id="wd-negative"),
    case(["--weight-decay", "nan"], 2, "argument --weight-decay: must be a finite number, got nan", id="wd-nan"),
    case(["--weight-decay", "5"], 2, "argument --weight-decay: must be >= 0 and <= 1, got 5", id="wd-huge"),
    case(["--max-grad-norm", "nan"], 2, "argument --max-grad-norm: must be a finite number, got nan",
         "leave it out for no clipping", id="clip-nan"),
    case(["--max-grad-norm", "inf"], 2, "argument --max-grad-norm: must be a finite number",
         "leave it out for no clipping", id="clip-inf"),
    case(["--max-grad-norm", "0"], 2, "argument --max-grad-norm: must be > 0", id="clip-zero"),
    case(["--image-size", "0"], 2, "argument --image-size: must be > 0", id="size-zero"),
    case(["--image-size", "4096"], 2, "argument --image-size: must be > 0 and <= 1024, got 4096", id="size-huge"),
    case(["--image-size", "4", "--model", "CompactCNN"], 2,
         "argument --image-size: CompactCNN needs images of at least 8 pixels", "use a larger --image-size",
         id="size-too-small-for-model"),
    case(["--image-size", "2", "--model", "TinyVGG"], 2, "argument --image-size: TinyVGG needs images of at least 4",
         id="size-too-small-for-tinyvgg"),
    case(["--num-workers", "-1"], 2, "argument --num-workers: must be >= 0", "0 loads in the main process",
         id="workers-negative"),
    case(["--num-workers", "1000"], 2, "argument --num-workers: must be >= 0 and <= 64, got 1000", id="workers-huge"),
    case(["--patience", "0"], 2, "argument --patience: must be > 0", id="patience-zero"),
    case(["--seed", "-1"], 2, "argument --seed: must be >= 0", id="seed-negative"),
    case(["--seed", str(2**40)], 2, "argument --seed: must be >= 0 and <= 4294967295", id="seed-huge"),
    case(["--train-limit", "0"], 2, "argument --train-limit: must be > 0", "leave it out to use every training image",
         id="limit-zero"),
    case(["--train-limit", "70000"], 2, "argument --train-limit: Fashion-MNIST has 60,000 training images, got 70000",
         "use at most 60000", id="limit-larger-than-fashion-mnist"),
    # --- devices this machine does not have -----------------------------------------------------
    case(["--device", "gpu"], 2, "argument --device: 'gpu' is not a device name; use cpu, cuda, cuda:N or mps",
         "this machine has: cpu", id="device-gpu"),
    case(["--device", "cuda:7"], 2, "argument --device: 'cuda:7' asked for", "this machine has: cpu",
         "leave --device out", id="device-cuda7"),
    case(["--device", "cuda"], 2, "argument --device: 'cuda' asked for, but CUDA is not available here",
         "this machine has: cpu", marks=no_cuda, id="device-cuda"),
    case(["--device", "mps"], 2, "argument --device: 'mps' asked for, but Apple MPS is not available here",
         marks=no_mps, id="device-mps"),
    case(["--device", "meta"], 2, "argument --device: 'meta': cvlab trains on cpu, cuda or mps", id="device-meta"),
    case([], 2, "argument --device (from $CVLAB_DEVICE): 'gpu' is not a device name", env={"CVLAB_DEVICE": "gpu"},
         id="device-from-env"),
    # --- output folders ---------------------------------------------------------------------------
    case(["--output-dir", "{root}/a_file.txt"], 2, "argument --output-dir: {root}/a_file.txt is a file, not a folder",
         "pick a folder name", id="output-is-a-file"),
    case(["--output-dir", "{root}/a_file.txt/run"], 2,
         "argument --output-dir: {root}/a_file.txt is a file, so {root}/a_file.txt/run cannot be made",
         id="output-inside-a-file"),
    case(["--output-dir", "{root}/ro/run"], 2, "argument --output-dir: cannot write in {root}/ro (no write permission)",
         "pick a folder you can write to", marks=not_root, id="output-read-only"),
    case(["--output-dir", "{root}/oldrun"], 2, "argument --output-dir: {root}/oldrun already holds best.pt of an earlier run",
         "pass --overwrite", "pick another folder", "--resume {root}/oldrun/last.pt", id="output-holds-a-run"),
    # --- data folders -----------------------------------------------------------------------------
    case(["--data-dir", "{root}/missing"], 2, "argument --data-dir: no folder {root}/missing",
         "train/<class>/<images>", "leave --data-dir out for Fashion-MNIST", id="data-missing"),
    case(["--data-dir", "{root}/a_file.txt"], 2, "argument --data-dir: {root}/a_file.txt is a file, not a folder",
         id="data-is-a-file"),
    case(["--data-dir", "{root}/noval"], 2, "argument --data-dir: {root}/noval has no val/ folder",
         "{root}/noval/val/<class>/<images>", id="data-without-val"),
    case(["--data-dir", "{root}/empty"], 2, "argument --data-dir:", "{root}/empty/train", id="data-without-images"),
    case(["--data-dir", "{root}/mismatch"], 2, "argument --data-dir: train/ and val/ hold different classes",
         "give both the same class folders", id="data-other-classes"),
    case(["--data-dir", "{root}/imgs", "--image-size", "8", "--train-limit", "50"], 2,
         "argument --train-limit: {root}/imgs/train has 6 images, got 50", "use at most 6", id="limit-larger-than-folder"),
    case(["--data-dir", "{root}/imgs", "--image-size", "8", "--batch-size", "7"], 2,
         "argument --batch-size: 7 is larger than the training set (6 images)", "use at most 6",
         id="batch-larger-than-folder"),
    # --- --resume ---------------------------------------------------------------------------------
    case(["--resume", "{root}/nope.pt"], 2, "argument --resume: no file {root}/nope.pt",
         "give the last.pt of an earlier run", id="resume-missing"),
    case(["--resume", "{root}/empty.pt"], 2, "argument --resume: {root}/empty.pt is empty (0 bytes",
         "start a new run without --resume", id="resume-empty"),
    case(["--resume", "{root}/garbage.pt"], 2, "argument --resume: {root}/garbage.pt is not a readable checkpoint",
         id="resume-garbage"),
    case(["--resume", "{root}/unsafe.pt"], 2, "argument --resume: {root}/unsafe.pt", id="resume-unsafe-pickle"),
    case(["--resume", "{root}/linear_best.pt", "--epochs", "5"], 2,
         "argument --resume: {root}/linear_best.pt holds weights only, not a training state",
         "resume from the last.pt next to it", id="resume-weights-only"),
    case(["--resume", "{root}/mlp_last.pt", "--epochs", "5"], 2,
         "argument --resume: {root}/mlp_last.pt is a checkpoint of MLP, not of LinearModel", "pass --model MLP",
         id="resume-other-model"),
    case(["--resume", "{root}/no_last"], 2, "argument --resume: {root}/no_last is a folder without last.pt",
         id="resume-folder-without-last"),
    case(["--resume", "{root}/linear_last.pt", "--epochs", "2"], 2,
         "argument --epochs: {root}/linear_last.pt has already finished 3 epoch(s)", "e.g. --epochs 4",
         id="resume-nothing-left"),
    case(["--resume", "{root}/linear_last.pt", "--epochs", "5", "--data-dir", "{root}/imgs", "--image-size", "8",
          "--batch-size", "4"], 2, "argument --resume: {root}/linear_last.pt was trained with other options (in_features=784 there, 192 now",
         "start a new run", id="resume-other-options"),
    case(["--resume", "{root}/r1/last.pt", "--output-dir", "{root}/r1", "--overwrite", "--epochs", "5"], 2,
         "argument --overwrite: it would delete {root}/r1/last.pt, which --resume continues from", "drop --overwrite",
         id="resume-and-overwrite-same-folder"),
    # --- pretrained backbones (cvlab.backbones) ---------------------------------------------------
    case(["--freeze-backbone"], 2, "argument --freeze-backbone: goes with a pretrained --model (mobilenet_v2); "
         "LinearModel trains from scratch", "drop --freeze-backbone", id="freeze-without-backbone"),
    case(["--backbone-lr-factor", "0.5"], 2, "argument --backbone-lr-factor: goes with a pretrained --model",
         id="lr-factor-without-backbone"),
    case(["--model", "mobilenet_v2", "--unfreeze-at", "1"], 2, "argument --unfreeze-at: the backbone would train "
         "from epoch 1", "leave --unfreeze-at out", id="unfreeze-at-1"),
    case(["--model", "mobilenet_v2", "--unfreeze-at", "5", "--epochs", "3"], 2,
         "argument --unfreeze-at: epoch 5 comes after the run ends (--epochs 3): use 2..3", id="unfreeze-after-the-end"),
    case(["--model", "mobilenet_v2", "--channels", "1"], 2, "argument --channels: mobilenet_v2's ImageNet weights "
         "take 3-channel images", id="pretrained-grayscale"),
    case(["--model", "mobilenet_v2", "--backbone-lr-factor", "0"], 2, "argument --backbone-lr-factor: must be > 0",
         id="lr-factor-zero"),
    case(["--model", "mobilenet_v2", "--image-size", "16"], 2,
         "argument --image-size: mobilenet_v2 needs images of at least 32 pixels", id="pretrained-too-small"),
    case(["--resume", "{root}/linear_last.pt", "--model", "mobilenet_v2", "--epochs", "5"], 2,
         "argument --resume: {root}/linear_last.pt is a checkpoint of LinearModel, not of mobilenet_v2",
         "pass --model LinearModel", id="resume-other-model-pretrained"),
    # --- several processes (cvlab.distributed); no process group is started for these ----------
    case(["--dist-timeout", "0"], 2, "argument --dist-timeout: must be >= 1 and <= 86400 seconds, got 0",
         id="dist-timeout-zero"),
    case(FM, 2, "argument torchrun environment: RANK set but not WORLD_SIZE, LOCAL_RANK", "start the run with torchrun",
         env={"RANK": "0"}, id="torchrun-env-partial"),
    case(["--train-limit", "64", "--batch-size", "33"], 2,
         "argument --batch-size: 33 images per step cannot be split evenly over 2 processes", "use a multiple of 2",
         env={"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, id="batch-not-divisible-by-processes"),
    # --- setup ------------------------------------------------------------------------------------
    case(["--root", "{root}/a_file.txt"], 2, "argument --root: {root}/a_file.txt is a file, not a folder",
         command="setup", id="setup-root-is-a-file"),
    case(["--root", "{root}/ro/data"], 2, "argument --root: cannot write in {root}/ro", command="setup",
         marks=not_root, id="setup-root-read-only"),
    # --- exit 1: the run started and failed -------------------------------------------------------
    case(FM, 1, "cvlab train: Fashion-MNIST not found in {root}/nodata/FashionMNIST/raw", "python course.py setup",
         env={"CVLAB_DATA": "{root}/nodata"}, id="fashion-mnist-not-set-up"),
    case(["--data-dir", "{root}/broken", "--image-size", "8", "--batch-size", "2", "--scheduler", "none"], 1,
         "cvlab train:", "zero-bytes.png", id="unreadable-image"),
]


def _fill(text: str, root) -> str:
    return text.replace("{root}", str(root))


@pytest.mark.parametrize("command, args, code, expected, env", CASES)
def test_hostile_command_line(command, args, code, expected, env, h, tmp_path, monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, _fill(value, h))
    if "CVLAB_DEVICE" not in env:
        monkeypatch.delenv("CVLAB_DEVICE", raising=False)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # this process is not one of torchrun's unless a case says so
        if name not in env:
            monkeypatch.delenv(name, raising=False)
    fresh = tmp_path / "fresh-run"
    base = (["--no-progress", "--model", "LinearModel", "--epochs", "1", "--output-dir", str(fresh)]
            if command == "train" else ["--no-download"])
    argv = [command, *base, *(_fill(a, h) for a in args)]
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert status == code, f"exit status {status}, expected {code}; stderr: {err}"
    if code == 2:
        lines = [line for line in err.splitlines() if f"cvlab {command}: error:" in line]
        assert len(lines) == 1, err
        message = lines[0]
        assert out == "", "a refused command line prints nothing else"
        assert not fresh.exists(), "a refused run writes nothing"
    else:
        lines = [line for line in err.splitlines() if line.startswith(f"cvlab {command}:")]
        assert len(lines) == 1, err
        message = lines[0]
        assert not fresh.exists() or any(fresh.iterdir()), "a failed run leaves no empty run folder behind"
    for text in expected:
        assert _fill(text, h) in message, f"{_fill(text, h)!r} not in {message!r}"


def test_the_refused_rerun_keeps_the_folder_as_it_was(h, capsys):
    """(With case output-holds-a-run:) the earlier run's file is untouched, byte for byte."""
    assert (h / "oldrun" / "best.pt").read_bytes() == b"an earlier run's best model"
    assert sorted(p.name for p in (h / "oldrun").iterdir()) == ["best.pt"]


@pytest.mark.parametrize("command, option", [("train", "--output-dir"), ("setup", "--root")])
def test_a_read_only_folder_also_as_root(command, option, h, tmp_path, monkeypatch, capsys):
    """The read-only cases above are skipped as root (root may write anywhere); here os.access is
    told that {root}/ro is read-only, so the check and its message are tested under any user."""
    import cvlab.cli as cli
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False if str(path) == str(h / "ro")
                        else real_access(path, mode))
    fresh = h / "ro" / "new-folder"
    extra = ["--no-progress", "--model", "LinearModel", "--epochs", "1"] if command == "train" else ["--no-download"]
    with pytest.raises(SystemExit) as info:
        main([command, *extra, option, str(fresh)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}: cannot write in {h / 'ro'} (no write permission): pick a folder you can " \
           "write to" in err
    assert not fresh.exists()
