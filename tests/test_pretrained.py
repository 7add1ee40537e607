"""Pretrained torchvision models offline: weights placed from a registry package, checked by sha256."""
import shutil

import pytest
import torch

from cvlab import models as M
from cvlab.data import read_photo
from cvlab.utils import sha256_file

WEIGHTS = "mobilenet_v2-b0353104.pth"


@pytest.fixture
def hub_dir(tmp_path):
    """A private torch hub cache, restored afterwards."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def test_setup_placed_the_weights_with_the_right_hash():
    placed = M.prepare_pretrained_weights(verbose=False)
    assert [p.name for p in placed] == [WEIGHTS]
    assert sha256_file(placed[0]).startswith("b0353104")


def test_offline_imagenet_predictions_on_real_photos():
    model, weights = M.pretrained("mobilenet_v2")
    assert weights.name in ("IMAGENET1K_V1", "IMAGENET1K_V2")
    categories, preprocess = weights.meta["categories"], weights.transforms()
    with torch.inference_mode():
        cat = categories[int(model(preprocess(read_photo("chelsea"))[None]).argmax())]
        coffee = categories[int(model(preprocess(read_photo("coffee"))[None]).argmax())]
    assert cat in ("Egyptian cat", "tabby", "tiger cat") and coffee == "espresso"
    assert not model.training


def test_prepare_into_an_empty_cache_then_idempotent(hub_dir, capsys):
    assert M.prepare_pretrained_weights()[0] == hub_dir / WEIGHTS
    assert "placed" in capsys.readouterr().out
    M.prepare_pretrained_weights()
    assert "in place" in capsys.readouterr().out


def test_corrupt_cached_weights_are_refused_with_a_fix(hub_dir):
    M.prepare_pretrained_weights(verbose=False)
    data = bytearray((hub_dir / WEIGHTS).read_bytes())
    data[5000] ^= 0xFF
    (hub_dir / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(M.PretrainedWeightsError, match="corrupt.*python course.py setup"):
        M.pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)
    M.prepare_pretrained_weights(verbose=False)  # the set-up restores it
    assert M.pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)[1].name == "IMAGENET1K_V1"


def test_no_weights_available_says_what_was_tried(hub_dir):
    with pytest.raises(M.PretrainedWeightsError, match="tried .*IMAGENET1K_V1 \\(not cached\\)"):
        M.pretrained("mobilenet_v2", allow_download=False)


def test_bad_names_list_the_valid_ones():
    with pytest.raises(M.PretrainedWeightsError, match="valid: .*IMAGENET1K_V1"):
        M.pretrained("mobilenet_v2", "IMAGENET_V9")
    with pytest.raises(M.PretrainedWeightsError, match="mobilenet_v3_small"):
        M.pretrained("mobilenet_v9")


def test_fallback_says_which_weights_it_used(hub_dir, capsys):
    M.prepare_pretrained_weights(verbose=False)  # only IMAGENET1K_V1 is cached; DEFAULT is V2
    _, weights = M.pretrained("mobilenet_v2", allow_download=False)
    assert weights.name == "IMAGENET1K_V1"
    assert "using the cached mobilenet_v2 weights IMAGENET1K_V1; not available: IMAGENET1K_V2 (not cached)" \
        in capsys.readouterr().out
