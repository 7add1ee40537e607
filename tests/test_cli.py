"""``python -m cvlab train`` end to end, on a small real image folder and on Fashion-MNIST."""
import json
import subprocess
import sys

import pytest
import torch

from cvlab.__main__ import main
from cvlab.datasets import FASHION_MNIST_CLASSES, fashion_mnist_tensors, write_image_folder
from cvlab.models import load_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory, fmnist_root):
    """Real Fashion-MNIST images as PNG files: 3 classes, 40 train and 15 val images each."""
    root = tmp_path_factory.mktemp("folder")
    for split, name, n in (("train", "train", 40), ("val", "test", 15)):
        x, y = fashion_mnist_tensors(name)
        keep = torch.cat([torch.nonzero(y == c).flatten()[:n] for c in (1, 5, 8)])
        write_image_folder(root / split, x[keep], y[keep], FASHION_MNIST_CLASSES)
    return root


def test_train_on_an_image_folder_with_workers_then_resume(folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(folder), "--model", "TinyVGG", "--image-size", "32", "--batch-size", "16",
            "--lr", "5e-3", "--num-workers", "2", "--output-dir", str(out), "--no-progress", "--scheduler", "cosine"]
    assert main(args + ["--epochs", "2"]) == 0
    report = capsys.readouterr().out
    assert "best epoch" in report and "Trouser" in report and "macro avg" in report
    assert {p.name for p in out.iterdir()} == {"best.pt", "last.pt", "history.json"}
    hist = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in hist["records"]] == [1, 2]
    model, ckpt = load_model(out / "best.pt")
    assert ckpt["class_names"] == ["Bag", "Sandal", "Trouser"] and ckpt["preprocess"]["image_size"] == 32
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    # resume: the history continues from epoch 3
    assert main(args + ["--epochs", "3", "--resume", str(out / "last.pt")]) == 0
    hist = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in hist["records"]] == [1, 2, 3]


def test_train_on_fashion_mnist(tmp_path, capsys):
    out = tmp_path / "fm"
    assert main(["train", "--model", "LinearModel", "--epochs", "1", "--train-limit", "3000", "--lr", "1e-2",
                 "--output-dir", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    acc = float(text.split("val accuracy ")[1].split(" %")[0])
    assert acc > 65, "a linear model on 3,000 Fashion-MNIST images should beat 65 % after one epoch"
    assert "Ankle boot" in text


def test_bad_data_dir_exits_1_with_a_message(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "has no train/ folder" in err and "train/<class>" in err
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    assert main(["train", "--data-dir", str(tmp_path), "--no-progress"]) == 1
    assert "no class folders with images" in capsys.readouterr().err


def test_resume_from_a_missing_checkpoint(folder, tmp_path, capsys):
    assert main(["train", "--data-dir", str(folder), "--model", "TinyVGG", "--image-size", "16", "--no-progress",
                 "--resume", str(tmp_path / "nope.pt"), "--output-dir", str(tmp_path)]) == 1
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--lr", "-1"], ["--model", "ResNet"], ["--num-workers", "-2"],
                                 ["--scheduler", "warp"]])
def test_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *bad])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "cvlab", "train", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--data-dir", "--model", "--epochs", "--batch-size", "--lr", "--optimizer", "--scheduler",
                   "--image-size", "--augment", "--num-workers", "--resume", "--output-dir", "--amp", "--patience"):
        assert option in out
