"""``cvlab train --model mobilenet_v2``: the offline ImageNet weights with a new head, images as the weights
want them, ``--freeze-backbone`` and ``--unfreeze-at`` (the backbone at lr x 0.1), checkpoints that resume
and predict, and a checkpoint of another ``--model`` refused in one line (exit 2). On the ``folder`` fixture
(3 classes of real Fashion-MNIST images as PNG files) at 32 x 32 px, in this process."""
import json

import pytest
import torch

import cvlab.training as training
from cvlab.__main__ import main
from cvlab.backbones import BackboneSchedule, load_backbone, new_head, weights_preprocess
from cvlab.models import build_model, load_model
from cvlab.transforms import IMAGENET_MEAN, IMAGENET_STD


def run(argv):
    """main(argv)'s exit status, also when argparse ends it with SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def quick(folder, out, *extra):
    return ["train", "--model", "mobilenet_v2", "--data-dir", str(folder), "--image-size", "32", "--batch-size", "30",
            "--lr", "1e-3", "--scheduler", "none", "--no-progress", "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def imagenet():
    """MobileNetV2's ImageNet backbone, as cvlab.pretrained loads it (parameters and BatchNorm statistics)."""
    model, _ = load_backbone("mobilenet_v2")
    return {k: v.clone() for k, v in model.features.state_dict().items()}


def backbone_of(state_dict):
    return {k.removeprefix("features."): v for k, v in state_dict.items() if k.startswith("features.")}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def frozen_run(folder, tmp_path_factory):
    """One epoch with --freeze-backbone: only the new head trained."""
    out = tmp_path_factory.mktemp("frozen") / "run"
    assert main(quick(folder, out, "--epochs", "1", "--freeze-backbone")) == 0
    return out


def test_freeze_backbone_trains_only_the_new_head(frozen_run, imagenet, capsys):
    ckpt = torch.load(frozen_run / "last.pt", weights_only=True)
    assert same(backbone_of(ckpt["state_dict"]), imagenet), "the backbone, BatchNorm statistics included, is ImageNet's"
    assert ckpt["arch"] == "mobilenet_v2" and ckpt["model_kwargs"] == {"num_classes": 3}
    assert {k: ckpt["preprocess"][k] for k in ("image_size", "channels", "mean", "std")} == {
        "image_size": 32, "channels": 3, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert ckpt["backbone"] == {"weights": "IMAGENET1K_V1", "freeze_backbone": True, "unfreeze_at": None,
                                "backbone_lr_factor": 0.1}
    model, _ = load_model(frozen_run / "best.pt")  # rebuilt from the name and num_classes, nothing downloaded
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_staged_unfreezing_trains_the_backbone_from_its_epoch_at_a_tenth_of_the_rate(folder, tmp_path, imagenet,
                                                                                     monkeypatch, capsys):
    real, seen = training._run_epoch, []

    def probe(epoch, model, *args, **kwargs):
        record = real(epoch, model, *args, **kwargs)
        seen.append((epoch, all(p.requires_grad for p in model.features.parameters()),
                     same(model.features.state_dict(), imagenet)))
        return record

    monkeypatch.setattr(training, "_run_epoch", probe)
    out = tmp_path / "run"
    assert main(quick(folder, out, "--epochs", "2", "--unfreeze-at", "2")) == 0
    header = capsys.readouterr().out.splitlines()[1]
    assert "ImageNet weights IMAGENET1K_V1, backbone frozen until epoch 2, then at lr x 0.1" in header
    assert "(3 classes, 32x32x3)" in header
    assert seen == [(1, False, True), (2, True, False)], "frozen and untouched in epoch 1, trained in epoch 2"
    groups = torch.load(out / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [(g["name"], g["lr"]) for g in groups] == [("classifier", 1e-3), ("features", pytest.approx(1e-4))]


def test_resume_may_unfreeze_a_frozen_run_and_predict_uses_its_checkpoint(frozen_run, folder, tmp_path, imagenet,
                                                                          capsys):
    """A frozen run resumed without --freeze-backbone fine-tunes the backbone from the next epoch on;
    python -m cvlab predict rebuilds MobileNetV2 from the checkpoint and preprocesses as in training."""
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("best.pt", "last.pt", "history.json"):
        (resumed / name).write_bytes((frozen_run / name).read_bytes())
    assert main(quick(folder, resumed, "--epochs", "2", "--resume", str(resumed / "last.pt"))) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"cvlab train: continuing the run in {resumed}"
    hist = json.loads((resumed / "history.json").read_text())
    assert [r["epoch"] for r in hist["records"]] == [1, 2]
    last = torch.load(resumed / "last.pt", weights_only=True)
    assert not same(backbone_of(last["state_dict"]), imagenet) and last["backbone"]["freeze_backbone"] is False
    csv = tmp_path / "p.csv"
    assert run(["predict", str(resumed), str(folder / "val"), "--output", str(csv), "--no-progress"]) == 0
    rows = csv.read_text().splitlines()[1:]
    assert len(rows) == 45
    right = sum(row.split(",")[0].split("/")[-2] == row.split(",")[1] for row in rows)
    assert right >= 30, f"only {right} of 45 validation images right after 2 epochs"  # chance: 15


def test_a_checkpoint_of_another_model_is_refused_in_one_line(frozen_run, folder, tmp_path, capsys):
    cnn = tmp_path / "cnn"
    assert main(["train", "--data-dir", str(folder), "--model", "CompactCNN", "--image-size", "32", "--epochs", "1",
                 "--batch-size", "30", "--no-progress", "--output-dir", str(cnn)]) == 0
    capsys.readouterr()
    for model, ckpt, other in (("mobilenet_v2", cnn / "last.pt", "CompactCNN"),
                               ("CompactCNN", frozen_run / "last.pt", "mobilenet_v2")):
        before = ckpt.read_bytes()
        assert run(["train", "--data-dir", str(folder), "--model", model, "--image-size", "32", "--epochs", "2",
                    "--batch-size", "30", "--no-progress", "--resume", str(ckpt)]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"argument --resume: {ckpt} is a checkpoint of {other}, not of {model}: pass --model {other}" in lines[0]
        assert ckpt.read_bytes() == before


def test_resume_refuses_another_backbone_learning_rate(frozen_run, folder, capsys):
    assert run(quick(folder, frozen_run, "--epochs", "2", "--resume", str(frozen_run / "last.pt"),
                     "--backbone-lr-factor", "0.5")) == 2
    assert ("argument --backbone-lr-factor: " f"{frozen_run / 'last.pt'} was trained with --backbone-lr-factor 0.1, "
            "not 0.5") in capsys.readouterr().err


def test_fashion_mnist_in_grayscale_becomes_3_channels_normalised_for_imagenet(fmnist_root):
    """The loaders cvlab train builds for --model mobilenet_v2 on Fashion-MNIST (a full run validates on
    10,000 images: too slow here): 3 equal channels at 32 x 32, normalised with ImageNet's mean and std."""
    from cvlab.__main__ import build_parser
    from cvlab.train_command import _loaders

    args = build_parser().parse_args(["train", "--model", "mobilenet_v2", "--image-size", "32", "--train-limit", "64",
                                      "--batch-size", "32"])
    train, val, names, inputs = _loaders(args, weights_preprocess(load_backbone("mobilenet_v2")[1]))
    x, _ = next(iter(train))
    assert x.shape == (32, 3, 32, 32) and len(names) == 10 and len(val.dataset) == 10_000
    assert torch.allclose(x[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], x[:, 1] * IMAGENET_STD[1] + IMAGENET_MEAN[1],
                          atol=1e-5), "grayscale repeated to 3 channels"
    assert x[:, 0].min() == pytest.approx(-IMAGENET_MEAN[0] / IMAGENET_STD[0], abs=1e-5), "black is (0 - mean) / std"
    assert (inputs["channels"], inputs["mean"], inputs["std"]) == (3, list(IMAGENET_MEAN), list(IMAGENET_STD))


def test_library_parts():
    model, weights = load_backbone("mobilenet_v2")
    assert weights_preprocess(weights) == {"image_size": 224, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    new_head(model, "mobilenet_v2", 5)
    assert build_model("mobilenet_v2", num_classes=5).state_dict().keys() == model.state_dict().keys()
    schedule = BackboneSchedule(model, "mobilenet_v2", unfreeze_at=3)
    schedule(2)
    assert not any(p.requires_grad for p in model.features.parameters())
    model.train()
    assert not any(m.training for block in model.features for m in block.modules()) and model.classifier.training
    schedule(3)
    assert all(p.requires_grad for p in model.features.parameters()) and all(m.training for m in model.features.modules())
    with pytest.raises(ValueError, match="no pretrained backbone 'resnet18'"):
        load_backbone("resnet18")
