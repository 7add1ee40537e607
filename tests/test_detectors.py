"""cvlab.detectors: the offline COCO detector in OpenCV finds a real cat, COCO's 91 ids are named
right, torchvision's zoo is read without downloading, and fcos_mobilenet_v2 trains its head only."""
import urllib.error

import pytest
import skimage.data
import torch

from cvlab.detectors import (OpenCVDetector, coco_detector_dir, coco_names, detection_zoo, mobilenet_v2_backbone,
                             torchvision_detector)
from cvlab.video import opencv_samples_dir

needs_detector = pytest.mark.skipif(not (coco_detector_dir() / "frozen_inference_graph.pb").is_file(),
                                    reason="the set-up places the detector (python course.py setup)")


def test_coco_names_use_the_91_ids_and_agree_with_opencvs_file(tmp_path):
    names = coco_names()
    assert len(names) == 91 and names[0] == "__background__" and names[1] == "person" and names[17] == "cat"
    assert names.count("N/A") == 10                        # 91 ids = background + 80 classes + 10 unused
    assert (opencv_samples_dir() / "dnn" / "object_detection_classes_coco.txt").is_file()
    foreign = tmp_path / "opencv_samples" / "dnn"
    foreign.mkdir(parents=True)
    (foreign / "object_detection_classes_coco.txt").write_text("\n".join(n for n in names[1:] if n != "N/A"))
    with pytest.raises(ValueError, match="not the COCO class list"):
        coco_names(tmp_path)                                # the 80-name list: id 12 would be named wrong


def test_detection_zoo_reads_meta_without_downloading(monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("detection_zoo must not download")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    zoo = detection_zoo()
    names = [r["model"] for r in zoo]
    assert "fasterrcnn_mobilenet_v3_large_fpn" in names and "ssdlite320_mobilenet_v3_large" in names
    assert not any("keypoint" in n for n in names)          # person-only box mAP is not comparable
    assert [r["box_map"] for r in zoo] == sorted(r["box_map"] for r in zoo)
    assert {r["stages"] for r in zoo} == {1, 2} and all(r["params_m"] > 1 for r in zoo)


def test_torchvision_detector_offline_says_why(monkeypatch):
    import torchvision.models

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(RuntimeError, match=r"COCO_V1 are not cached and could not be downloaded \(no internet connection\)$"):
        torchvision_detector("fasterrcnn_mobilenet_v3_large_fpn")


@needs_detector
def test_opencv_detector_finds_the_cat_in_xyxy_pixels():
    detector = OpenCVDetector()
    cat = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)          # (3, 300, 451) RGB uint8
    found = detector(cat, score_threshold=0.5)
    assert found["labels"][0].item() == 17 and found["scores"][0] > 0.8      # "cat" in COCO's 91 ids
    assert detector.class_names[found["labels"][0]] == "cat"
    assert found["scores"].tolist() == sorted(found["scores"].tolist(), reverse=True)
    x1, y1, x2, y2 = found["boxes"][0].tolist()
    assert 0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300 and (x2 - x1) > 150   # the cat fills much of the photo
    same = detector(skimage.data.chelsea(), score_threshold=0.5)              # an (H, W, 3) array works too
    assert torch.equal(same["labels"], found["labels"])


@needs_detector
def test_opencv_detector_refuses_bad_images_and_thresholds():
    detector = OpenCVDetector()
    with pytest.raises(ValueError, match="RGB uint8"):
        detector(torch.rand(3, 50, 50))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector(torch.zeros(1, 50, 50, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"score_threshold is a probability in \[0, 1\]"):
        detector(torch.zeros(3, 50, 50, dtype=torch.uint8), score_threshold=50)


def test_opencv_detector_without_its_files_names_the_setup(tmp_path):
    with pytest.raises(FileNotFoundError, match="python course.py setup"):
        OpenCVDetector(tmp_path)
    (tmp_path / "frozen_inference_graph.pb").write_bytes(b"not a graph")
    (tmp_path / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt").write_text("nonsense {")
    with pytest.raises(ValueError, match="OpenCV cannot read the detector"):
        OpenCVDetector(tmp_path)


def test_mobilenet_v2_backbone_strides_and_channels():
    backbone, stride = mobilenet_v2_backbone(96, blocks=7, frozen_blocks=4, out_channels=48, pretrained_backbone=False)
    assert stride == 8 and backbone.out_channels == 48
    assert backbone(torch.rand(2, 3, 96, 96)).shape == (2, 48, 12, 12)
    assert mobilenet_v2_backbone(96, blocks=4, pretrained_backbone=False)[1] == 4
    with pytest.raises(ValueError, match="2 <= blocks <= 18"):
        mobilenet_v2_backbone(96, blocks=19)


def test_fcos_mobilenet_v2_trains_its_head_and_keeps_the_frozen_blocks_fixed():
    from cvlab.detectors import fcos_mobilenet_v2
    model = fcos_mobilenet_v2(10, 96, blocks=7, frozen_blocks=4)
    assert model.head.classification_head.num_classes == 11              # 10 classes + the background
    frozen = model.backbone.body[:4]
    assert not any(p.requires_grad for p in frozen.parameters())
    assert all(p.requires_grad for p in model.backbone.body[4:].parameters())
    model.train()
    assert not any(m.training for m in frozen.modules() if m is not frozen)  # frozen BatchNorm keeps its statistics
    assert model.backbone.body[4].training
    losses = model([torch.rand(3, 96, 96)], [{"boxes": torch.tensor([[10.0, 12.0, 40.0, 44.0]]),
                                              "labels": torch.tensor([3])}])
    assert set(losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    model.eval()
    out = model([torch.rand(3, 96, 96)])[0]
    assert set(out) == {"boxes", "scores", "labels"}
    with pytest.raises(ValueError, match="frozen_blocks <= blocks"):
        fcos_mobilenet_v2(10, 96, blocks=4, frozen_blocks=5)
