"""``python -m cvlab predict``: a checkpoint from ``cvlab train`` and files or folders of images give
top-k classes as CSV or JSON; bad files are named and skipped (exit 1); a bad command line exits 2."""
import json
import shutil

import pytest
import torch

from cvlab.__main__ import main
from cvlab.inference import image_files, predict_files, write_predictions
from cvlab.models import load_model


def run(argv):
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory):
    """best.pt of a TinyVGG trained 3 epochs on the 3-class folder."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--data-dir", str(folder), "--model", "TinyVGG", "--image-size", "28", "--epochs", "3",
                 "--batch-size", "16", "--lr", "5e-3", "--output-dir", str(out), "--no-progress"]) == 0
    return out / "best.pt"


def test_predict_writes_csv_and_json_and_gets_most_right(trained, folder, tmp_path, capsys):
    csv_out = tmp_path / "p.csv"
    assert run(["predict", str(trained), str(folder / "val"), "--output", str(csv_out), "--top-k", "2",
                "--no-progress"]) == 0
    lines = csv_out.read_text().splitlines()
    assert lines[0] == "file,class_1,prob_1,class_2,prob_2" and len(lines) == 1 + 45
    right = sum(line.split(",")[0].split("/")[-2] == line.split(",")[1] for line in lines[1:])
    assert right >= 36, f"only {right} of 45 validation images right"          # ~80 %: the model learned
    assert "45 image(s) predicted" in capsys.readouterr().err
    json_out = tmp_path / "p.json"
    assert run(["predict", str(trained.parent), str(folder / "val" / "Bag"), "--output", str(json_out),
                "--no-progress"]) == 0                                        # a run folder means its best.pt
    rows = json.loads(json_out.read_text())
    assert len(rows) == 15 and all(len(r["classes"]) == 3 and r["probs"] == sorted(r["probs"], reverse=True)
                                   and abs(sum(r["probs"]) - 1) < 1e-4 for r in rows)


def test_bad_images_are_named_and_skipped_with_exit_1(trained, folder, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(folder / "val" / "Sandal", images)
    (images / "broken.png").write_bytes(b"\x89PNG not really")
    (images / "empty.jpg").write_bytes(b"")
    assert run(["predict", str(trained), str(images), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1 + 15                                 # CSV on stdout: the good images
    assert "skipped" in captured.err and "broken.png" in captured.err and "empty.jpg" in captured.err
    assert "15 image(s) predicted, 2 skipped" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["predict", "missing.pt", "."], "missing.pt"),
    (["predict", "CKPT", "no-such-folder"], "no-such-folder does not exist"),
    (["predict", "CKPT", "IMAGES", "--top-k", "0"], "--top-k"),
    (["predict", "CKPT", "IMAGES", "--output", "EXISTING"], "exists: choose another name or add --overwrite"),
])
def test_bad_command_lines_exit_2_with_one_line(argv, message, trained, folder, tmp_path, capsys):
    existing = tmp_path / "old.csv"
    existing.write_text("a learner's earlier predictions")
    subs = {"CKPT": str(trained), "IMAGES": str(folder / "val"), "EXISTING": str(existing)}
    assert run([subs.get(a, a) for a in argv]) == 2
    assert message in capsys.readouterr().err
    assert existing.read_text() == "a learner's earlier predictions"


def test_library_functions(trained, folder, tmp_path):
    model, ckpt = load_model(trained)
    paths = image_files([folder / "val" / "Trouser"])
    rows, bad = predict_files(model, ckpt, paths[:5], k=10, batch_size=2)
    assert len(rows) == 5 and bad == [] and len(rows[0]["classes"]) == 3     # k capped at the classes
    assert write_predictions(rows, None).splitlines()[0].startswith("file,class_1")
    with pytest.raises(ValueError, match="no class names or preprocessing"):
        predict_files(model, {}, paths)
    with pytest.raises(ValueError, match="no image files"):
        image_files([tmp_path])                                              # a folder without images
