"""cvlab.loaders: InMemoryLoader, fashion_mnist_loaders, make_loader and balanced_sampler."""
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms import v2

from cvlab.datasets import fashion_mnist, fashion_mnist_tensors
from cvlab.images import to_float_images
from cvlab.loaders import InMemoryLoader, balanced_sampler, fashion_mnist_loaders, make_loader


def test_in_memory_loader_equals_dataloader(fmnist_root):
    """Both loading paths give exactly the same float images and labels, batch by batch."""
    x, y = fashion_mnist_tensors("test")
    fast = InMemoryLoader(x, y, batch_size=500)
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    slow = DataLoader(fashion_mnist("test", transform=transform), batch_size=500)
    n = 0
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert xa.dtype == xb.dtype == torch.float32
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        n += len(ya)
    assert n == 10_000


def test_loaders_same_contract_both_ways(fmnist_root):
    for in_memory in (True, False):
        train, test = fashion_mnist_loaders(64, in_memory=in_memory, train_limit=256)
        x, y = next(iter(train))
        assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (64,) and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        assert len(train) == 4 and len(test) == 157
    with pytest.raises(ValueError, match="train_limit"):
        fashion_mnist_loaders(train_limit=0)


def test_dataloader_with_workers(fmnist_root):
    train, _ = fashion_mnist_loaders(32, in_memory=False, num_workers=2, train_limit=128)
    assert sum(len(y) for _, y in train) == 128


def test_in_memory_loader_shuffling(toy_data):
    images, labels = toy_data
    a = InMemoryLoader(images, labels, 32, shuffle=True, seed=1)
    b = InMemoryLoader(images, labels, 32, shuffle=True, seed=1)
    epoch_a1 = torch.cat([y for _, y in a])
    epoch_b1 = torch.cat([y for _, y in b])
    assert torch.equal(epoch_a1, epoch_b1)  # same seed, same order
    xa = torch.cat([x for x, _ in a])
    # every sample exactly once per epoch, in a new order each epoch
    assert sorted(xa.flatten(1).sum(1).tolist()) == sorted(to_float_images(images).flatten(1).sum(1).tolist())
    assert len(a) == 7 and len(InMemoryLoader(images, labels, 32, drop_last=True)) == 6
    sizes = [len(y) for _, y in InMemoryLoader(images, labels, 32)]
    assert sizes == [32] * 6 + [8]


def test_in_memory_loader_passes_float_inputs_through(toy_data):
    """Features cached from a frozen backbone are float (N, D): batched as they are, not rescaled."""
    images, labels = toy_data
    features = images.flatten(1).float() * 3.0
    batches = list(InMemoryLoader(features, labels, 64))
    assert torch.equal(torch.cat([x for x, _ in batches]), features)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


def test_in_memory_loader_bad_input(toy_data):
    images, labels = toy_data
    with pytest.raises(TypeError, match="uint8"):
        InMemoryLoader(images.int(), labels)
    with pytest.raises(TypeError, match="unsqueeze"):
        InMemoryLoader(images[:, 0], labels)
    with pytest.raises(ValueError, match="200 images but 199 labels"):
        InMemoryLoader(images, labels[:-1])
    with pytest.raises(ValueError, match="batch_size"):
        InMemoryLoader(images, labels, batch_size=0)
    with pytest.raises(TypeError, match="1-D integer"):
        InMemoryLoader(images, labels.float())


def test_balanced_sampler_draws_classes_equally():
    labels = torch.tensor([0] * 950 + [1] * 50)
    sampler = balanced_sampler(labels, num_samples=20_000, seed=0)
    drawn = labels[torch.tensor(list(sampler))]
    share = (drawn == 1).float().mean().item()
    assert 0.47 < share < 0.53
    assert list(balanced_sampler(labels, seed=3)) == list(balanced_sampler(labels, seed=3))


def test_in_memory_loader_with_sampler(toy_data):
    images, labels = toy_data
    sampler = balanced_sampler(labels, num_samples=64, seed=1)
    loader = InMemoryLoader(images, labels, 16, sampler=sampler)
    assert len(loader) == 4 and sum(len(y) for _, y in loader) == 64
    with pytest.raises(ValueError, match="not both"):
        InMemoryLoader(images, labels, 16, shuffle=True, sampler=sampler)


# --- make_loader: the one DataLoader recipe -------------------------------------------------------

def _numbers(n=40):
    return TensorDataset(torch.arange(n), torch.arange(n) % 2)


def _order(loader):
    return torch.cat([x for x, _ in loader]).tolist()


def test_make_loader_seed_decides_the_order():
    ds = _numbers()
    first = _order(make_loader(ds, 8, shuffle=True, seed=1))
    assert first == _order(make_loader(ds, 8, shuffle=True, seed=1))  # same seed, same order
    assert first != _order(make_loader(ds, 8, shuffle=True, seed=2))  # another seed, another order
    assert sorted(first) == list(range(40))  # every sample once
    assert _order(make_loader(ds, 8)) == list(range(40))  # no shuffle: dataset order


def test_make_loader_order_ignores_the_global_random_state():
    ds = _numbers()
    torch.manual_seed(1)
    a = _order(make_loader(ds, 8, shuffle=True, seed=5))
    torch.manual_seed(2)
    assert _order(make_loader(ds, 8, shuffle=True, seed=5)) == a


def test_make_loader_bad_arguments():
    ds = _numbers()
    sampler = balanced_sampler(ds.tensors[1], seed=0)
    with pytest.raises(ValueError, match="shuffle.*sampler.*not both"):
        make_loader(ds, 8, shuffle=True, sampler=sampler)
    for bad in (0, -3, 2.5, "8"):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bad!r}"):
            make_loader(ds, bad)
    with pytest.raises(ValueError, match="num_workers"):
        make_loader(ds, 8, num_workers=-1)
    assert len(make_loader(ds, 8, sampler=sampler)) == 5


class RandomDraws(Dataset):
    """Each item draws from torch, Python's random and NumPy: what augmentations do in a worker."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.tensor([torch.rand(()).item(), random.random(), float(np.random.rand())]), i


def test_make_loader_workers_repeat_with_the_seed_and_draw_differently():
    """PyTorch seeds torch, random and NumPy in each worker from the loader's generator: no
    worker_init_fn is needed for repeatable, independent draws."""
    runs = [torch.cat([x for x, _ in make_loader(RandomDraws(), 4, shuffle=True, seed=7, num_workers=2)])
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])  # same seed, same draws in the same order
    for column in range(3):  # torch, random, NumPy: no two samples (on either worker) drew the same number
        assert len(set(runs[0][:, column].tolist())) == 16, column
