import gzip
import shutil

import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from cvlab import data as D


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("CVLAB_DATA", raising=False)
    assert D.data_root().name == "data"
    monkeypatch.setenv("CVLAB_DATA", str(tmp_path / "env"))
    assert D.data_root() == tmp_path / "env"
    assert D.data_root(tmp_path / "arg") == tmp_path / "arg"


def test_fashion_mnist_splits_and_classes(fmnist_root):
    train, test = D.fashion_mnist("train"), D.fashion_mnist("test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.classes == D.FASHION_MNIST_CLASSES
    # Fashion-MNIST is class balanced: 6,000 training and 1,000 test images per class
    assert torch.bincount(train.targets).tolist() == [6000] * 10
    assert torch.bincount(test.targets).tolist() == [1000] * 10


def test_tensors_shapes_and_dtypes(fmnist_root):
    x, y = D.fashion_mnist_tensors("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9


def test_unknown_split():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        D.fashion_mnist("val")


def test_missing_dataset_names_the_setup_command(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="python course.py setup") as info:
        D.fashion_mnist("train", root=tmp_path)
    assert str(tmp_path) in str(info.value)


def _copy_raw(src_root, dst_root):
    dst = dst_root / "FashionMNIST" / "raw"
    shutil.copytree(src_root / "FashionMNIST" / "raw", dst)
    return dst


def test_truncated_file_is_refused_with_its_name(fmnist_root, tmp_path):
    raw = _copy_raw(fmnist_root, tmp_path)
    target = raw / "t10k-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(D.CorruptDatasetError, match="t10k-images-idx3-ubyte") as info:
        D.fashion_mnist("test", root=tmp_path)
    assert "python course.py setup" in str(info.value)


def test_corrupt_byte_is_refused(fmnist_root, tmp_path):
    raw = _copy_raw(fmnist_root, tmp_path)
    target = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(D.CorruptDatasetError, match="sha256"):
        D.fashion_mnist("test", root=tmp_path)


def _make_mirror(fmnist_root, mirror, corrupt=None):
    mirror.mkdir()
    for name in D.FASHION_MNIST_SHA256:
        payload = (fmnist_root / "FashionMNIST" / "raw" / name).read_bytes()
        if name == corrupt:
            payload = payload[:-10]
        with gzip.open(mirror / f"{name}.gz", "wb", compresslevel=1) as f:
            f.write(payload)


def test_prepare_from_mirror_is_idempotent(fmnist_root, tmp_path, capsys):
    _make_mirror(fmnist_root, tmp_path / "mirror")
    raw = D.prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False, allow_download=False)
    assert sorted(p.name for p in raw.iterdir()) == sorted(D.FASHION_MNIST_SHA256)
    assert "decompressing" in capsys.readouterr().out
    D.prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False, allow_download=False)
    assert "in place" in capsys.readouterr().out
    assert len(D.fashion_mnist("test", root=tmp_path / "root")) == 10_000


def test_prepare_from_corrupt_mirror_fails(fmnist_root, tmp_path):
    _make_mirror(fmnist_root, tmp_path / "mirror", corrupt="train-labels-idx1-ubyte")
    with pytest.raises(D.CorruptDatasetError, match="train-labels-idx1-ubyte"):
        D.prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False,
                                allow_download=False, verbose=False)


def test_prepare_without_any_source_says_what_was_tried(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="local mirror") as info:
        D.prepare_fashion_mnist(tmp_path, mirror=tmp_path / "nowhere", allow_apt=False,
                                allow_download=False, verbose=False)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


def test_in_memory_loader_equals_dataloader(fmnist_root):
    """Both loading paths give exactly the same float images and labels, batch by batch."""
    x, y = D.fashion_mnist_tensors("test")
    fast = D.InMemoryLoader(x, y, batch_size=500)
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    slow = DataLoader(D.fashion_mnist("test", transform=transform), batch_size=500)
    n = 0
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert xa.dtype == xb.dtype == torch.float32
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        n += len(ya)
    assert n == 10_000


def test_loaders_same_contract_both_ways(fmnist_root):
    for in_memory in (True, False):
        train, test = D.fashion_mnist_loaders(64, in_memory=in_memory, train_limit=256)
        x, y = next(iter(train))
        assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (64,) and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert len(train) == 4 and len(test) == 157
    with pytest.raises(ValueError, match="train_limit"):
        D.fashion_mnist_loaders(train_limit=0)


def test_dataloader_with_workers(fmnist_root):
    train, _ = D.fashion_mnist_loaders(32, in_memory=False, num_workers=2, train_limit=128)
    assert sum(len(y) for _, y in train) == 128


def test_in_memory_loader_shuffling(toy_data):
    images, labels = toy_data
    a = D.InMemoryLoader(images, labels, 32, shuffle=True, seed=1)
    b = D.InMemoryLoader(images, labels, 32, shuffle=True, seed=1)
    epoch_a1 = torch.cat([y for _, y in a])
    epoch_b1 = torch.cat([y for _, y in b])
    assert torch.equal(epoch_a1, epoch_b1)  # same seed, same order
    xa = torch.cat([x for x, _ in a])
    # every sample exactly once per epoch, in a new order each epoch
    assert sorted(xa.flatten(1).sum(1).tolist()) == sorted(D.to_float_images(images).flatten(1).sum(1).tolist())
    assert len(a) == 7 and len(D.InMemoryLoader(images, labels, 32, drop_last=True)) == 6
    sizes = [len(y) for _, y in D.InMemoryLoader(images, labels, 32)]
    assert sizes == [32] * 6 + [8]


def test_in_memory_loader_passes_float_inputs_through(toy_data):
    """Features cached from a frozen backbone are float (N, D): batched as they are, not rescaled."""
    images, labels = toy_data
    features = images.flatten(1).float() * 3.0
    batches = list(D.InMemoryLoader(features, labels, 64))
    assert torch.equal(torch.cat([x for x, _ in batches]), features)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


def test_in_memory_loader_bad_input(toy_data):
    images, labels = toy_data
    with pytest.raises(TypeError, match="uint8"):
        D.InMemoryLoader(images.int(), labels)
    with pytest.raises(TypeError, match="unsqueeze"):
        D.InMemoryLoader(images[:, 0], labels)
    with pytest.raises(ValueError, match="200 images but 199 labels"):
        D.InMemoryLoader(images, labels[:-1])
    with pytest.raises(ValueError, match="batch_size"):
        D.InMemoryLoader(images, labels, batch_size=0)
    with pytest.raises(TypeError, match="1-D integer"):
        D.InMemoryLoader(images, labels.float())


def test_to_float_images(toy_data):
    images, _ = toy_data
    out = D.to_float_images(images)
    assert out.dtype == torch.float32 and torch.equal(out, v2.ToDtype(torch.float32, scale=True)(images))
    assert torch.allclose(out * 255, images.float())
    with pytest.raises(TypeError, match="uint8"):
        D.to_float_images(out)


def test_sample_photos_and_read_photo(tmp_path):
    photos = D.sample_photos()
    assert {"chelsea", "coffee", "astronaut", "rocket", "grace_hopper", "china", "flower"} <= set(photos)
    cat = D.read_photo("chelsea")
    assert cat.shape == (3, 300, 451) and cat.dtype == torch.uint8
    import skimage.data
    assert torch.equal(cat.permute(1, 2, 0), torch.from_numpy(skimage.data.chelsea()))
    assert D.read_photo(photos["grace_hopper"], mode="GRAY").shape[0] == 1
    with pytest.raises(ValueError, match="one of"):
        D.read_photo("unicorn")
    with pytest.raises(ValueError, match="mode"):
        D.read_photo("chelsea", mode="CMYK")
    with pytest.raises(FileNotFoundError):
        D.read_photo(tmp_path / "none.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos["grace_hopper"].read_bytes()[:300])
    with pytest.raises(ValueError, match="broken.jpg"):
        D.read_photo(broken)


def test_read_photo_modes_and_bit_depths(tmp_path):
    import numpy as np
    from PIL import Image
    rgba = np.zeros((4, 5, 4), np.uint8); rgba[..., 0] = 200; rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert D.read_photo(tmp_path / "rgba.png").shape == (3, 4, 5)
    assert D.read_photo(tmp_path / "rgba.png", mode="UNCHANGED").shape == (4, 4, 5)
    Image.fromarray(np.full((4, 5), 77, np.uint8), "L").save(tmp_path / "gray.png")
    rgb = D.read_photo(tmp_path / "gray.png")
    assert rgb.shape == (3, 4, 5) and int(rgb.min()) == int(rgb.max()) == 77
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    deep = D.read_photo(tmp_path / "deep.png", mode="UNCHANGED")
    assert deep.shape == (1, 4, 5) and deep.dtype == torch.uint8 and int(deep.max()) == 255
