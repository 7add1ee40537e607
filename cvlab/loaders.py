"""Data loaders: batches of ``(x, y)`` for training and evaluation, and the one ``DataLoader``
recipe the lessons and the command line share.

Two loaders with the same contract (iterate to get ``(x, y)``: ``x`` float32 (B, C, H, W),
``y`` int64 (B,); ``len(loader)`` batches, ``len(loader.dataset)`` samples):

* ``make_loader``: torch's ``DataLoader`` over any dataset, one image at a time through its
  transform (what you use for images on disk and for augmentation), shuffled by its own seeded
  generator. Worker processes need no extra seeding: since PyTorch 1.9 each worker seeds
  ``torch``, ``random`` and NumPy from the loader's generator (base seed + worker id).
* ``InMemoryLoader``: a whole small dataset held as one uint8 tensor, shuffled and converted a
  batch at a time. Same images, same labels, many times faster on a CPU.
"""
from __future__ import annotations

import os
from typing import Iterator

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from .datasets import fashion_mnist, fashion_mnist_tensors
from .images import to_float_images
from .utils import DEFAULT_SEED

__all__ = ["InMemoryLoader", "balanced_sampler", "fashion_mnist_loaders", "make_loader"]



class InMemoryLoader:
    """Batches from a dataset held in memory as one tensor: the DataLoader contract, much faster.

    Iterating yields ``(x, y)`` with ``x`` float32 (B, C, H, W) in [0, 1] (converted from uint8
    a batch at a time, exactly as ``v2.ToDtype(torch.float32, scale=True)`` does per image) and
    ``y`` int64 (B,). Float inputs, such as preprocessed images or features cached from a frozen
    backbone (``cvlab.transfer.extract_features``), are batched as they are. ``len(loader)`` is the number of batches, ``len(loader.dataset)`` the number
    of samples, as with a DataLoader.

    Args:
        images: uint8 (N, C, H, W) tensor in [0, 255], or a floating-point (N, ...) tensor.
        labels: integer (N,) tensor of class indices.
        batch_size: samples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: a new random order every epoch, drawn from the loader's own generator.
        seed: seeds that generator, so two loaders with the same seed give the same batches.
        drop_last: drop a last, incomplete batch.
        device: move each batch there (conversion then runs on that device).
        sampler: draw the indices of each epoch from this sampler instead (e.g.
            ``balanced_sampler``); then ``shuffle`` must be False and ``len(loader)`` follows
            ``len(sampler)``.

    Raises:
        TypeError / ValueError: wrong dtypes, shapes, mismatched lengths or a bad batch size.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 32, *,
                 shuffle: bool = False, seed: int = DEFAULT_SEED, drop_last: bool = False,
                 device: str | torch.device | None = None, sampler: torch.utils.data.Sampler | None = None):
        is_float = isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim >= 1
        if not is_float and (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4):
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"images must be a uint8 tensor shaped (N, C, H, W) or a float tensor (N, ...), got {got}; "
                            "use cvlab.datasets.fashion_mnist_tensors() or add a channel axis with .unsqueeze(1)")
        if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.dtype.is_floating_point:
            raise TypeError("labels must be a 1-D integer tensor of class indices")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels: they must match one to one")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if sampler is not None and shuffle:
            raise ValueError("give either shuffle=True or a sampler, not both (the sampler decides the order)")
        self.images = images
        self.labels = labels.long()
        self.sampler = sampler
        self.dataset = torch.utils.data.TensorDataset(self.images, self.labels)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = torch.device(device) if device is not None else None
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.sampler is not None:
            order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        else:
            order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for idx in order.split(self.batch_size)[:len(self)]:
            x, y = self.images[idx], self.labels[idx]
            if self.device is not None:
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            yield (x if x.is_floating_point() else to_float_images(x)), y



def fashion_mnist_loaders(batch_size: int = 32, *, root: str | os.PathLike | None = None,
                          in_memory: bool = True, num_workers: int = 0, seed: int = DEFAULT_SEED,
                          train_limit: int | None = None) -> tuple:
    """Train and test loaders for Fashion-MNIST, with the same (x, y) contract either way.

    Args:
        batch_size: samples per batch.
        root: data root (see ``cvlab.datasets.data_root``).
        in_memory: True gives ``InMemoryLoader``s; False gives ``DataLoader``s over torchvision's
            dataset with the per-image transform ``v2.ToImage() + v2.ToDtype(float32, scale=True)``.
        num_workers: DataLoader worker processes (only with ``in_memory=False``). 0 loads in
            the main process, which is the safe choice in notebooks and on Windows/macOS.
        seed: seeds the training loader's shuffling, so the order is repeatable.
        train_limit: use only the first ``train_limit`` training images (for quick experiments).

    Returns:
        ``(train_loader, test_loader)``: training shuffled, test in file order.

    Raises:
        as ``cvlab.datasets.fashion_mnist``; ValueError for a bad ``train_limit``.
    """
    if train_limit is not None and not 0 < train_limit <= 60_000:
        raise ValueError(f"train_limit must be in 1..60000, got {train_limit}")
    if in_memory:
        xtr, ytr = fashion_mnist_tensors("train", root)
        xte, yte = fashion_mnist_tensors("test", root)
        if train_limit is not None:
            xtr, ytr = xtr[:train_limit], ytr[:train_limit]
        return (InMemoryLoader(xtr, ytr, batch_size, shuffle=True, seed=seed),
                InMemoryLoader(xte, yte, batch_size, shuffle=False))
    transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    train_ds = fashion_mnist("train", root, transform=transform)
    test_ds = fashion_mnist("test", root, transform=transform)
    if train_limit is not None:
        train_ds = torch.utils.data.Subset(train_ds, range(train_limit))
    return (make_loader(train_ds, batch_size, shuffle=True, seed=seed, num_workers=num_workers),
            make_loader(test_ds, batch_size, num_workers=num_workers))



def balanced_sampler(labels: torch.Tensor, num_samples: int | None = None, *, seed: int = DEFAULT_SEED
                     ) -> torch.utils.data.WeightedRandomSampler:
    """A ``WeightedRandomSampler`` that draws every class equally often, with replacement.

    Args:
        labels: (N,) class indices of the dataset, in dataset order.
        num_samples: draws per epoch (default N).
        seed: seeds the sampler's own generator.

    Returns:
        the sampler; give it to ``DataLoader(sampler=...)`` or ``InMemoryLoader(sampler=...)``.
    """
    labels = torch.as_tensor(labels).long()
    counts = torch.bincount(labels).float()
    per_sample = (1.0 / counts)[labels]
    return torch.utils.data.WeightedRandomSampler(per_sample.double(), num_samples or len(labels), replacement=True,
                                                  generator=torch.Generator().manual_seed(seed))


def make_loader(dataset: torch.utils.data.Dataset, batch_size: int = 32, *, shuffle: bool = False,
                seed: int = DEFAULT_SEED, num_workers: int = 0,
                sampler: torch.utils.data.Sampler | None = None, **kwargs) -> DataLoader:
    """A ``DataLoader`` made the way every lesson and ``python -m cvlab train`` make one.

    Args:
        dataset: yields ``(image, label)`` pairs (e.g. ``cvlab.datasets.image_folder``).
        batch_size: samples per batch.
        shuffle: a new random order every epoch, drawn from the loader's own generator seeded
            with ``seed`` (so the order repeats, whatever else draws random numbers).
        seed: seeds that generator; worker processes derive their seeds from it.
        num_workers: worker processes (0 loads in the main process: the safe choice in
            notebooks and on Windows/macOS, where workers re-import the script and need an
            ``if __name__ == "__main__":`` guard). Workers are kept alive between epochs.
        sampler: draw indices from this sampler instead (``balanced_sampler``); then
            ``shuffle`` must be False.
        **kwargs: other ``DataLoader`` arguments (``collate_fn``, ``pin_memory``, ...).

    Returns:
        the ``DataLoader``.

    Raises:
        ValueError: a bad batch size or worker count, or both ``shuffle`` and ``sampler``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")
    if sampler is not None and shuffle:
        raise ValueError("give either shuffle=True or a sampler, not both (the sampler decides the order)")
    if "generator" in kwargs:
        raise ValueError("make_loader seeds its own generator: pass seed=... instead of generator=...")
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0, **kwargs)
