"""cvlab.pretrained: torchvision models offline, weights placed from a registry package
(cvlab.provisioning) and checked by the sha256 prefix in their file name; the model zoo."""
import hashlib
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from cvlab import pretrained as P
from cvlab.images import read_photo
from cvlab.provisioning import prepare_pretrained_weights
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
    placed = prepare_pretrained_weights(verbose=False)
    assert [p.name for p in placed] == [WEIGHTS]
    assert sha256_file(placed[0]).startswith("b0353104")


def test_offline_imagenet_predictions_on_real_photos():
    model, weights = P.pretrained("mobilenet_v2")
    assert weights.name in ("IMAGENET1K_V1", "IMAGENET1K_V2")
    categories, preprocess = weights.meta["categories"], weights.transforms()
    with torch.inference_mode():
        cat = categories[int(model(preprocess(read_photo("chelsea"))[None]).argmax())]
        coffee = categories[int(model(preprocess(read_photo("coffee"))[None]).argmax())]
    assert cat in ("Egyptian cat", "tabby", "tiger cat") and coffee == "espresso"
    assert not model.training


def test_prepare_into_an_empty_cache_then_idempotent(hub_dir, capsys):
    assert prepare_pretrained_weights()[0] == hub_dir / WEIGHTS
    assert "placed" in capsys.readouterr().out
    prepare_pretrained_weights()
    assert "in place" in capsys.readouterr().out


def test_corrupt_cached_weights_are_refused_with_a_fix(hub_dir):
    prepare_pretrained_weights(verbose=False)
    data = bytearray((hub_dir / WEIGHTS).read_bytes())
    data[5000] ^= 0xFF
    (hub_dir / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(P.PretrainedWeightsError, match="corrupt.*python course.py setup"):
        P.pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)
    prepare_pretrained_weights(verbose=False)  # the set-up restores it
    assert P.pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)[1].name == "IMAGENET1K_V1"


def test_no_weights_available_says_what_was_tried(hub_dir):
    with pytest.raises(P.PretrainedWeightsError, match="tried .*IMAGENET1K_V1 \\(not cached\\)"):
        P.pretrained("mobilenet_v2", allow_download=False)


def test_bad_names_list_the_valid_ones():
    with pytest.raises(P.PretrainedWeightsError, match="valid: .*IMAGENET1K_V1"):
        P.pretrained("mobilenet_v2", "IMAGENET_V9")
    with pytest.raises(P.PretrainedWeightsError, match="mobilenet_v3_small"):
        P.pretrained("mobilenet_v9")


def test_fallback_says_which_weights_it_used(hub_dir, capsys):
    prepare_pretrained_weights(verbose=False)  # only IMAGENET1K_V1 is cached; DEFAULT is V2
    _, weights = P.pretrained("mobilenet_v2", allow_download=False)
    assert weights.name == "IMAGENET1K_V1"
    assert "using the cached mobilenet_v2 weights IMAGENET1K_V1; not available: IMAGENET1K_V2 (not cached)" \
        in capsys.readouterr().out


def test_model_zoo_reads_every_classification_model_without_downloading():
    rows = P.model_zoo()
    assert [r["model"] for r in rows] == sorted(tvm.list_models(module=tvm))
    mobilenet = next(r for r in rows if r["model"] == "mobilenet_v2")
    meta = tvm.MobileNet_V2_Weights.DEFAULT.meta
    assert mobilenet["params_m"] == pytest.approx(meta["num_params"] / 1e6)
    assert mobilenet["acc1"] == meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert mobilenet["crop_size"] == 224
    assert all(0 < r["acc1"] < 100 and r["params_m"] > 0 and r["gflops"] > 0 for r in rows)


def test_weights_file_is_in_the_hub_cache():
    w = tvm.MobileNet_V2_Weights.IMAGENET1K_V1
    assert P.weights_file(w) == Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS


def _weights_named(folder, name_for_digest, payload=b"not really weights"):
    digest = hashlib.sha256(payload).hexdigest()
    path = folder / name_for_digest(digest)
    path.write_bytes(payload)
    return path, digest


def test_check_weights_file_accepts_the_prefix_of_its_sha256(tmp_path):
    path, _ = _weights_named(tmp_path, lambda d: f"foo-{d[:8]}.pth")
    assert P.check_weights_file(path) is None


def test_check_weights_file_refuses_a_wrong_prefix_with_the_fix(tmp_path):
    wrong = lambda d: f"foo-{'0' * 8 if not d.startswith('00000000') else '1' * 8}.pth"  # noqa: E731
    path, digest = _weights_named(tmp_path, wrong)
    with pytest.raises(P.PretrainedWeightsError) as info:
        P.check_weights_file(path)
    message = str(info.value)
    assert str(path) in message and "python course.py setup" in message and digest[:8] in message


@pytest.mark.parametrize("name", ["foo.pth", "foo-bar.pth", "foo-abc.pth", "resnet-18.pth"])
def test_check_weights_file_leaves_names_without_a_hex_suffix_alone(tmp_path, monkeypatch, name):
    def no_hashing(path):
        raise AssertionError(f"{path} was hashed")

    monkeypatch.setattr(P, "sha256_file", no_hashing)
    (tmp_path / name).write_bytes(b"anything")
    assert P.check_weights_file(tmp_path / name) is None
