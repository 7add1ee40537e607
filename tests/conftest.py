"""Shared fixtures. The real Fashion-MNIST must be in place (``python course.py setup`` does it):
tests that need it fail with the set-up command in their message rather than skip."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from cvlab.datasets import FASHION_MNIST_SHA256, data_root  # noqa: E402


@pytest.fixture(scope="session")
def fmnist_root():
    root = data_root()
    raw = root / "FashionMNIST" / "raw"
    missing = [n for n in FASHION_MNIST_SHA256 if not (raw / n).is_file()]
    assert not missing, f"Fashion-MNIST missing in {raw}: run `python course.py setup` first"
    return root


@pytest.fixture
def toy_data():
    """A learnable two-class problem: 200 8x8 images, class 1 brighter than class 0 (uint8)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 2
    base = torch.randint(0, 100, (200, 1, 8, 8), generator=g)
    images = (base + labels.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return images, labels


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.fixture(scope="session")
def folder(tmp_path_factory, fmnist_root):
    """Real Fashion-MNIST images as PNG files: 3 classes (Trouser, Sandal, Bag), 40 train and 15 val
    images each, in ``train/<class>/`` and ``val/<class>/``."""
    from cvlab.datasets import FASHION_MNIST_CLASSES, fashion_mnist_tensors, write_image_folder

    root = tmp_path_factory.mktemp("folder")
    for split, name, n in (("train", "train", 40), ("val", "test", 15)):
        x, y = fashion_mnist_tensors(name)
        keep = torch.cat([torch.nonzero(y == c).flatten()[:n] for c in (1, 5, 8)])
        write_image_folder(root / split, x[keep], y[keep], FASHION_MNIST_CLASSES)
    return root
