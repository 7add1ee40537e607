"""Datasets and data loaders: Fashion-MNIST through torchvision, found offline or downloaded.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, arXiv:1708.07747; Zalando, MIT licence):
70,000 grayscale 28x28 images of clothing in 10 classes, 60,000 for training and 10,000 for test.

Where the data lives: ``root`` argument > environment variable ``CVLAB_DATA`` > the project's
``data/`` folder. torchvision's ``FashionMNIST(root)`` reads the four decompressed idx files in
``root/FashionMNIST/raw/``; ``prepare_fashion_mnist`` places them there from Debian's
``dataset-fashion-mnist`` mirror when the machine has it (installing it with apt when it can),
else through torchvision's own download, and checks every file's sha256.

Two loaders with the same contract (iterate to get ``(x, y)``: ``x`` float32 (B, 1, 28, 28) in
[0, 1], ``y`` int64 (B,)):

* ``torch.utils.data.DataLoader`` over the torchvision dataset: the general path, one image at a
  time through a transform (what you use for images on disk and for augmentation).
* ``InMemoryLoader``: the whole split held as one uint8 tensor, shuffled and converted a batch at
  a time. Same images, same labels, many times faster for a small dataset on a CPU.
"""
from __future__ import annotations

import functools
import gzip
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from .utils import sha256_file

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_SHA256",
    "CorruptDatasetError",
    "DatasetNotFoundError",
    "IMAGE_EXTENSIONS",
    "InMemoryLoader",
    "balanced_sampler",
    "class_counts",
    "to_8_bits",
    "class_weights",
    "data_root",
    "fashion_mnist",
    "fashion_mnist_loaders",
    "fashion_mnist_tensors",
    "find_bad_images",
    "write_image_folder",
    "image_folder",
    "open_image",
    "prepare_fashion_mnist",
    "read_photo",
    "sample_photos",
    "seed_worker",
    "to_float_images",
]

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

#: Debian's package ``dataset-fashion-mnist`` installs the gzipped files here.
DEBIAN_MIRROR = Path("/usr/share/datasets/fashion-mnist")
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


def _verify_files(raw: Path, names: list[str]) -> None:
    """Raise DatasetNotFoundError / CorruptDatasetError unless every named file is right."""
    missing = [n for n in names if not (raw / n).is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {raw} (missing {', '.join(missing)}). Run "
            f"`{SETUP_COMMAND}` in the project folder to place it (offline from Debian's "
            "dataset-fashion-mnist, or downloaded), or call "
            "cvlab.data.fashion_mnist(..., download=True) when you are online.")
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


def prepare_fashion_mnist(root: str | os.PathLike | None = None, *, mirror: str | os.PathLike = DEBIAN_MIRROR,
                          allow_apt: bool = True, allow_download: bool = True, verbose: bool = True) -> Path:
    """Place Fashion-MNIST's four idx files in ``<root>/FashionMNIST/raw`` and check them.

    Order of sources: files already in place (checked by sha256) > the local mirror
    (Debian's ``dataset-fashion-mnist``: ``mirror/*.gz``) > installing that package with apt
    (only when ``allow_apt``, apt-get exists and this process runs as root) > torchvision's
    download (only when ``allow_download``). Idempotent: a second call only re-checks checksums.

    Args:
        root: data root (see ``data_root``).
        mirror: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
        allow_apt: may install the Debian package.
        allow_download: may download through torchvision.
        verbose: print what it does.

    Returns:
        the raw folder.

    Raises:
        DatasetNotFoundError: no source worked (the message lists what was tried).
        CorruptDatasetError: a file arrived but its sha256 is wrong.
    """
    raw = _raw_folder(data_root(root))
    names = list(FASHION_MNIST_SHA256)
    say = print if verbose else (lambda *a, **k: None)

    def present() -> bool:
        return all((raw / n).is_file() for n in names)

    if present():
        _verify_files(raw, names)
        say(f"Fashion-MNIST: in place in {raw} (sha256 checked)")
        return raw

    tried = []
    mirror = Path(mirror)
    if not all((mirror / f"{n}.gz").is_file() for n in names) and allow_apt and shutil.which("apt-get") \
            and hasattr(os, "geteuid") and os.geteuid() == 0:
        say("Fashion-MNIST: installing Debian's dataset-fashion-mnist with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
        tried.append("apt-get install dataset-fashion-mnist")
    if all((mirror / f"{n}.gz").is_file() for n in names):
        say(f"Fashion-MNIST: decompressing the local mirror {mirror} into {raw}")
        raw.mkdir(parents=True, exist_ok=True)
        for n in names:
            tmp = raw / f".{n}.tmp"
            with gzip.open(mirror / f"{n}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, raw / n)
        _verify_files(raw, names)
        say("Fashion-MNIST: placed and sha256 checked")
        return raw
    tried.append(f"local mirror {mirror}")
    if allow_download:
        say("Fashion-MNIST: downloading through torchvision")
        try:
            datasets.FashionMNIST(str(data_root(root)), train=True, download=True)
            datasets.FashionMNIST(str(data_root(root)), train=False, download=True)
        except Exception as exc:  # network errors come in many types
            tried.append(f"torchvision download ({type(exc).__name__}: {str(exc)[:120]})")
        else:
            _verify_files(raw, names)
            say("Fashion-MNIST: downloaded and sha256 checked")
            return raw
    raise DatasetNotFoundError(
        f"Could not place Fashion-MNIST in {raw}; tried: {'; '.join(tried)}. Install Debian's "
        "package (sudo apt-get install dataset-fashion-mnist) or connect to the internet, then run "
        f"`{SETUP_COMMAND}` again.")


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None, transform=None,
                  download: bool = False) -> datasets.FashionMNIST:
    """torchvision's ``FashionMNIST`` dataset for a split, checked first.

    Args:
        split: "train" (60,000 images) or "test" (10,000).
        root: data root (see ``data_root``).
        transform: applied to each PIL image (e.g. ``v2.Compose([v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True)])``); None returns PIL images.
        download: let torchvision download the files if they are missing (needs internet).

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
        prepare_fashion_mnist(root, allow_apt=False)
    _verify_files(_raw_folder(root), names)
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


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [0, 1], exactly as ``v2.ToDtype(float32, scale=True)``.

    Args:
        images: uint8 tensor of any shape ending in (C, H, W).

    Raises:
        TypeError: if ``images`` is not a uint8 tensor.
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"expected a uint8 image tensor, got {got}")
    # the two operations of torchvision's to_dtype kernel for uint8 -> float, without its dispatcher
    return images.to(torch.float32).mul_(1.0 / 255)


class InMemoryLoader:
    """Batches from a dataset held in memory as one tensor: the DataLoader contract, much faster.

    Iterating yields ``(x, y)`` with ``x`` float32 (B, C, H, W) in [0, 1] (converted from uint8
    a batch at a time, exactly as ``v2.ToDtype(torch.float32, scale=True)`` does per image) and
    ``y`` int64 (B,). Float inputs, such as preprocessed images or features cached from a frozen
    backbone (``cvlab.models.extract_features``), are batched as they are. ``len(loader)`` is the number of batches, ``len(loader.dataset)`` the number
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
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 device: str | torch.device | None = None, sampler: torch.utils.data.Sampler | None = None):
        is_float = isinstance(images, torch.Tensor) and images.is_floating_point() and images.ndim >= 1
        if not is_float and (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4):
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"images must be a uint8 tensor shaped (N, C, H, W) or a float tensor (N, ...), got {got}; "
                            "use cvlab.data.fashion_mnist_tensors() or add a channel axis with .unsqueeze(1)")
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


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` for a DataLoader: seed NumPy and ``random`` in each worker process.

    PyTorch seeds each worker's torch RNG from the loader's generator (base seed + worker id),
    but not NumPy's or Python's, so a transform using those would repeat across workers or runs.
    This derives both from the worker's torch seed. Pass it with a seeded generator:
    ``DataLoader(..., num_workers=2, worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(0))``.
    """
    import random

    import numpy as np
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def fashion_mnist_loaders(batch_size: int = 32, *, root: str | os.PathLike | None = None,
                          in_memory: bool = True, num_workers: int = 0, seed: int = 42,
                          train_limit: int | None = None) -> tuple:
    """Train and test loaders for Fashion-MNIST, with the same (x, y) contract either way.

    Args:
        batch_size: samples per batch.
        root: data root (see ``data_root``).
        in_memory: True gives ``InMemoryLoader``s; False gives ``DataLoader``s over torchvision's
            dataset with the per-image transform ``v2.ToImage() + v2.ToDtype(float32, scale=True)``.
        num_workers: DataLoader worker processes (only with ``in_memory=False``). 0 loads in
            the main process, which is the safe choice in notebooks and on Windows/macOS.
        seed: seeds the training loader's shuffling, so the order is repeatable.
        train_limit: use only the first ``train_limit`` training images (for quick experiments).

    Returns:
        ``(train_loader, test_loader)``: training shuffled, test in file order.

    Raises:
        as ``fashion_mnist``; ValueError for a bad ``train_limit``.
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
    common = dict(batch_size=batch_size, num_workers=num_workers, worker_init_fn=seed_worker,
                  persistent_workers=num_workers > 0)
    return (DataLoader(train_ds, shuffle=True, generator=torch.Generator().manual_seed(seed), **common),
            DataLoader(test_ds, shuffle=False, **common))


def sample_photos() -> dict[str, Path]:
    """Real photos that ship inside installed packages, so lessons work offline.

    Returns:
        name -> file path, for those packages that are installed: scikit-image's ``chelsea``
        (a cat), ``coffee``, ``astronaut`` (Eileen Collins), ``rocket`` and ``motorcycle``;
        matplotlib's ``grace_hopper``; scikit-learn's ``china`` and ``flower``.
    """
    found: dict[str, Path] = {}
    try:
        import skimage.data
        folder = Path(skimage.data.__file__).parent
        for name, file in (("chelsea", "chelsea.png"), ("coffee", "coffee.png"), ("astronaut", "astronaut.png"),
                           ("rocket", "rocket.jpg"), ("motorcycle", "motorcycle_left.png")):
            if (folder / file).is_file():
                found[name] = folder / file
    except ImportError:
        pass
    try:
        import matplotlib
        p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            found["grace_hopper"] = p
    except ImportError:
        pass
    try:
        import sklearn.datasets
        folder = Path(sklearn.datasets.__file__).parent / "images"
        for name in ("china", "flower"):
            if (folder / f"{name}.jpg").is_file():
                found[name] = folder / f"{name}.jpg"
    except ImportError:
        pass
    return found


def open_image(path: str | os.PathLike, mode: str = "RGB"):
    """Open an image file with Pillow, decoded and converted, naming the file on any error.

    Args:
        path: an image file (PNG, JPEG, GIF, BMP, TIFF, WEBP, ... anything Pillow reads).
        mode: "RGB" (3 channels: grayscale repeated, alpha dropped), "GRAY" (1 channel,
            ITU-R 601-2 luma) or "UNCHANGED" (as stored: L, LA, RGB or RGBA). 16-bit images
            are scaled to 8 bits (value // 257) first, so they are not clipped to white.

    Returns:
        a loaded ``PIL.Image.Image`` in mode "RGB", "L", or (UNCHANGED) "L"/"LA"/"RGB"/"RGBA".

    Raises:
        FileNotFoundError: no file at that path.
        ValueError: an unknown mode, or a file that cannot be decoded (corrupt, truncated, or
            not an image); the message names the file.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if mode not in ("RGB", "GRAY", "UNCHANGED"):
        raise ValueError(f"mode must be 'RGB', 'GRAY' or 'UNCHANGED', got {mode!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as img:
            img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"could not decode {path}: the file is corrupt, truncated or not an image "
                         f"({type(exc).__name__}: {str(exc)[:150]}). Replace or delete it.") from None
    img = to_8_bits(img)
    if mode == "RGB":
        return img.convert("RGB")
    if mode == "GRAY":
        return img.convert("L")
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    return img


def to_8_bits(img):
    """A 16-bit (or 32-bit integer) grayscale PIL image as 8-bit "L", scaled (value // 257) rather
    than clipped to white, as Pillow's own ``convert`` would; any other image is returned as it is."""
    import numpy as np
    from PIL import Image

    if img.mode not in ("I;16", "I;16B", "I;16L", "I"):
        return img
    arr = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) // 257
    return Image.fromarray(arr.astype(np.uint8), mode="L")


def read_photo(photo: str | os.PathLike, mode: str = "RGB") -> torch.Tensor:
    """Read and decode an image file with Pillow into a uint8 tensor.

    Pillow is used rather than ``torchvision.io.decode_image``, whose image decoding is
    deprecated since torchvision 0.29 (moving to TorchCodec); the result is the same tensor.

    Args:
        photo: a name from ``sample_photos()`` (e.g. "chelsea") or a path to an image file.
        mode: as ``open_image``: "RGB", "GRAY" or "UNCHANGED".

    Returns:
        uint8 tensor (C, H, W) in [0, 255]; C = 3 (RGB), 1 (GRAY) or as stored (UNCHANGED).

    Raises:
        ValueError: an unknown photo name or mode, or a file that cannot be decoded
            (corrupt, truncated, or not an image); the message names the file.
        FileNotFoundError: no file at that path.
    """
    import numpy as np

    path = Path(photo)
    if not path.suffix and not path.exists():
        photos = sample_photos()
        if str(photo) not in photos:
            raise ValueError(f"unknown photo {photo!r}; give a file path or one of {sorted(photos)}")
        path = photos[str(photo)]
    arr = np.asarray(open_image(path, mode))
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


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


def _is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def find_bad_images(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """Every image file under ``root`` that cannot be decoded, with the reason.

    Returns:
        ``(path, reason)`` pairs, sorted by path; empty when every file decodes.
    """
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


def balanced_sampler(labels: torch.Tensor, num_samples: int | None = None, *, seed: int = 0
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
