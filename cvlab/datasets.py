"""Datasets: Fashion-MNIST through torchvision (checked by sha256), image folders, class statistics.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, arXiv:1708.07747; Zalando, MIT licence):
70,000 grayscale 28x28 images of clothing in 10 classes, 60,000 for training and 10,000 for test.

Where the data lives: ``root`` argument > environment variable ``CVLAB_DATA`` > the project's
``data/`` folder. torchvision's ``FashionMNIST(root)`` reads the four decompressed idx files in
``root/FashionMNIST/raw/``; ``python course.py setup`` places them there (``cvlab.provisioning``)
and every loader here checks each file's sha256 before torchvision reads it.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torchvision import datasets

from .images import IMAGE_EXTENSIONS, open_image
from .utils import sha256_file

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_SHA256", "SETUP_COMMAND", "CorruptDatasetError",
           "DatasetNotFoundError", "class_counts", "class_weights", "data_root", "fashion_mnist",
           "fashion_mnist_tensors", "find_bad_images", "image_folder", "verify_fashion_mnist", "write_image_folder"]


FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


#: sha256 of the decompressed idx files (the .gz files differ between mirrors; their contents do not).
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


SETUP_COMMAND = "python course.py setup"


_verified: dict[tuple[str, int, int], bool] = {}



class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where the loader looked."""



class CorruptDatasetError(ValueError):
    """A dataset file is there but its contents are wrong (truncated, corrupt or another file)."""



def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder datasets, weights and checkpoints live in.

    Args:
        root: an explicit folder; wins over everything else.

    Returns:
        ``root`` if given, else ``$CVLAB_DATA`` if set, else the project's ``data/`` folder
        (next to ``pyproject.toml``), else ``./data``. The folder need not exist yet.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("CVLAB_DATA"):
        return Path(os.environ["CVLAB_DATA"]).expanduser()
    project = Path(__file__).resolve().parents[1]
    if (project / "pyproject.toml").is_file():
        return project / "data"
    return Path.cwd() / "data"



def _raw_folder(root: Path) -> Path:
    return root / "FashionMNIST" / "raw"



def verify_fashion_mnist(raw: Path, names: list[str] | None = None) -> None:
    """Check Fashion-MNIST's idx files in the folder ``raw`` against their sha256.

    Args:
        raw: the folder (``<root>/FashionMNIST/raw``).
        names: the files to check (default: all four); a file already checked and unchanged
            (same size and modification time) is not hashed again in this process.

    Raises:
        DatasetNotFoundError: a file is missing (the message names them and the set-up command).
        CorruptDatasetError: a file's sha256 is wrong (truncated, corrupt or another file).
    """
    names = list(FASHION_MNIST_SHA256) if names is None else names
    missing = [n for n in names if not (raw / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {raw} (missing {', '.join(missing)}). Run "
            f"`{SETUP_COMMAND}` in the project folder to place it (offline from Debian's "
            "dataset-fashion-mnist, or downloaded), or call "
            "cvlab.datasets.fashion_mnist(..., download=True) when you are online.")
    for n in names:
        p = raw / n
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if _verified.get(key):
            continue
        digest = sha256_file(p)
        if digest != FASHION_MNIST_SHA256[n]:
            raise CorruptDatasetError(
                f"{p} is corrupt or truncated: its sha256 is {digest[:12]}…, expected "
                f"{FASHION_MNIST_SHA256[n][:12]}… ({st.st_size} bytes). Delete the folder {raw} "
                f"and run `{SETUP_COMMAND}` to place a fresh copy.")
        _verified[key] = True



def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, transform=None,
                  download: bool = False) -> datasets.FashionMNIST:
    """torchvision's ``FashionMNIST`` dataset for a split, checked first.

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        root: data root (see ``data_root``).
        transform: applied to each PIL image (e.g. ``v2.Compose([v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True)])``); None returns PIL images.
        download: let torchvision download the files if they are missing (needs internet);
            they are checked by sha256 all the same.

    Returns:
        the dataset; ``.classes`` holds the 10 class names, ``.data`` the uint8 images
        (N, 28, 28) and ``.targets`` the int64 labels (N,).

    Raises:
        ValueError: an unknown split.
        DatasetNotFoundError: the files are missing and ``download`` is False.
        CorruptDatasetError: a file's sha256 is wrong.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = data_root(root)
    names = [n for n in FASHION_MNIST_SHA256 if n.startswith("train" if split == "train" else "t10k")]
    if download and not all((_raw_folder(root) / n).is_file() for n in names):
        datasets.FashionMNIST(str(root), train=split == "train", download=True)  # torchvision's own download
    verify_fashion_mnist(_raw_folder(root), names)
    return datasets.FashionMNIST(str(root), train=split == "train", transform=transform, download=False)



def fashion_mnist_tensors(split: str = "train", root: str | os.PathLike | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole Fashion-MNIST split as tensors.

    Returns:
        ``images`` uint8 (N, 1, 28, 28) in [0, 255] and ``labels`` int64 (N,) in [0, 9];
        N = 60,000 for "train", 10,000 for "test".

    Raises:
        as ``fashion_mnist``.
    """
    ds = fashion_mnist(split, root)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.clone()



def image_folder(root: str | os.PathLike, transform=None, mode: str = "RGB") -> datasets.ImageFolder:
    """torchvision's ``ImageFolder`` over ``root/<class name>/<image file>``, with a safe loader.

    Every image is opened with ``open_image``: grayscale, RGBA, palette and 16-bit files are
    converted to ``mode``; a corrupt file raises an error that names it (find them all up front
    with ``find_bad_images``).

    Args:
        root: a folder with one sub-folder per class; classes are the sorted sub-folder names.
        transform: applied to each PIL image (e.g. a preset from ``cvlab.transforms``).
        mode: "RGB" or "GRAY".

    Returns:
        the dataset: ``.classes`` (names), ``.class_to_idx``, ``.samples`` (path, index) pairs,
        ``.targets``; items are ``(transform(image), class index)``.

    Raises:
        DatasetNotFoundError: ``root`` does not exist, or has no class folder with images in it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"no image folder at {root}: expected {root}/<class name>/<image files>")
    try:
        # partial and a module-level function, not lambdas: DataLoader workers started with "spawn"
        # (Windows, macOS) receive the dataset pickled, and a lambda cannot be pickled
        return datasets.ImageFolder(str(root), transform=transform, loader=functools.partial(open_image, mode=mode),
                                    is_valid_file=_is_image_file)
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"{root} has no class folders with images in them ({exc}); expected "
                                   f"{root}/<class name>/<image files> with extensions {', '.join(IMAGE_EXTENSIONS)}") from None



def _is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)



def write_image_folder(root: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor,
                       class_names: list[str]) -> Path:
    """Write images as PNG files in ``root/<class name>/<index>.png``, the layout ``ImageFolder`` reads.

    Args:
        root: the folder to write (made if missing; existing files of the same name are replaced).
        images: uint8 (N, C, H, W), C = 1 or 3.
        labels: (N,) class indices.
        class_names: names of the classes; "/" in a name becomes "_" (it cannot be in a folder name).
            Only classes with at least one image get a folder.

    Returns:
        ``root``.

    Raises:
        TypeError / ValueError: wrong dtype or shape, or lengths that do not match.
    """
    from PIL import Image

    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise TypeError("images must be a uint8 tensor shaped (N, C, H, W) with C = 1 or 3")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    root = Path(root)
    folders = [name.replace("/", "_") for name in class_names]
    for label in sorted(set(torch.as_tensor(labels).tolist())):
        (root / folders[label]).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, torch.as_tensor(labels).tolist())):
        arr = img.permute(1, 2, 0).numpy()
        Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(root / folders[label] / f"{i:05d}.png")
    return root



def find_bad_images(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """Every image file under ``root`` that cannot be decoded, with the reason.

    Returns:
        ``(path, reason)`` pairs, sorted by path; empty when every file decodes.

    Raises:
        DatasetNotFoundError: ``root`` is not a folder (a wrong path is not a clean folder).
    """
    if not Path(root).is_dir():
        raise DatasetNotFoundError(f"no folder at {root}: nothing to scan (check the path)")
    bad = []
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            try:
                open_image(path, "UNCHANGED")
            except ValueError as exc:
                bad.append((path, str(exc)))
    return bad



def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Samples per class: int64 (num_classes,). Raises ValueError for labels outside 0..num_classes-1."""
    labels = torch.as_tensor(labels).long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    return torch.bincount(labels, minlength=num_classes)



def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class weights N / (K * count), scikit-learn's "balanced" heuristic: float32 (K,).

    Pass them to ``nn.CrossEntropyLoss(weight=...)`` so every class weighs the same in the loss
    however rare it is. A class with no samples gets weight 0.
    """
    counts = class_counts(labels, num_classes).float()
    weights = counts.sum() / (num_classes * counts)
    return torch.where(counts > 0, weights, torch.zeros_like(weights))
