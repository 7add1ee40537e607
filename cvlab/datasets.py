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
import re
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

    Every file is checked before anything is raised, so one message names all the files that
    are missing or wrong.

    Args:
        raw: the folder (``<root>/FashionMNIST/raw``).
        names: the files to check (default: all four); a file already checked and unchanged
            (same size and modification time) is not hashed again in this process.

    Raises:
        DatasetNotFoundError: a file is missing (the message names every missing file, and any
            corrupt one, and the set-up command).
        CorruptDatasetError: a file's sha256 is wrong (truncated, empty, corrupt or another file;
            the message names every such file and the set-up command).
    """
    raw = Path(raw)
    names = list(FASHION_MNIST_SHA256) if names is None else list(names)
    missing = [n for n in names if not (raw / n).is_file()]
    corrupt = [_file_problem(raw / n) for n in names if n not in missing]
    corrupt = [c for c in corrupt if c]
    fix = f"Delete the folder {raw} and run `{SETUP_COMMAND}` in the project folder to place a fresh copy."
    if missing:
        gz = [n for n in missing if (raw / f"{n}.gz").is_file()]
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {raw} (missing {', '.join(missing)})"
            + (f"; also corrupt: {'; '.join(corrupt)}" if corrupt else "") + ". "
            + (f"{', '.join(n + '.gz' for n in gz)} is there but not decompressed (gunzip it). " if gz else "")
            + f"Run `{SETUP_COMMAND}` in the project folder to place it (offline from Debian's "
            "dataset-fashion-mnist, or downloaded), or call "
            "cvlab.datasets.fashion_mnist(..., download=True) when you are online.")
    if corrupt:
        raise CorruptDatasetError(f"Fashion-MNIST in {raw} is corrupt or truncated: {'; '.join(corrupt)}. {fix}")


#: sizes in bytes of the decompressed idx files, to tell a truncated file from another one
_FASHION_MNIST_SIZES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
                        "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}


def _file_problem(p: Path) -> str | None:
    """None if the idx file ``p`` has its sha256, else what is wrong with it, in words."""
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if _verified.get(key):
        return None
    try:
        digest = sha256_file(p)
    except OSError as exc:
        return f"{p} (cannot be read: {type(exc).__name__}: {exc})"
    expected = FASHION_MNIST_SHA256[p.name]
    if digest == expected:
        _verified[key] = True
        return None
    size = _FASHION_MNIST_SIZES[p.name]
    other = [n for n, h in FASHION_MNIST_SHA256.items() if h == digest]
    if st.st_size == 0:
        why = "empty (0 bytes)"
    elif other:
        why = f"it is {other[0]}, another Fashion-MNIST file"
    elif st.st_size < size:
        why = f"truncated: {st.st_size:,} of {size:,} bytes"
    elif st.st_size == size:
        why = f"the right size, {size:,} bytes, but corrupt contents"
    else:
        why = f"{st.st_size:,} bytes, expected {size:,}"
    return f"{p} ({why}; its sha256 is {digest[:12]}…, expected {expected[:12]}…)"



def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, transform=None,
                  download: bool = False) -> datasets.FashionMNIST:
    """torchvision's ``FashionMNIST`` dataset for a split, checked first.

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        root: data root (see ``data_root``).
        transform: applied to each PIL image (e.g. ``v2.Compose([v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True)])``); None returns PIL images.
        download: let torchvision download the files if any is missing (needs internet);
            they are checked by sha256 all the same.

    Returns:
        the dataset; ``.classes`` holds the 10 class names, ``.data`` the uint8 images
        (N, 28, 28) and ``.targets`` the int64 labels (N,).

    Raises:
        ValueError: an unknown split.
        DatasetNotFoundError: any of the four files is missing (torchvision needs all four for
            either split) and ``download`` is False, or the download failed; the message names
            the files and ``python course.py setup``.
        CorruptDatasetError: any of the four files' sha256 is wrong (truncated, empty, corrupt or
            another file); the message names them all and ``python course.py setup``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = data_root(root)
    raw = _raw_folder(root)
    # torchvision's FashionMNIST refuses either split unless all four files are there, so all four are checked
    if download and not all((raw / n).is_file() for n in FASHION_MNIST_SHA256):
        try:
            datasets.FashionMNIST(str(root), train=split == "train", download=True)  # torchvision's own download
        except Exception as exc:  # no network, a server error, a read-only folder
            raise DatasetNotFoundError(
                f"downloading Fashion-MNIST into {raw} failed ({type(exc).__name__}: {str(exc).strip()[:200]}). "
                f"Run `{SETUP_COMMAND}` in the project folder (it works offline from Debian's "
                "dataset-fashion-mnist), or try again when you are online.") from None
    verify_fashion_mnist(raw)
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



def image_folder(root: str | os.PathLike, transform=None, mode: str = "RGB", *,
                 allow_empty: bool = False) -> datasets.ImageFolder:
    """torchvision's ``ImageFolder`` over ``root/<class name>/<image file>``, with a safe loader.

    Every image is opened with ``open_image``: grayscale, RGBA, palette, 16-bit and float files
    are converted to ``mode``, and turned upright by their EXIF orientation; a corrupt file
    raises an error that names it (find them all up front with ``find_bad_images``). Hidden
    folders and files (names starting with ".", such as ``.ipynb_checkpoints`` or macOS's
    ``._photo.jpg``) are not read.

    Args:
        root: a folder with one sub-folder per class; classes are the sorted sub-folder names.
        transform: applied to each PIL image (e.g. a preset from ``cvlab.transforms``).
        mode: "RGB" or "GRAY" (every image gets the same number of channels, so they batch).
        allow_empty: keep class folders that hold no image files as classes with no samples
            (their indices stay where the sorted names put them); by default they are an error.

    Returns:
        the dataset: ``.classes`` (names), ``.class_to_idx``, ``.samples`` (path, index) pairs,
        ``.targets``; items are ``(transform(image), class index)``.

    Raises:
        ValueError: a ``mode`` other than "RGB" or "GRAY".
        TypeError: a ``transform`` that cannot be called (a list needs ``v2.Compose([...])``).
        DatasetNotFoundError: ``root`` does not exist or is a file, has no class folders (or
            holds its images directly instead of in class folders), or has class folders with
            no image files in them (named in the message) and ``allow_empty`` is False.
    """
    if mode not in ("RGB", "GRAY"):
        hint = " (Pillow's 'L' is 'GRAY' here)" if mode == "L" else ""
        raise ValueError(f"mode must be 'RGB' or 'GRAY', got {mode!r}{hint}: every image of a dataset needs the "
                         "same number of channels")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be callable, got {type(transform).__name__}; "
                        "combine a list of transforms with torchvision.transforms.v2.Compose([...])")
    root = Path(root)
    if not root.exists():
        raise DatasetNotFoundError(f"no image folder at {root}: expected {root}/<class name>/<image files>")
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root} is a file, not a folder: expected {root}/<class name>/<image files>")
    classes = _class_folders(root)
    if not classes:
        loose = sorted(p.name for p in root.iterdir() if p.is_file() and _is_image_file(p.name))
        raise DatasetNotFoundError(
            f"{root} has no class folders" + (f"; its {len(loose)} image files (e.g. {loose[0]}) must be in one "
                                              "sub-folder per class" if loose else "")
            + f": expected {root}/<class name>/<image files> with extensions {', '.join(IMAGE_EXTENSIONS)}")
    empty = [c for c in classes if not _has_image(root / c)]
    if empty and not allow_empty:
        raise DatasetNotFoundError(
            f"{len(empty)} of the {len(classes)} class folders in {root} hold no image files "
            f"(extensions {', '.join(IMAGE_EXTENSIONS)}): {', '.join(repr(c) for c in empty)}. Put images in them, "
            "delete them, or pass allow_empty=True to keep them as classes without samples.")
    # partials and module-level functions, not lambdas: DataLoader workers started with "spawn"
    # (Windows, macOS) receive the dataset pickled, and a lambda cannot be pickled
    return _ImageFolder(str(root), transform=transform, loader=functools.partial(open_image, mode=mode),
                        is_valid_file=functools.partial(_is_image_file, root=str(root)), allow_empty=allow_empty)



class _ImageFolder(datasets.ImageFolder):
    """``ImageFolder`` whose classes are the sub-folders whose names do not start with "."."""

    def find_classes(self, directory):
        classes = _class_folders(Path(directory))
        if not classes:
            raise FileNotFoundError(f"no class folders in {directory}")
        return classes, {c: i for i, c in enumerate(classes)}



def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))



def _has_image(folder: Path) -> bool:
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if any(_is_image_file(f) for f in files):
            return True
    return False



def _is_image_file(path: str, root: str | None = None) -> bool:
    """An image extension, and no hidden file or folder (".name") on the way from ``root`` (else the name)."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return False
    if root is None:
        rel = os.path.basename(path)
    else:
        rel = path[len(root):] if path.startswith(root) else os.path.relpath(path, root)
    return not any(part.startswith(".") for part in re.split(r"[\\/]", rel))



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
    """Every image file under ``root`` that cannot be read, with the reason; the scan goes on past them.

    Looks at the files ``image_folder`` would read (an image extension, no hidden file or
    folder) and opens each with ``open_image``: empty, corrupt, truncated and non-image files,
    images over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), unreadable
    files and links to missing files are all listed, none stops the scan.

    Returns:
        ``(path, reason)`` pairs, sorted by path; empty when every file decodes.

    Raises:
        DatasetNotFoundError: ``root`` does not exist or is a file (a wrong path is not a clean folder).
    """
    root = Path(root)
    if not root.exists():
        raise DatasetNotFoundError(f"no folder at {root}: nothing to scan (check the path)")
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root} is a file, not a folder: check one file with "
                                   "cvlab.images.open_image(path) instead")
    bad = []
    for here, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(here) / name
            if not _is_image_file(name):
                continue
            try:
                open_image(path, "UNCHANGED")
            except (ValueError, OSError) as exc:  # OSError: a dangling link, no permission
                bad.append((path, str(exc)))
    return sorted(bad)



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
