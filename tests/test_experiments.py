"""cvlab.experiments: train_and_evaluate and results_table, on the toy problem."""
import pytest
import torch

from cvlab.experiments import RunResult, results_table, train_and_evaluate
from cvlab.loaders import InMemoryLoader
from cvlab.models import LinearModel


def _run(toy_data, name, **kwargs):
    images, labels = toy_data
    train = InMemoryLoader(images[:160], labels[:160], 32, shuffle=True)
    test = InMemoryLoader(images[160:], labels[160:], 40)
    torch.manual_seed(0)
    return train_and_evaluate(name, LinearModel(in_features=64, num_classes=2), train, test, epochs=2, lr=0.05,
                              device="cpu", progress=False, **kwargs)


def test_train_and_evaluate_returns_the_row(toy_data, capsys):
    result = _run(toy_data, "linear", recipe="Adam 0.05, 2 epochs", extra={"augment": "none"})
    assert isinstance(result, RunResult) and len(result.history) == 2
    row = result.row()
    assert list(row) == ["model", "test_acc", "test_loss", "train_seconds", "params", "recipe", "augment"]
    assert row["model"] == "linear" and row["recipe"] == "Adam 0.05, 2 epochs" and row["augment"] == "none"
    assert row["params"] == 64 * 2 + 2
    assert row["test_acc"] == result.test_acc == result.history.last()["val_acc"]
    assert row["test_loss"] == result.test_loss == result.history.last()["val_loss"]
    assert row["train_seconds"] == result.history.total_seconds
    assert f"linear: test accuracy {result.test_acc:.2f} %" in capsys.readouterr().out


def test_train_and_evaluate_quietly(toy_data, capsys):
    _run(toy_data, "quiet", verbose=False)
    assert capsys.readouterr().out == ""


def test_results_table_one_line_per_model(toy_data):
    first = _run(toy_data, "linear", verbose=False)
    other = {"model": "a much longer model name than usual", "test_acc": 91.256, "test_loss": 0.25,
             "train_seconds": 12.0, "params": 29_178, "recipe": "AdamW"}
    lines = results_table([first, other]).splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["model", "test", "acc"]
    assert lines[1].startswith("linear ") and f"{first.test_acc:.2f}%" in lines[1]
    assert lines[2].startswith(other["model"]) and "91.26%" in lines[2] and "29,178" in lines[2]
    assert lines[2].endswith("AdamW")


def test_results_table_needs_rows():
    with pytest.raises(ValueError, match="no results"):
        results_table([])
