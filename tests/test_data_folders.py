"""Image folders, bad files, class imbalance helpers and the sampler (cvlab.data)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cvlab import data as D


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


def test_missing_or_empty_image_folder(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="<class name>"):
        D.image_folder(tmp_path / "nope")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(D.DatasetNotFoundError, match="no class folders with images"):
        D.image_folder(tmp_path / "empty")


def test_write_image_folder_bad_input(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        D.write_image_folder(tmp_path, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), ["a", "b"])
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        D.write_image_folder(tmp_path, torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0]), ["a"])


def test_class_counts_and_weights():
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert D.class_counts(labels, 3).tolist() == [8, 2, 0]
    w = D.class_weights(labels, 3)
    assert w.tolist() == pytest.approx([10 / (3 * 8), 10 / (3 * 2), 0.0])
    from sklearn.utils.class_weight import compute_class_weight
    assert D.class_weights(labels, 2).tolist() == pytest.approx(compute_class_weight("balanced", classes=np.array([0, 1]), y=labels.numpy()).tolist())
    with pytest.raises(ValueError, match="0..1"):
        D.class_counts(torch.tensor([0, 2]), 2)


def test_balanced_sampler_draws_classes_equally():
    labels = torch.tensor([0] * 950 + [1] * 50)
    sampler = D.balanced_sampler(labels, num_samples=20_000, seed=0)
    drawn = labels[torch.tensor(list(sampler))]
    share = (drawn == 1).float().mean().item()
    assert 0.47 < share < 0.53
    assert list(D.balanced_sampler(labels, seed=3)) == list(D.balanced_sampler(labels, seed=3))


def test_in_memory_loader_with_sampler(toy_data):
    images, labels = toy_data
    sampler = D.balanced_sampler(labels, num_samples=64, seed=1)
    loader = D.InMemoryLoader(images, labels, 16, sampler=sampler)
    assert len(loader) == 4 and sum(len(y) for _, y in loader) == 64
    with pytest.raises(ValueError, match="not both"):
        D.InMemoryLoader(images, labels, 16, shuffle=True, sampler=sampler)


def test_image_folder_pickles_for_spawned_workers(folder):
    """Windows and macOS start DataLoader workers with "spawn": the dataset must pickle."""
    import pickle
    root, _, _ = folder
    ds = pickle.loads(pickle.dumps(D.image_folder(root, mode="GRAY")))
    assert ds[0][0].mode == "L"


def test_seed_worker_makes_workers_repeat(folder):
    from torch.utils.data import DataLoader
    import random
    root, _, _ = folder

    class Jitter:
        def __call__(self, img):
            return torch.tensor([random.random(), float(np.random.rand())])

    runs = []
    for _ in range(2):
        ds = D.image_folder(root, transform=Jitter())
        loader = DataLoader(ds, batch_size=5, num_workers=2, worker_init_fn=D.seed_worker,
                            generator=torch.Generator().manual_seed(7))
        runs.append(torch.cat([x for x, _ in loader]))
    assert torch.equal(runs[0], runs[1])
    assert len(set(runs[0][:, 0].tolist())) == len(runs[0])  # no two samples drew the same number
