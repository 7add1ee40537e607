import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cvlab import metrics as M
from cvlab.loaders import InMemoryLoader
from cvlab.models import LinearModel

NAMES = ["cat", "dog", "owl", "fox"]


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 4, 300))
    return torch.from_numpy(y_true), torch.from_numpy(y_pred)


def test_accuracy_equals_sklearn(labels):
    t, p = labels
    assert M.accuracy(t, p) == pytest.approx(100 * skm.accuracy_score(t.numpy(), p.numpy()))
    assert M.accuracy([0, 1, 2, 3], [0, 1, 0, 0]) == 50.0


def test_confusion_matrix_equals_sklearn_and_keeps_unseen_classes(labels):
    t, p = labels
    assert np.array_equal(M.confusion_matrix(t, p, 4), skm.confusion_matrix(t.numpy(), p.numpy()))
    cm = M.confusion_matrix([0, 0, 1], [0, 1, 1], num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_per_class_metrics_equal_sklearn(labels):
    t, p = labels
    rows = M.per_class_metrics(t, p, NAMES)
    prec, rec, f1, sup = skm.precision_recall_fscore_support(t.numpy(), p.numpy())
    for i, row in enumerate(rows):
        assert row["class"] == NAMES[i]
        assert row["precision"] == pytest.approx(100 * prec[i])
        assert row["recall"] == pytest.approx(100 * rec[i])
        assert row["f1"] == pytest.approx(100 * f1[i])
        assert row["support"] == sup[i]
    report = M.classification_report(t, p, NAMES)
    assert all(n in report for n in NAMES) and "macro avg" in report


def test_most_confused():
    cm = np.array([[5, 3, 0], [1, 7, 4], [0, 0, 9]])
    assert M.most_confused(cm, ["a", "b", "c"], k=2) == [("b", "c", 4), ("a", "b", 3)]
    assert len(M.most_confused(cm, ["a", "b", "c"], k=10)) == 3  # zero cells left out
    with pytest.raises(ValueError, match="square"):
        M.most_confused(cm[:2], ["a", "b", "c"])


def test_bad_label_inputs():
    with pytest.raises(ValueError, match="must match"):
        M.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="argmax"):
        M.accuracy(torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="no labels"):
        M.accuracy([], [])


def test_predict_returns_probabilities_then_labels(toy_data):
    images, labels = toy_data
    torch.manual_seed(0)
    model = LinearModel(in_features=64, num_classes=2)
    p = M.predict(model, InMemoryLoader(images, labels, 64), device="cpu")
    assert isinstance(p, M.Predictions)
    assert p.probs.shape == (200, 2) and p.probs.dtype == torch.float32
    assert torch.allclose(p.probs.sum(1), torch.ones(200))
    with torch.no_grad():
        expected = torch.softmax(model(images.float() / 255), 1)
    assert torch.allclose(p.probs, expected, atol=1e-6)
    assert torch.equal(p.labels, labels) and p.labels.dtype == torch.int64
    assert torch.equal(p.preds, p.probs.argmax(1))
    probs, y_true = p  # outputs first, then labels, as extract_features
    assert probs is p.probs and y_true is p.labels


@pytest.mark.parametrize("training", [True, False])
def test_predict_restores_the_mode(toy_data, training):
    images, labels = toy_data
    model = LinearModel(in_features=64, num_classes=2).train(training)
    M.predict(model, InMemoryLoader(images, labels, 64), device="cpu")
    assert model.training is training


def test_predict_on_an_empty_loader():
    with pytest.raises(ValueError, match="no batches"):
        M.predict(LinearModel(in_features=64, num_classes=2), [], device="cpu")
