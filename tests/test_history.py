"""cvlab.history: History (one record per epoch) and EarlyStopping."""
import math

import pytest

from cvlab.history import EarlyStopping, History


def _history():
    return History([{"epoch": e, "val_loss": loss, "val_acc": acc, "seconds": 1.5}
                    for e, loss, acc in ((1, 0.9, 70.0), (2, 0.5, 80.0), (3, 0.6, 82.0))])


def test_history_columns_best_and_totals():
    h = _history()
    assert len(h) == 3 and h["val_acc"] == [70.0, 80.0, 82.0]
    assert h.last()["epoch"] == 3
    assert h.best()["epoch"] == 3  # highest val_acc
    assert h.best("val_loss", mode="min")["epoch"] == 2
    assert h.total_seconds == 4.5
    assert repr(h) == "History(3 epochs)"
    h.stopped_early = True
    assert repr(h) == "History(3 epochs, stopped early)"
    with pytest.raises(KeyError, match="no column 'accuracy'.*columns: \\['epoch', 'seconds', 'val_acc', 'val_loss'\\]"):
        h["accuracy"]
    with pytest.raises(IndexError, match="empty"):
        History().last()


def test_history_keeps_copies_of_its_records():
    record = {"epoch": 1, "val_acc": 50.0}
    h = History([record])
    record["val_acc"] = 99.0
    h.append(record)
    record["val_acc"] = 0.0
    assert h["val_acc"] == [50.0, 99.0]


def _feed(stopper, values, key):
    return [stopper.update({key: v}) for v in values]


def test_early_stopping_on_a_loss_lower_is_better():
    es = EarlyStopping("val_loss", patience=2)
    assert _feed(es, [1.0, 0.8, 0.9], "val_loss") == [True, True, False]
    assert es.best == 0.8 and es.stale == 1 and not es.should_stop
    assert _feed(es, [0.85], "val_loss") == [False]
    assert es.stale == 2 and es.should_stop


def test_early_stopping_on_an_accuracy_higher_is_better():
    es = EarlyStopping("train_acc", patience=3)
    assert _feed(es, [50.0, 60.0, 55.0, 60.0], "train_acc") == [True, True, False, False]  # a tie is no improvement
    assert es.best == 60.0 and es.stale == 2 and not es.should_stop
    assert _feed(es, [61.0], "train_acc") == [True]
    assert es.stale == 0  # an improvement resets the count


def test_early_stopping_min_delta():
    es = EarlyStopping("val_acc", patience=2, min_delta=1.0)
    assert _feed(es, [80.0, 80.5, 81.5], "val_acc") == [True, False, True]  # 0.5 is too small; 1.5 counts
    assert es.best == 81.5 and es.stale == 0


def test_early_stopping_without_patience_never_stops():
    es = EarlyStopping("val_loss")
    _feed(es, [1.0] + [2.0] * 50, "val_loss")
    assert es.stale == 50 and not es.should_stop and es.best == 1.0


def test_early_stopping_bad_arguments_list_what_is_valid():
    with pytest.raises(ValueError, match=r"monitor must be one of \['train_acc', 'train_loss', 'val_acc', 'val_loss'\], "
                                         r"got 'accuracy'"):
        EarlyStopping("accuracy")
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="patience must be an integer >= 1 or None"):
            EarlyStopping("val_loss", patience=bad)


def test_early_stopping_state_dict_round_trip():
    es = EarlyStopping("val_acc", patience=3)
    _feed(es, [70.0, 75.0, 74.0], "val_acc")
    again = EarlyStopping("val_acc", patience=3)
    again.load_state_dict(es.state_dict())
    assert (again.best, again.stale) == (75.0, 1)
    assert _feed(again, [74.5, 74.0], "val_acc") == _feed(es, [74.5, 74.0], "val_acc") == [False, False]
    assert again.should_stop and es.should_stop
    fresh = EarlyStopping("val_loss")
    fresh.load_state_dict({})  # a checkpoint from before early stopping was tracked
    assert fresh.best_score == -math.inf and fresh.stale == 0
