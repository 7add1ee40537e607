"""Hostile inputs (issue 9): every bad input a learner can give gets a clear answer, either the right
result or an error that names the file or argument and the fix. Each case asserts that answer's
text or values, not only that something was raised.

Categories: Fashion-MNIST files, image files, image folders, cached pretrained weights, model
input sizes, interpretation and widgets.
"""
import gzip
import os
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cvlab import datasets as D
from cvlab.images import open_image, read_photo, to_rgb
from cvlab.loaders import fashion_mnist_loaders
from cvlab.models import MLP, CompactCNN, LinearModel, TinyVGG

SETUP = "python course.py setup"
TORCHVISION_HINT = "You can use download=True"
NAMES = list(D.FASHION_MNIST_SHA256)


# ==================================================================================================
# 1. Fashion-MNIST files: any subset missing or corrupt, through every entry point
# ==================================================================================================

def _raw_folder(fmnist_root, root, spec):
    """``root/FashionMNIST/raw`` with the files of ``spec`` broken and the others linked to the real
    (read-only) ones. Broken files are new files, never written through a link."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    real = fmnist_root / "FashionMNIST" / "raw"
    for name in NAMES:
        how = spec.get(name)
        if how is None:
            (raw / name).symlink_to(real / name)
        elif how == "truncated":
            (raw / name).write_bytes((real / name).read_bytes()[:1000])
        elif how == "empty":
            (raw / name).write_bytes(b"")
        elif how == "flipped":
            data = bytearray((real / name).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (raw / name).write_bytes(bytes(data))
        elif how.startswith("is:"):  # another Fashion-MNIST file under this name
            (raw / name).write_bytes((real / how[3:]).read_bytes())
        elif how == "gz":  # downloaded by hand, never decompressed
            (raw / f"{name}.gz").write_bytes(gzip.compress(b"\0" * 16))
        else:
            assert how == "missing"
    return raw


def _shallow(info, frames=6):
    """The error comes from cvlab's checks, a few frames down, not from deep inside torchvision."""
    tb = traceback.extract_tb(info.tb)
    assert len(tb) <= frames, [f.name for f in tb]
    assert all("torchvision" not in f.filename for f in tb)
    assert TORCHVISION_HINT not in str(info.value)


DATASET_CASES = {
    # id: (spec, split to load, error class, texts the message must hold)
    "train-images-missing, load test": ({"train-images-idx3-ubyte": "missing"}, "test",
                                        D.DatasetNotFoundError, ["missing train-images-idx3-ubyte"]),
    "t10k-labels-missing, load train": ({"t10k-labels-idx1-ubyte": "missing"}, "train",
                                        D.DatasetNotFoundError, ["missing t10k-labels-idx1-ubyte"]),
    "all four missing": ({n: "missing" for n in NAMES}, "train", D.DatasetNotFoundError, [", ".join(NAMES)]),
    "two missing and one corrupt": ({"train-images-idx3-ubyte": "missing", "t10k-images-idx3-ubyte": "missing",
                                     "train-labels-idx1-ubyte": "empty"}, "test", D.DatasetNotFoundError,
                                    ["missing train-images-idx3-ubyte, t10k-images-idx3-ubyte",
                                     "also corrupt:", "train-labels-idx1-ubyte (empty (0 bytes)"]),
    "truncated": ({"train-images-idx3-ubyte": "truncated"}, "train", D.CorruptDatasetError,
                  ["train-images-idx3-ubyte (truncated: 1,000 of 47,040,016 bytes"]),
    "zero bytes": ({"t10k-labels-idx1-ubyte": "empty"}, "test", D.CorruptDatasetError,
                   ["t10k-labels-idx1-ubyte (empty (0 bytes)"]),
    "another file under the name": ({"t10k-labels-idx1-ubyte": "is:train-labels-idx1-ubyte"}, "test",
                                    D.CorruptDatasetError, ["it is train-labels-idx1-ubyte, another Fashion-MNIST file"]),
    "one byte changed": ({"t10k-images-idx3-ubyte": "flipped"}, "test", D.CorruptDatasetError,
                         ["t10k-images-idx3-ubyte (the right size, 7,840,016 bytes, but corrupt contents", "sha256"]),
    "corrupt file of the other split": ({"t10k-labels-idx1-ubyte": "truncated"}, "train", D.CorruptDatasetError,
                                        ["t10k-labels-idx1-ubyte (truncated"]),
    "two corrupt, both named": ({"train-labels-idx1-ubyte": "truncated", "t10k-images-idx3-ubyte": "empty"}, "test",
                                D.CorruptDatasetError, ["train-labels-idx1-ubyte (truncated", "t10k-images-idx3-ubyte (empty"]),
    ".gz never decompressed": ({"train-labels-idx1-ubyte": "gz"}, "train", D.DatasetNotFoundError,
                               ["train-labels-idx1-ubyte.gz is there but not decompressed (gunzip it)"]),
}


@pytest.mark.parametrize("case", list(DATASET_CASES))
def test_fashion_mnist_files_missing_or_corrupt(fmnist_root, tmp_path, case):
    spec, split, error, texts = DATASET_CASES[case]
    _raw_folder(fmnist_root, tmp_path, spec)
    with pytest.raises(error) as info:
        D.fashion_mnist(split, root=tmp_path)
    message = str(info.value)
    for text in texts + [SETUP, str(tmp_path)]:
        assert text in message, f"{text!r} not in {message!r}"
    _shallow(info)


ENTRY_POINTS = {
    "fashion_mnist_tensors": lambda root: D.fashion_mnist_tensors("test", root),
    "fashion_mnist_loaders in memory": lambda root: fashion_mnist_loaders(root=root),
    "fashion_mnist_loaders from disk": lambda root: fashion_mnist_loaders(root=root, in_memory=False),
    "CVLAB_DATA": lambda root: D.fashion_mnist("train"),
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_names_the_files_and_the_fix(fmnist_root, tmp_path, monkeypatch, entry):
    monkeypatch.setenv("CVLAB_DATA", str(tmp_path))
    _raw_folder(fmnist_root, tmp_path, {"t10k-images-idx3-ubyte": "missing", "train-labels-idx1-ubyte": "truncated"})
    with pytest.raises(D.DatasetNotFoundError) as info:
        ENTRY_POINTS[entry](tmp_path)
    message = str(info.value)
    assert "missing t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte (truncated" in message
    assert SETUP in message
    _shallow(info, frames=7)


def test_all_four_files_in_place_through_links_load(fmnist_root, tmp_path):
    _raw_folder(fmnist_root, tmp_path, {})
    x, y = D.fashion_mnist_tensors("test", tmp_path)
    assert x.shape == (10_000, 1, 28, 28) and torch.bincount(y).tolist() == [1000] * 10


def test_download_that_fails_offline_names_the_fix(tmp_path, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.fashion_mnist("train", root=tmp_path, download=True)
    message = str(info.value)
    assert "downloading Fashion-MNIST into" in message and "failed" in message and SETUP in message
    assert info.value.__suppress_context__


# ==================================================================================================
# 2. Image files: every Pillow mode and bit depth, EXIF, bombs, empty and foreign files, names
# ==================================================================================================

GRADIENT = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)


def _palette(transparency):
    img = Image.new("P", (5, 4))
    img.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    if transparency:
        img.info["transparency"] = bytes([128] + [255] * 255)  # per-entry alpha: Pillow warns on a plain convert
    return img


MODE_FILES = {
    # id: (file name, image to save)
    "1": ("bilevel.png", Image.new("1", (5, 4), 1)),
    "L": ("gray.png", Image.new("L", (5, 4), 77)),
    "P": ("palette.png", _palette(False)),
    "P+transparency": ("palette_alpha.png", _palette(True)),
    "LA": ("gray_alpha.png", Image.new("LA", (5, 4), (77, 128))),
    "RGB": ("rgb.png", Image.new("RGB", (5, 4), (10, 200, 30))),
    "RGBA": ("rgba.png", Image.new("RGBA", (5, 4), (10, 200, 30, 128))),
    "CMYK": ("cmyk.jpg", Image.new("CMYK", (5, 4), (0, 255, 255, 0))),          # red ink
    "YCbCr": ("ycbcr.tif", Image.new("YCbCr", (5, 4), (128, 128, 128))),       # mid gray
    "LAB": ("lab.tif", Image.new("LAB", (5, 4), (255, 128, 128))),             # white
    "I;16": ("deep.png", Image.fromarray((GRADIENT * 65535).astype(np.uint16))),
    "I (16-bit values)": ("deep.pgm", Image.fromarray((GRADIENT * 65535).astype(np.uint16))),
    "I (int32 beyond 16 bits)": ("int32.tif", Image.fromarray((GRADIENT * 400_000 - 1000).astype(np.int32))),
    "F in [0, 1]": ("float01.tif", Image.fromarray(GRADIENT)),
    "F beyond [0, 1]": ("float_wide.tif", Image.fromarray(GRADIENT * 1000 - 50)),
}

# id -> (mode UNCHANGED gives, the first pixel's value in RGB, the last pixel's value in RGB, tolerance)
MODE_EXPECTED = {
    "1": ("L", (255, 255, 255), (255, 255, 255), 0),
    "L": ("L", (77, 77, 77), (77, 77, 77), 0),
    "P": ("RGB", (10, 200, 30), (10, 200, 30), 0),
    "P+transparency": ("RGBA", (10, 200, 30), (10, 200, 30), 0),
    "LA": ("LA", (77, 77, 77), (77, 77, 77), 0),
    "RGB": ("RGB", (10, 200, 30), (10, 200, 30), 0),
    "RGBA": ("RGBA", (10, 200, 30), (10, 200, 30), 0),
    "CMYK": ("RGB", (255, 0, 0), (255, 0, 0), 2),
    "YCbCr": ("RGB", (128, 128, 128), (128, 128, 128), 1),
    "LAB": ("RGB", (255, 255, 255), (255, 255, 255), 2),
    "I;16": ("L", (0, 0, 0), (255, 255, 255), 0),
    "I (16-bit values)": ("L", (0, 0, 0), (255, 255, 255), 0),
    "I (int32 beyond 16 bits)": ("L", (0, 0, 0), (255, 255, 255), 0),  # scaled by its own range, not clipped
    "F in [0, 1]": ("L", (0, 0, 0), (255, 255, 255), 0),                # x 255, not 0/1 black
    "F beyond [0, 1]": ("L", (0, 0, 0), (255, 255, 255), 0),            # its own range, not clipped to white
}


@pytest.mark.parametrize("mode", list(MODE_FILES))
def test_every_pillow_mode_reads_as_documented(tmp_path, mode):
    name, img = MODE_FILES[mode]
    path = tmp_path / name
    img.save(path)
    unchanged, first, last, tol = MODE_EXPECTED[mode]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning (e.g. palette transparency) reaches the learner
        rgb, gray, raw = open_image(path), open_image(path, "GRAY"), open_image(path, "UNCHANGED")
    assert (rgb.mode, gray.mode, raw.mode) == ("RGB", "L", unchanged)
    pixels = np.asarray(rgb).reshape(-1, 3).astype(int)
    assert np.abs(pixels[0] - first).max() <= tol and np.abs(pixels[-1] - last).max() <= tol, pixels[[0, -1]]
    assert np.asarray(gray).shape == (4, 5)
    tensor = read_photo(path, "UNCHANGED")
    assert tensor.dtype == torch.uint8 and tensor.shape == (len(raw.getbands()), 4, 5)


def test_high_bit_depth_values_scale_not_clip(tmp_path):
    """The rule to_8_bits documents, value by value."""
    Image.fromarray(GRADIENT).save(tmp_path / "f.tif")
    assert np.array_equal(np.asarray(open_image(tmp_path / "f.tif", "GRAY")), np.round(GRADIENT * 255).astype(np.uint8))
    wide = GRADIENT * 1000 - 50
    Image.fromarray(wide).save(tmp_path / "w.tif")
    expected = np.round((wide - wide.min()) / (wide.max() - wide.min()) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(open_image(tmp_path / "w.tif", "GRAY")), expected)
    deep = (GRADIENT * 65535).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "d.png", "GRAY")), (deep // 257).astype(np.uint8))
    int32 = (GRADIENT * 400_000 - 1000).astype(np.int32)  # beyond 16 bits: its own range, not clipped to white
    Image.fromarray(int32).save(tmp_path / "i.tif")
    expected = np.round((int32 - int32.min()) / (int32.max() - int32.min()) * 255).astype(np.uint8)
    assert np.array_equal(np.asarray(open_image(tmp_path / "i.tif", "GRAY")), expected)
    odd = GRADIENT.copy()
    odd[0, 0], odd[0, 1], odd[0, 2] = np.nan, np.inf, -np.inf
    Image.fromarray(odd).save(tmp_path / "nan.tif")
    got = np.asarray(open_image(tmp_path / "nan.tif", "GRAY"))
    smallest = round(float(GRADIENT[0, 3]) * 255)  # -inf becomes the smallest finite value, NaN 0
    assert got[0, :4].tolist() == [0, 255, smallest, smallest] and got[-1, -1] == 255
    assert to_rgb(Image.open(tmp_path / "f.tif")).getpixel((4, 3)) == (255, 255, 255)  # to_rgb scales floats too


@pytest.mark.parametrize("orientation, top, bottom", [(6, "red", "blue"), (8, "blue", "red")])
def test_exif_orientation_is_applied(tmp_path, orientation, top, bottom):
    """A phone photo stored sideways with EXIF Orientation 6 (or 8) loads upright."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    upright = open_image(path)
    assert upright.size == (20, 40)
    colour = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    assert np.abs(np.subtract(upright.getpixel((10, 5)), colour[top])).max() < 20
    assert np.abs(np.subtract(upright.getpixel((10, 35)), colour[bottom])).max() < 20
    assert read_photo(path).shape == (3, 40, 20)


@pytest.mark.parametrize("side, pixels", [(40, "1,600"), (50, "2,500")])  # Pillow warns at > limit, refuses at > 2x
def test_decompression_bomb_is_refused_by_name(tmp_path, monkeypatch, side, pixels):
    Image.new("L", (side, side)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as info:
            open_image(tmp_path / "bomb.png")
    message = str(info.value)
    assert "bomb.png" in message and f"{pixels} pixels" in message and "MAX_IMAGE_PIXELS = 1,000" in message
    assert "decompression bomb" in message


def test_a_bomb_does_not_stop_a_folder_scan(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    Image.new("L", (50, 50)).save(tmp_path / "a" / "0_bomb.png")
    Image.new("L", (10, 10)).save(tmp_path / "a" / "1_fine.png")
    (tmp_path / "a" / "2_empty.png").write_bytes(b"")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bad = D.find_bad_images(tmp_path)
    assert [p.name for p, _ in bad] == ["0_bomb.png", "2_empty.png"]
    assert "2,500 pixels" in bad[0][1] and "empty (0 bytes)" in bad[1][1]
    ds = D.image_folder(tmp_path)  # loading the bomb names it too
    with pytest.raises(ValueError, match="0_bomb.png has 2,500 pixels"):
        ds[0]
    assert ds[1][0].size == (10, 10)


BAD_FILES = {
    # id: (file name, bytes, error, texts)
    "zero bytes": ("empty.png", b"", ValueError, ["empty.png", "empty (0 bytes)", "Replace or delete it"]),
    "text with an image name": ("notes.jpg", b"just some notes\n", ValueError,
                                ["notes.jpg", "not an image file Pillow can read", "b'just some notes"]),
    "an HTML page saved as .jpg": ("download.jpg", b"<!DOCTYPE html><html>404</html>", ValueError,
                                   ["download.jpg", "an HTML page, perhaps a failed download"]),
    "truncated PNG": ("cut.png", None, ValueError, ["cut.png", "corrupt, truncated or not an image"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_image_files_are_named(tmp_path, case):
    name, data, error, texts = BAD_FILES[case]
    if data is None:
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
        data = (tmp_path / "ok.png").read_bytes()[:300]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(error) as info:
        open_image(tmp_path / name)
    for text in texts:
        assert text in str(info.value)


def test_missing_file_missing_folder_and_a_folder_differ(tmp_path):
    Image.new("L", (3, 3)).save(tmp_path / "cat.png")
    with pytest.raises(FileNotFoundError, match=r"no image file 'cat.PNG' in .*; similar names there: \['cat.png'\]"):
        open_image(tmp_path / "cat.PNG")
    with pytest.raises(FileNotFoundError, match=r"the folder .*nowhere does not exist either"):
        open_image(tmp_path / "nowhere" / "cat.png")
    with pytest.raises(ValueError, match="is a folder, not an image file"):
        open_image(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image file"):
        read_photo(tmp_path / "photos" / "cat")  # a path without a suffix is a path, not a sample name
    with pytest.raises(TypeError, match="expected an image file path .* got NoneType"):
        open_image(None)


@pytest.mark.parametrize("name", ["café.png", "中文.png", "ünï cødé ✓.jpg"])
def test_non_ascii_file_names(tmp_path, name):
    Image.new("RGB", (6, 4), (1, 2, 3)).save(tmp_path / name)
    assert open_image(tmp_path / name).getpixel((0, 0))[:2] in ((1, 2), (0, 2), (1, 1), (0, 1), (1, 3))
    assert read_photo(tmp_path / name).shape == (3, 4, 6)
    (tmp_path / f"broken {name}").write_bytes(b"x")
    assert [p.name for p, _ in D.find_bad_images(tmp_path)] == [f"broken {name}"]


@pytest.mark.parametrize("mode, hint", [("L", "'GRAY' here"), ("RGBA", "'UNCHANGED' keeps an alpha"), ("rgb", "")])
def test_unknown_read_modes(tmp_path, mode, hint):
    Image.new("L", (3, 3)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match=rf"mode must be 'RGB', 'GRAY' or 'UNCHANGED', got '{mode}'") as info:
        open_image(tmp_path / "x.png", mode)
    assert hint in str(info.value)


# ==================================================================================================
# 3. Image folders
# ==================================================================================================

def _tree(root, files):
    for rel in files:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith((".png", ".jpg")) and not Path(rel).name.startswith("._"):
            Image.new("L", (4, 4), 50).save(path)
        else:
            path.write_bytes(b"\0\5\7 not an image")
    return root


def test_empty_class_folders_are_named(tmp_path):
    root = _tree(tmp_path / "d", ["cat/1.png", "dog/", "fox/notes.txt", "owl/1.png"])
    with pytest.raises(D.DatasetNotFoundError) as info:
        D.image_folder(root)
    message = str(info.value)
    assert "2 of the 4 class folders" in message and "'dog', 'fox'" in message and "allow_empty=True" in message
    kept = D.image_folder(root, allow_empty=True)  # the indices stay where the sorted names put them
    assert kept.classes == ["cat", "dog", "fox", "owl"] and kept.targets == [0, 3]


def test_images_without_class_folders(tmp_path):
    root = _tree(tmp_path / "flat", ["a.png", "b.png"])
    with pytest.raises(D.DatasetNotFoundError, match="no class folders; its 2 image files .* one sub-folder per class"):
        D.image_folder(root)


def test_hidden_folders_and_files_are_not_classes_or_samples(tmp_path):
    root = _tree(tmp_path / "d", ["cat/1.png", "cat/._1.png", "dog/2.png", ".ipynb_checkpoints/x.png",
                                  "dog/.thumbs/2.png"])
    ds = D.image_folder(root)
    assert ds.classes == ["cat", "dog"] and [Path(p).name for p, _ in ds.samples] == ["1.png", "2.png"]
    assert D.find_bad_images(root) == []  # macOS's ._1.png is not an image, and is not read


@pytest.mark.parametrize("make, error, text", [
    (lambda t: t / "nope", D.DatasetNotFoundError, "no image folder at"),
    (lambda t: _tree(t, ["file.png"]) / "file.png", D.DatasetNotFoundError, "is a file, not a folder"),
])
def test_image_folder_root_missing_or_a_file(tmp_path, make, error, text):
    with pytest.raises(error, match=text):
        D.image_folder(make(tmp_path))


def test_find_bad_images_missing_folder_vs_file(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="no folder at .*nothing to scan"):
        D.find_bad_images(tmp_path / "nope")
    _tree(tmp_path, ["one.png"])
    with pytest.raises(D.DatasetNotFoundError, match="is a file, not a folder: check one file with .*open_image"):
        D.find_bad_images(tmp_path / "one.png")


def test_find_bad_images_lists_a_dangling_link(tmp_path):
    _tree(tmp_path, ["a/ok.png"])
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "deleted.png")
    bad = D.find_bad_images(tmp_path)
    assert [p.name for p, _ in bad] == ["gone.png"] and "deleted.png, which does not exist" in bad[0][1]


@pytest.mark.parametrize("mode, text", [("UNCHANGED", "same number of channels"), ("L", "'GRAY' here"),
                                        ("CMYK", "got 'CMYK'")])
def test_image_folder_unknown_read_modes(tmp_path, mode, text):
    root = _tree(tmp_path, ["a/1.png"])
    with pytest.raises(ValueError, match="mode must be 'RGB' or 'GRAY'") as info:
        D.image_folder(root, mode=mode)
    assert text in str(info.value)


def test_image_folder_transform_list_says_compose(tmp_path):
    from torchvision.transforms import v2
    root = _tree(tmp_path, ["a/1.png"])
    with pytest.raises(TypeError, match=r"transform must be callable, got list.*v2.Compose"):
        D.image_folder(root, transform=[v2.ToImage()])


def test_non_ascii_class_folders(tmp_path):
    root = _tree(tmp_path, ["café/1.png", "中文/2.png"])
    ds = D.image_folder(root, mode="GRAY")
    assert ds.classes == ["café", "中文"] and ds[1][0].mode == "L" and ds[1][1] == 1


# ==================================================================================================
# 4. Cached pretrained weights
# ==================================================================================================

@pytest.fixture
def hub(tmp_path):
    """A private, empty torch hub cache, and MobileNetV2's real weights file (placed by the set-up)."""
    from cvlab.provisioning import prepare_pretrained_weights

    real = prepare_pretrained_weights(verbose=False)[0]
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    yield real
    torch.hub.set_dir(old)


@pytest.mark.parametrize("content, texts", [
    ("truncated", ["1,000,000 bytes", "It holds 1.0 MB of the 13.6 MB", "interrupted download"]),
    ("empty", ["empty: 0 bytes", "It holds 0.0 MB of the 13.6 MB"]),
    ("foreign", ["not torchvision's file"]),
])
def test_broken_cached_weights_are_named_with_the_fix(hub, content, texts):
    from torchvision.models import MobileNet_V2_Weights

    from cvlab import pretrained as P

    cached = P.weights_file(MobileNet_V2_Weights.IMAGENET1K_V1)
    assert cached.parent.parent == Path(torch.hub.get_dir()) and not cached.exists()
    data = {"truncated": hub.read_bytes()[:1_000_000], "empty": b"", "foreign": b"PK\3\4" + bytes(15 * 10**6)}[content]
    cached.write_bytes(data)
    with pytest.raises(P.PretrainedWeightsError) as info:
        P.pretrained("mobilenet_v2", "IMAGENET1K_V1", allow_download=False)
    message = str(info.value)
    for text in texts + [str(cached), "python course.py setup", "Delete it"]:
        assert text in message, f"{text!r} not in {message!r}"
    if content == "foreign":
        assert "It holds" not in message  # a file as large as the weights is not called truncated


def test_pretrained_wrong_argument_types():
    from torchvision.models import MobileNet_V2_Weights, ResNet18_Weights

    from cvlab import pretrained as P
    with pytest.raises(TypeError, match="name must be a torchvision model name .* got NoneType"):
        P.pretrained(None)
    with pytest.raises(P.PretrainedWeightsError, match="no weights 'ResNet18_Weights.IMAGENET1K_V1'; valid"):
        P.pretrained("mobilenet_v2", ResNet18_Weights.IMAGENET1K_V1)
    model, weights = P.pretrained("mobilenet_v2", MobileNet_V2_Weights.IMAGENET1K_V1, allow_download=False)
    assert weights is MobileNet_V2_Weights.IMAGENET1K_V1  # the enum member is the right result


# ==================================================================================================
# 5. Models: an input size a model cannot take says the size it needs
# ==================================================================================================

MODELS = {
    "TinyVGG": (TinyVGG, "TinyVGG(in_channels=1, image_size=28) takes images (C, H, W) = (1, 28, 28)"),
    "CompactCNN": (CompactCNN, "CompactCNN(in_channels=1, image_size=28) takes images (C, H, W) = (1, 28, 28)"),
    "LinearModel": (LinearModel, "LinearModel(in_features=784) takes images (B, C, H, W) with C*H*W = 784"),
    "MLP": (MLP, "MLP(in_features=784) takes images (B, C, H, W) with C*H*W = 784"),
}
BAD_SHAPES = {
    "32x32": ((2, 1, 32, 32), {"conv": "got (1, 32, 32). Resize them to 28x28", "flat": "got (C, H, W) = (1, 32, 32)"}),
    "4x4": ((2, 1, 4, 4), {"conv": "got (1, 4, 4)", "flat": "got (C, H, W) = (1, 4, 4)"}),
    "RGB": ((2, 3, 28, 28), {"conv": "got (3, 28, 28). Convert them to grayscale", "flat": "(3, 28, 28) with 2,352"}),
}


@pytest.mark.parametrize("shape", list(BAD_SHAPES))
@pytest.mark.parametrize("arch", list(MODELS))
def test_model_input_size_errors_name_both_sizes(arch, shape):
    cls, expected = MODELS[arch]
    dims, texts = BAD_SHAPES[shape]
    with pytest.raises(ValueError) as info:
        cls()(torch.rand(dims))
    message = str(info.value)
    assert expected in message and texts["flat" if arch in ("LinearModel", "MLP") else "conv"] in message, message


@pytest.mark.parametrize("cls, blocks", [(TinyVGG, 2), (CompactCNN, 3)])
def test_too_small_for_the_pooling_says_so(cls, blocks):
    with pytest.raises(ValueError, match=f"2 px is too small for its {blocks} max-pooling layers"):
        cls()(torch.rand(1, 1, 2, 2))
    with pytest.raises(ValueError, match=r"got one image \(1, 28, 28\): add a batch axis with x\[None\]"):
        cls()(torch.rand(1, 28, 28))


def test_valid_inputs_give_the_same_numbers():
    torch.manual_seed(0)
    cnn, vgg, lin = CompactCNN().eval(), TinyVGG().eval(), LinearModel().eval()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(cnn(x), cnn.classifier(cnn.features(x)))
    assert torch.equal(vgg(x), vgg.classifier(vgg.block_2(vgg.block_1(x))))
    assert torch.equal(lin(x.flatten(1)), lin.linear(x.flatten(1)))  # flat input still works
    x30 = torch.rand(2, 1, 30, 30)  # 30 // 4 == 7: the Linear layer fits, as before
    assert torch.equal(vgg(x30), vgg.classifier(vgg.block_2(vgg.block_1(x30))))


# ==================================================================================================
# 6. Interpretation and widgets
# ==================================================================================================

from cvlab.interpretation import GradCAM, randomize_layers, saliency  # noqa: E402
from cvlab.widgets import AugmentationExplorer, GradCAMExplorer, PredictionBrowser  # noqa: E402

CLASSES = [f"class {i}" for i in range(10)]


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return CompactCNN().eval()


@pytest.mark.parametrize("layer, text", [
    ("classifier", "cannot explain layer 'classifier' (Sequential)"),
    ("classifier.2", "cannot explain layer 'classifier.2' (Linear)"),
    ("classifier.0", "cannot explain layer 'classifier.0' (Flatten)"),
])
def test_grad_cam_refuses_a_layer_without_maps_at_construction(cnn, layer, text):
    with pytest.raises(ValueError) as info:
        GradCAM(cnn, layer)
    assert text in str(info.value) and "e.g. 'features.8' (its last nn.Conv2d)" in str(info.value)


def test_grad_cam_layer_of_another_model_or_wrong_types(cnn):
    other = CompactCNN()
    with pytest.raises(ValueError, match="not part of this CompactCNN .*give the layer's name"):
        GradCAM(cnn, other.features[8])
    with pytest.raises(ValueError, match=r"cannot explain the whole model \(CompactCNN\): its output is the logits"):
        GradCAM(cnn, cnn)
    with pytest.raises(TypeError, match="target_layer must be a layer of the model or its name .* got int"):
        GradCAM(cnn, 8)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module .* got str"):
        GradCAM("CompactCNN", "features.8")


class _PooledHead(nn.Module):
    """A model whose 'pool' layer gives (B, K): not a Linear, so found at the first call."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Conv2d(4, 4, 1)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.conv(x)), 1).squeeze(-1))


def test_grad_cam_layer_problems_found_at_the_first_call():
    model = _PooledHead()

    class Squeezed(nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))

    model.pool = Squeezed()
    with GradCAM(model, "pool") as cam, pytest.raises(ValueError, match=r"feature maps \(B, K, h, w\), got shape \(2, 4\); .*'conv'"):
        cam(torch.rand(2, 1, 8, 8))
    with GradCAM(model, "unused") as cam, pytest.raises(ValueError, match="'unused' did not run in the model's forward"):
        cam(torch.rand(2, 1, 8, 8))


def test_explaining_under_inference_mode_says_why(cnn):
    x = torch.rand(2, 1, 28, 28)
    with GradCAM(cnn, "features.8") as cam:
        with torch.inference_mode(), pytest.raises(RuntimeError, match="Grad-CAM needs gradients, and torch.inference_mode"):
            cam(x)
        with torch.no_grad():  # no_grad is fine: GradCAM turns gradients on itself
            assert cam(x).shape == (2, 28, 28)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="saliency needs gradients.*outside the"):
        saliency(cnn, x)


@pytest.mark.parametrize("images, text", [
    ([torch.rand(1, 28, 28)], "got list (stack a list of (C, H, W) tensors with torch.stack)"),
    (torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "cvlab.images.to_float_images"),
])
def test_explaining_wrong_image_types(cnn, images, text):
    with GradCAM(cnn, "features.8") as cam, pytest.raises(ValueError) as info:
        cam(images)
    assert text in str(info.value)


def test_randomize_layers_one_name_as_a_str(cnn):
    with pytest.raises(TypeError, match=r"names must be a list of layer names, e.g. \['classifier'\]"):
        randomize_layers(cnn, "classifier")


def _explorer(cnn, **overrides):
    kwargs = {"model": cnn, "inputs": {"a": torch.rand(1, 28, 28), "b": torch.rand(1, 28, 28)},
              "class_names": CLASSES, "layers": ["features.8"], "mean": (0.0,), "std": (1.0,), "top_k": 3}
    kwargs.update(overrides)
    return GradCAMExplorer(**kwargs)


CAM_EXPLORER_CASES = {
    "fewer class names than outputs": ({"class_names": CLASSES[:9]}, ValueError,
                                       "the model has 10 outputs (classes) but 9 class names"),
    "class names as one str": ({"class_names": "class 0"}, TypeError, "got the str 'class 0'"),
    "class names as a dict": ({"class_names": dict(enumerate(CLASSES))}, TypeError, "got a dict"),
    "no inputs": ({"inputs": {}}, ValueError, "give at least one input image"),
    "inputs as a list": ({"inputs": [torch.rand(1, 28, 28)]}, TypeError, "inputs must be a dict"),
    "a batch as an input": ({"inputs": {"a": torch.rand(1, 1, 28, 28)}}, ValueError, "drop the batch axis with x[0]"),
    "a uint8 input": ({"inputs": {"a": torch.zeros(1, 28, 28, dtype=torch.uint8)}}, ValueError, "preprocess it first"),
    "layers as one str": ({"layers": "features.8"}, TypeError, "write ['features.8']"),
    "a layer module, not a name": ({"layers": [nn.Conv2d(1, 1, 1)]}, TypeError, "layer names (str)"),
    "a layer that does not exist": ({"layers": ["features.80"]}, ValueError, "nearest: "),
    "a Linear layer": ({"layers": ["features.8", "classifier.2"]}, ValueError, "cannot explain layer 'classifier.2'"),
    "ImageNet mean for gray inputs": ({"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}, ValueError,
                                      "one value per channel of the inputs (1), got 3 and 3"),
    "top_k not an int": ({"top_k": 2.5}, TypeError, "top_k must be an int"),
    "top_k too large": ({"top_k": 11}, ValueError, "top_k must be in 1..10"),
    "inputs the model cannot take": ({"inputs": {"a": torch.rand(1, 32, 32)}}, ValueError, "got (1, 32, 32)"),
}


@pytest.mark.parametrize("case", list(CAM_EXPLORER_CASES))
def test_grad_cam_explorer_catches_bad_arguments_at_construction(cnn, case):
    overrides, error, text = CAM_EXPLORER_CASES[case]
    with pytest.raises(error) as info:
        _explorer(cnn, **overrides)
    assert text in str(info.value), str(info.value)


def test_grad_cam_explorer_valid_and_restores_mode(cnn):
    cnn.train()
    ex = _explorer(cnn)
    assert cnn.training and ex.heatmap("a").shape == (28, 28)
    cnn.eval()


@pytest.fixture(scope="module")
def toy():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(6) % 3


BROWSER_CASES = {
    "fewer class names than outputs": (lambda m, x, y: (m, x, y, CLASSES[:3]), ValueError,
                                       "the model has 10 outputs (classes) but 3 class names"),
    "images as a list": (lambda m, x, y: (m, list(x), y, CLASSES), TypeError, "torch.stack(images)"),
    "images as NumPy": (lambda m, x, y: (m, x.numpy(), y, CLASSES), TypeError, "torch.from_numpy(images)"),
    "no images": (lambda m, x, y: (m, x[:0], y[:0], CLASSES), ValueError, "no images to browse"),
    "one-hot labels": (lambda m, x, y: (m, x, nn.functional.one_hot(y, 10), CLASSES), ValueError, "labels.argmax(1)"),
    "labels beyond the names": (lambda m, x, y: (m, x, y + 8, CLASSES), ValueError, "class indices in 0..9"),
    "images the model cannot take": (lambda m, x, y: (m, torch.zeros(6, 1, 32, 32, dtype=torch.uint8), y, CLASSES),
                                     ValueError, "takes images (C, H, W) = (1, 28, 28); got (1, 32, 32)"),
    "a model that is a str": (lambda m, x, y: ("cnn", x, y, CLASSES), TypeError, "model must be a torch.nn.Module"),
    "class names as one str": (lambda m, x, y: (m, x, y, "abc"), TypeError, "got the str 'abc'"),
}


@pytest.mark.parametrize("case", list(BROWSER_CASES))
def test_prediction_browser_catches_bad_arguments_at_construction(cnn, toy, case):
    make, error, text = BROWSER_CASES[case]
    with pytest.raises(error) as info:
        PredictionBrowser(*make(cnn, *toy))
    assert text in str(info.value), str(info.value)


def test_prediction_browser_on_a_model_without_parameters(toy):
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10)

    info = PredictionBrowser(Fixed(), *toy, CLASSES).predict(0)
    assert [p for _, p in info["top_k"]] == pytest.approx([10.0] * 3)


@pytest.mark.parametrize("images, error, text", [
    ({}, ValueError, "give at least one image"),
    ([torch.zeros(3, 4, 4, dtype=torch.uint8)], TypeError, "images must be a dict"),
])
def test_augmentation_explorer_empty_or_wrong_type(images, error, text):
    with pytest.raises(error, match=text):
        AugmentationExplorer(images)
