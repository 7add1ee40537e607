"""Images on the ground floor: reading files, the photos that ship in packages, and the
conversions between formats (bit depths, dtypes, channel counts, PIL / NumPy / torch).

Every other module that touches pixels uses these, so there is one place where a 16-bit
grayscale PNG, an RGBA logo or a uint8 batch becomes what a model or a plot needs. Conventions:
tensors are (C, H, W) or (N, C, H, W); uint8 holds [0, 255], float holds [0, 1].

Files are decoded with Pillow rather than ``torchvision.io.decode_image``, whose image decoding
is deprecated since torchvision 0.29 (moving to TorchCodec); the resulting tensors are the same.
"""
from __future__ import annotations

import difflib
import os
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "images_to_numpy", "open_image", "read_photo", "sample_photos", "to_8_bits",
           "to_float_images", "to_rgb"]

#: file extensions image folders look for (lower case)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


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
    """Open an image file with Pillow, decoded, upright and converted, naming the file on any error.

    Every Pillow mode is handled: 1 (bilevel), L, LA, P (palette, with or without transparency),
    PA, RGB, RGBA, CMYK, YCbCr, HSV, LAB (through an ICC transform), 16-bit (I;16) and 32-bit
    integer (I) and float (F) grayscale, whose values are scaled to 8 bits as ``to_8_bits``
    documents (not clipped to white). A photo whose EXIF orientation says it was taken rotated
    (a phone held upright) is turned upright (``PIL.ImageOps.exif_transpose``).

    Args:
        path: an image file (PNG, JPEG, GIF, BMP, TIFF, WEBP, ... anything Pillow reads).
        mode: "RGB" (3 channels: grayscale repeated, alpha dropped), "GRAY" (1 channel,
            ITU-R 601-2 luma) or "UNCHANGED" (as stored, as one of L, LA, RGB or RGBA: bilevel
            and high-bit-depth grayscale become L; palette, CMYK, YCbCr, HSV and LAB become RGB,
            or RGBA where the file has transparency).

    Returns:
        a loaded ``PIL.Image.Image`` in mode "RGB", "L", or (UNCHANGED) "L"/"LA"/"RGB"/"RGBA".

    Raises:
        TypeError: ``path`` is not a str or path.
        FileNotFoundError: no file at that path (the message says whether the folder is missing
            too, and lists similar file names when the folder exists).
        PermissionError: the file cannot be read (permissions).
        ValueError: an unknown mode; a folder, an empty (0-byte) file, a file that is not an
            image, or one that cannot be decoded (corrupt or truncated); an image with more
            pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` (a possible decompression bomb: the message
            gives the count and the limit). Every message names the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if mode not in _READ_MODES:
        hint = {"L": " (Pillow's 'L' is 'GRAY' here)", "RGBA": " ('UNCHANGED' keeps an alpha channel)",
                "LA": " ('UNCHANGED' keeps an alpha channel)"}.get(mode, "") if isinstance(mode, str) else ""
        raise ValueError(f"mode must be 'RGB', 'GRAY' or 'UNCHANGED', got {mode!r}{hint}")
    path = _existing_file(path)
    try:
        with warnings.catch_warnings():
            # more than MAX_IMAGE_PIXELS is refused below with the file's name, not only warned about
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise ValueError(_too_many_pixels(path, int(found.group(1)) if found else None)) from None
    except UnidentifiedImageError:
        raise ValueError(f"could not decode {path}: not an image file Pillow can read (it starts with "
                         f"{_head(path)!r}{_looks_like(path)}). Replace or delete it.") from None
    except PermissionError:
        raise PermissionError(f"cannot read {path}: permission denied; check the file's permissions") from None
    except _DECODE_ERRORS as exc:
        raise ValueError(_undecodable(path, exc)) from None
    with img:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and img.width * img.height > limit:
            raise ValueError(_too_many_pixels(path, img.width * img.height, img.size))
        try:
            img.load()
            if img.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):  # 1: already upright
                img = ImageOps.exif_transpose(img)
        except _DECODE_ERRORS as exc:
            raise ValueError(_undecodable(path, exc)) from None
    try:
        return _convert(to_8_bits(img), mode)
    except ValueError as exc:  # a mode Pillow cannot convert (e.g. premultiplied "La")
        raise ValueError(f"could not convert {path} from Pillow mode {img.mode!r} to {mode} ({exc}); "
                         "save it as an ordinary RGB or grayscale image (PNG, JPEG) instead") from None


#: modes ``open_image`` reads into
_READ_MODES = ("RGB", "GRAY", "UNCHANGED")
_EXIF_ORIENTATION = 0x0112
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def _existing_file(path) -> Path:
    """``path`` as a Path to a non-empty file, or an error saying what is there instead."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"expected an image file path (str or pathlib.Path), got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file; give a file in it (a folder of class folders "
                         "is read with cvlab.datasets.image_folder)")
    if not path.is_file():
        folder = path.parent
        if path.is_symlink():
            raise FileNotFoundError(f"no image file at {path}: it is a link to {os.readlink(path)}, "
                                    "which does not exist")
        if not folder.is_dir():
            raise FileNotFoundError(f"no image file at {path}: the folder {folder} does not exist either; "
                                    "check the path")
        names = {p.name.lower(): p.name for p in folder.iterdir()}  # "cat.PNG" is near "cat.png"
        near = [names[n] for n in difflib.get_close_matches(path.name.lower(), list(names), n=3, cutoff=0.6)]
        raise FileNotFoundError(f"no image file {path.name!r} in {folder}"
                                + (f"; similar names there: {near}" if near else "; check the file name"))
    if path.stat().st_size == 0:
        raise ValueError(f"could not decode {path}: the file is empty (0 bytes), e.g. an interrupted copy or "
                         "download. Replace or delete it.")
    return path


def _head(path: Path, n: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _looks_like(path: Path) -> str:
    head = _head(path, 256).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return ": an HTML page, perhaps a failed download"
    if head.startswith((b"{", b"[")):
        return ": JSON text"
    if head.startswith(b"pk\x03\x04"):
        return ": a ZIP archive"
    return ""


def _undecodable(path: Path, exc: BaseException) -> str:
    return (f"could not decode {path}: the file is corrupt, truncated or not an image "
            f"({type(exc).__name__}: {str(exc)[:150]}). Replace or delete it.")


def _too_many_pixels(path: Path, pixels: int | None, size: tuple[int, int] | None = None) -> str:
    from PIL import Image

    what = f"{pixels:,} pixels" + (f" ({size[0]} x {size[1]})" if size else "") if pixels else "too many pixels"
    return (f"{path} has {what}, more than Pillow's limit PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS:,}: "
            "a possible decompression bomb, refused. If you trust the file, raise the limit first "
            "(PIL.Image.MAX_IMAGE_PIXELS = None lifts it) or shrink the image.")


def _convert(img, mode: str):
    """An 8-bit PIL image (any mode but I;16/I/F) in the mode ``open_image`` promises."""
    if mode == "UNCHANGED":
        if img.mode in ("L", "LA", "RGB", "RGBA"):
            return img
        if img.mode == "1":
            return img.convert("L")
        if img.mode == "LAB":
            return _lab_to_rgb(img)
        return img.convert("RGBA" if img.has_transparency_data else "RGB")
    if img.mode == "LAB":
        img = _lab_to_rgb(img)
    elif img.mode == "P" and isinstance(img.info.get("transparency"), bytes):
        img = img.convert("RGBA")  # the same colours, without Pillow's warning about byte transparency
    return img.convert("RGB" if mode == "RGB" else "L")


def _lab_to_rgb(img):
    from PIL import ImageCms

    lab_to_srgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    return ImageCms.applyTransform(img, lab_to_srgb)


def to_8_bits(img):
    """A grayscale PIL image of more than 8 bits as 8-bit "L", scaled rather than clipped to white
    (Pillow's own ``convert("L")`` clips at 255); any other image is returned as it is.

    * "I;16" (and "I;16B", "I;16L", "I;16N"), 16-bit: value // 257, so 65535 -> 255.
    * "I", 32-bit integer: as 16-bit when every value is in 0..65535 (16-bit PGM files decode
      to "I"); otherwise scaled by its own range, minimum -> 0 and maximum -> 255.
    * "F", 32-bit float: values in [0, 1] (cvlab's float convention) are multiplied by 255 and
      rounded; otherwise scaled by its own range like "I". NaN becomes 0; +-inf the largest and
      smallest finite value. An image of one value outside these ranges becomes 0 (black).
    """
    from PIL import Image

    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return img
    if img.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(img, dtype=np.int64) // 257).astype(np.uint8), mode="L")
    arr = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(arr)
    lo, hi = (float(arr[finite].min()), float(arr[finite].max())) if finite.any() else (0.0, 0.0)
    nan = np.isnan(arr)
    arr = np.clip(np.where(nan, lo, arr), lo, hi)  # +-inf -> the largest / smallest finite value
    if img.mode == "I" and lo >= 0 and hi <= 65535:
        out = arr // 257
    elif img.mode == "F" and lo >= 0 and hi <= 1:
        out = np.round(arr * 255)
    else:
        out = np.round((arr - lo) / max(hi - lo, 1e-12) * 255)
    out[nan] = 0
    return Image.fromarray(out.astype(np.uint8), mode="L")


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
        ValueError: an unknown photo name or mode, or a file that cannot be read as an image
            (as ``open_image``: empty, corrupt, not an image, too many pixels); the message
            names the file.
        FileNotFoundError: no file at that path (a name with a folder or a suffix is a path).
        TypeError, PermissionError: as ``open_image``.
    """
    if not isinstance(photo, (str, os.PathLike)):
        raise TypeError(f"expected a photo name or an image file path, got {type(photo).__name__}")
    path = Path(photo)
    if not path.suffix and len(path.parts) == 1 and not path.exists():
        photos = sample_photos()
        if str(photo) not in photos:
            raise ValueError(f"unknown photo {photo!r}; give a file path or one of {sorted(photos)}")
        path = photos[str(photo)]
    arr = np.asarray(open_image(path, mode))
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


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


def to_rgb(image):
    """Any photo as 3-channel RGB, as ImageNet-pretrained models expect.

    Grayscale is repeated into three channels; an alpha channel is composited over white (a
    transparent pixel becomes white, not the black that dropping alpha often gives).

    Args:
        image: a PIL image of any mode (L, LA, P, RGBA, CMYK, LAB, I;16, I, F, ...; high bit
            depths scaled as ``to_8_bits`` documents), or a uint8 or float
            tensor (C, H, W) / (B, C, H, W) with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or
            4 (RGBA), or (H, W) (gray). Float values are taken to be in [0, 1].

    Returns:
        the same kind: a PIL image in mode "RGB", or a tensor of the same dtype with C = 3
        ((3, H, W) for a (H, W) input).

    Raises:
        TypeError: neither a PIL image nor a tensor.
        ValueError: a tensor whose channel axis (-3) is not 1-4 long.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode == "RGB":
            return image
        image = to_8_bits(image)  # 16-bit, 32-bit and float gray: scaled to 8 bits, not clipped
        if image.mode == "LAB":  # its "A" band is a colour axis, not alpha
            return _lab_to_rgb(image)
        if image.has_transparency_data:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"expected a PIL image or a tensor (C, H, W), got {type(image).__name__}")
    x = image[None] if image.ndim == 2 else image
    c = x.shape[-3] if x.ndim >= 3 else 0
    if x.ndim > 4 or c not in (1, 2, 3, 4):
        raise ValueError(f"expected an image tensor (C, H, W) or (B, C, H, W) with 1-4 channels in axis -3, got "
                         f"shape {tuple(image.shape)}; a (H, W, C) array from NumPy/PIL needs .permute(2, 0, 1)")
    if c == 3:
        return x
    if c == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).clone()
    color, alpha = x.narrow(-3, 0, c - 1), x.narrow(-3, c - 1, 1)
    white = 255.0 if x.dtype == torch.uint8 else 1.0
    a = alpha.float() / white
    out = color.float() * a + white * (1 - a)
    out = out.expand(*out.shape[:-3], 3, *out.shape[-2:])
    return out.round().to(torch.uint8) if x.dtype == torch.uint8 else out.to(x.dtype).contiguous()


def images_to_numpy(images, normalize: bool = False) -> np.ndarray:
    """Check and convert a batch of images for plotting.

    Args:
        images: a tensor or array shaped (N, C, H, W) (C = 1 or 3), (N, H, W), or one image
            (C, H, W) / (H, W); uint8 in [0, 255] or float in [0, 1].
        normalize: rescale each image to [0, 1] by its own min and max.

    Returns:
        float array (N, H, W, C) in [0, 1], C = 1 or 3.

    Raises:
        TypeError: not a tensor or array, or a dtype that is neither uint8 nor floating point.
        ValueError: a shape that is not an image batch, a channel count other than 1 or 3,
            or float values outside [0, 1] without ``normalize=True``.
    """
    if isinstance(images, torch.Tensor):
        arr = images.detach().cpu().numpy()
    elif isinstance(images, np.ndarray):
        arr = images
    else:
        raise TypeError(f"expected images as a torch.Tensor or numpy array, got {type(images).__name__}")
    shape = arr.shape
    if arr.ndim == 2:
        arr = arr[None, None]
    elif arr.ndim == 3:
        # one (C, H, W) image with C in {1, 3}, else a batch (N, H, W) of grayscale images
        arr = arr[None] if shape[0] in (1, 3) else arr[:, None]
    elif arr.ndim != 4:
        raise ValueError(f"expected images shaped (N, C, H, W), (N, H, W), (C, H, W) or (H, W), got {shape}")
    if arr.shape[1] not in (1, 3):
        hint = " (that looks like HWC: use img.permute(2, 0, 1) for a tensor)" if arr.shape[-1] in (1, 3) else ""
        raise ValueError(f"expected 1 or 3 channels in axis 1 of (N, C, H, W), got shape {shape}{hint}")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if normalize:
            lo = arr.min(axis=(1, 2, 3), keepdims=True)
            hi = arr.max(axis=(1, 2, 3), keepdims=True)
            arr = (arr - lo) / np.maximum(hi - lo, 1e-12)
        elif arr.size and (np.nanmin(arr) < -1e-6 or np.nanmax(arr) > 1 + 1e-6):
            raise ValueError(f"float images must be in [0, 1], got values in [{np.nanmin(arr):.3g}, "
                             f"{np.nanmax(arr):.3g}]; undo the normalisation first or pass normalize=True")
    else:
        raise TypeError(f"expected uint8 or floating-point images, got dtype {arr.dtype}")
    return np.transpose(arr, (0, 2, 3, 1))
