"""cvlab.datasets: Fashion-MNIST checked by sha256, image folders, bad files and class statistics."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cvlab import datasets as D


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


def test_verify_fashion_mnist_names_the_missing_files(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="missing t10k-labels-idx1-ubyte.*python course.py setup"):
        D.verify_fashion_mnist(tmp_path, ["t10k-labels-idx1-ubyte"])


# --- image folders --------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path, fmnist_root):
    x, y = D.fashion_mnist_tensors("test")
    keep = torch.cat([torch.nonzero(y == c).flatten()[:5] for c in (0, 7, 9)])
    return D.write_image_folder(tmp_path / "imgs", x[keep], y[keep], D.FASHION_MNIST_CLASSES), x[keep], y[keep]


def test_write_and_read_an_image_folder(folder):
    root, x, y = folder
    ds = D.image_folder(root, transform=v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]))
    assert ds.classes == ["Ankle boot", "Sneaker", "T-shirt_top"]  # sorted folder names, "/" replaced
    assert len(ds) == 15
    img, label = ds[0]
    assert img.shape == (3, 28, 28) and img.dtype == torch.float32
    gray = D.image_folder(root, mode="GRAY")[0][0]
    assert gray.mode == "L"
    # the pixels written are the pixels read back (PNG is lossless)
    ankle_boots = x[y == 9]
    assert torch.equal(torch.from_numpy(np.array(gray))[None], ankle_boots[0])


def test_image_folder_converts_odd_formats(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((6, 6, 4), 90, np.uint8), "RGBA").save(tmp_path / "a" / "rgba.png")
    Image.fromarray(np.full((6, 6), 65535, np.uint16)).save(tmp_path / "a" / "deep.png")
    Image.fromarray(np.full((6, 6), 30, np.uint8), "L").save(tmp_path / "a" / "gray.png")
    Image.fromarray(np.full((6, 6), 3, np.uint8), "P").save(tmp_path / "a" / "palette.gif")
    ds = D.image_folder(tmp_path)
    for img, _ in ds:
        assert img.mode == "RGB" and img.size == (6, 6)
    assert D.find_bad_images(tmp_path) == []


def test_corrupt_file_is_named(tmp_path, folder):
    root, _, _ = folder
    bad = root / "Sneaker" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
    (root / "Sneaker" / "empty.jpg").write_bytes(b"")
    found = D.find_bad_images(root)
    assert [p.name for p, _ in found] == ["broken.png", "empty.jpg"]
    ds = D.image_folder(root)
    idx = [i for i, (p, _) in enumerate(ds.samples) if p.endswith("broken.png")][0]
    with pytest.raises(ValueError, match="broken.png"):
        ds[idx]


def test_find_bad_images_in_a_missing_folder_is_an_error(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.find_bad_images(missing)
    assert str(missing) in str(info.value)


def test_missing_or_empty_image_folder(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="<class name>"):
        D.image_folder(tmp_path / "nope")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(D.DatasetNotFoundError, match="1 of the 1 class folders .* hold no image files.*'cls'"):
        D.image_folder(tmp_path / "empty")


def test_write_image_folder_bad_input(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        D.write_image_folder(tmp_path, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        D.write_image_folder(tmp_path, torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0]), ["a"])


def test_image_folder_pickles_for_spawned_workers(folder):
    """Windows and macOS start DataLoader workers with "spawn": the dataset must pickle."""
    import pickle
    root, _, _ = folder
    ds = pickle.loads(pickle.dumps(D.image_folder(root, mode="GRAY")))
    assert ds[0][0].mode == "L"


# --- class statistics -----------------------------------------------------------------------------

def test_class_counts_and_weights():
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert D.class_counts(labels, 3).tolist() == [8, 2, 0]
    w = D.class_weights(labels, 3)
    assert w.tolist() == pytest.approx([10 / (3 * 8), 10 / (3 * 2), 0.0])
    from sklearn.utils.class_weight import compute_class_weight
    assert D.class_weights(labels, 2).tolist() == pytest.approx(
        compute_class_weight("balanced", classes=np.array([0, 1]), y=labels.numpy()).tolist())
    with pytest.raises(ValueError, match="0..1"):
        D.class_counts(torch.tensor([0, 2]), 2)
