"""cvlab.provisioning: placing Fashion-MNIST from a local mirror, checked by sha256, without apt or network.
(The pretrained weights' placement is tested in test_pretrained.py.)"""
import gzip

import pytest

from cvlab.datasets import FASHION_MNIST_SHA256, CorruptDatasetError, DatasetNotFoundError, fashion_mnist
from cvlab.provisioning import prepare_fashion_mnist


def _make_mirror(fmnist_root, mirror, corrupt=None):
    mirror.mkdir()
    for name in FASHION_MNIST_SHA256:
        payload = (fmnist_root / "FashionMNIST" / "raw" / name).read_bytes()
        if name == corrupt:
            payload = payload[:-10]
        with gzip.open(mirror / f"{name}.gz", "wb", compresslevel=1) as f:
            f.write(payload)


def test_prepare_from_mirror_is_idempotent(fmnist_root, tmp_path, capsys):
    _make_mirror(fmnist_root, tmp_path / "mirror")
    raw = prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False, allow_download=False)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_MNIST_SHA256)
    assert "decompressing" in capsys.readouterr().out
    prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False, allow_download=False)
    assert "in place" in capsys.readouterr().out
    assert len(fashion_mnist("test", root=tmp_path / "root")) == 10_000


def test_prepare_from_corrupt_mirror_fails(fmnist_root, tmp_path):
    _make_mirror(fmnist_root, tmp_path / "mirror", corrupt="train-labels-idx1-ubyte")
    with pytest.raises(CorruptDatasetError, match="train-labels-idx1-ubyte"):
        prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False,
                              allow_download=False, verbose=False)


def test_prepare_without_any_source_says_what_was_tried(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="local mirror") as info:
        prepare_fashion_mnist(tmp_path, mirror=tmp_path / "nowhere", allow_apt=False,
                              allow_download=False, verbose=False)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
