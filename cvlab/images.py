"""Images on the ground floor: reading files, the photos that ship in packages, and the
conversions between formats (bit depths, dtypes, channel counts, PIL / NumPy / torch).

Every other module that touches pixels uses these, so there is one place where a 16-bit
grayscale PNG, an RGBA logo or a uint8 batch becomes what a model or a plot needs. Conventions:
tensors are (C, H, W) or (N, C, H, W); uint8 holds [0, 255], float holds [0, 1].

Files are decoded with Pillow rather than ``torchvision.io.decode_image``, whose image decoding
is deprecated since torchvision 0.29 (moving to TorchCodec); the resulting tensors are the same.
"""
from __future__ import annotations

import os
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
    path = Path(photo)
    if not path.suffix and not path.exists():
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
        image: a PIL image of any mode (L, LA, P, RGBA, CMYK, I;16, ...), or a uint8 or float
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
        image = to_8_bits(image)  # 16-bit gray: scaled to 8 bits, not clipped
        if "A" in image.getbands() or "transparency" in image.info:
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
