"""``python -m cvlab train`` / ``setup`` end to end, on a small real image folder and on Fashion-MNIST;
run folders that never overwrite each other; ``python course.py --help`` and its check of .venv
(on fake environments in temporary folders, never the real .venv)."""
import datetime
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvlab import provisioning
from cvlab.__main__ import main
from cvlab.runs import new_run_dir
from cvlab.datasets import FASHION_MNIST_SHA256
from cvlab.models import load_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import course  # noqa: E402


def run(argv):
    """main(argv)'s exit status, also when argparse ends it with SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_train_on_an_image_folder_with_workers_then_resume(folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data-dir", str(folder), "--model", "TinyVGG", "--image-size", "32", "--batch-size", "16",
            "--lr", "5e-3", "--num-workers", "2", "--output-dir", str(out), "--no-progress", "--scheduler", "cosine"]
    assert main(args + ["--epochs", "2"]) == 0
    report = capsys.readouterr().out
    assert report.splitlines()[0] == f"cvlab train: writing to {out}", "where it writes comes first"
    assert "best epoch" in report and "Trouser" in report and "macro avg" in report
    assert {p.name for p in out.iterdir()} == {"best.pt", "last.pt", "history.json"}
    hist = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in hist["records"]] == [1, 2]
    model, ckpt = load_model(out / "best.pt")
    assert ckpt["class_names"] == ["Bag", "Sandal", "Trouser"] and ckpt["preprocess"]["image_size"] == 32
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
    # resume into the same --output-dir: allowed (it is that run), the history continues from epoch 3
    assert main(args + ["--epochs", "3", "--resume", str(out / "last.pt")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"cvlab train: continuing the run in {out}"
    hist = json.loads((out / "history.json").read_text())
    assert [r["epoch"] for r in hist["records"]] == [1, 2, 3]


def test_train_on_fashion_mnist(tmp_path, capsys):
    out = tmp_path / "fm"
    assert main(["train", "--model", "LinearModel", "--epochs", "1", "--train-limit", "3000", "--lr", "1e-2",
                 "--output-dir", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    acc = float(text.split("val accuracy ")[1].split(" %")[0])
    assert acc > 65, "a linear model on 3,000 Fashion-MNIST images should beat 65 % after one epoch"
    assert "Ankle boot" in text


def test_ctrl_c_in_epoch_2_exits_130_and_keeps_epoch_1(folder, tmp_path, capsys, monkeypatch):
    import cvlab.training as training
    real = training._run_epoch

    def stop_in_epoch_2(epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(epoch, *args, **kwargs)

    monkeypatch.setattr(training, "_run_epoch", stop_in_epoch_2)
    out = tmp_path / "run"
    assert run(["train", "--data-dir", str(folder), "--model", "LinearModel", "--image-size", "8", "--batch-size", "32", "--epochs", "3",
                "--no-progress", "--output-dir", str(out)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"cvlab train: interrupted; {out / 'last.pt'} holds the last finished epoch: continue it with " \
           f"--resume {out / 'last.pt'}" in err
    hist = json.loads((out / "history.json").read_text())
    assert hist["interrupted"] and [r["epoch"] for r in hist["records"]] == [1]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1


def test_a_rerun_into_the_same_output_dir_keeps_the_earlier_best_pt(folder, tmp_path, capsys):
    """Issue 9's data loss: a second run into the same folder replaced an 83 % best.pt by a 10 % one."""
    QUICK = ["--data-dir", str(folder), "--model", "LinearModel", "--image-size", "8", "--batch-size", "32",
             "--epochs", "1", "--no-progress"]
    out = tmp_path / "run"
    assert run(["train", *QUICK, "--output-dir", str(out)]) == 0
    before = {n: (out / n).read_bytes() for n in ("best.pt", "last.pt", "history.json")}
    capsys.readouterr()
    assert run(["train", *QUICK, "--lr", "9", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err
    assert f"{out} already holds best.pt, last.pt, history.json" in lines[0]
    assert "--overwrite" in lines[0] and "another folder" in lines[0] and f"--resume {out / 'last.pt'}" in lines[0]
    assert {n: (out / n).read_bytes() for n in before} == before, "the earlier run must stay byte for byte"
    # --overwrite says so, first thing, and replaces the run
    assert run(["train", *QUICK, "--lr", "1e-3", "--output-dir", str(out), "--overwrite"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"cvlab train: --overwrite: deleted the earlier run's best.pt, last.pt, history.json; writing to {out}"
    assert (out / "best.pt").read_bytes() != before["best.pt"]


def test_without_output_dir_every_run_gets_a_fresh_folder_and_resume_continues_in_it(folder, tmp_path, capsys,
                                                                                     monkeypatch):
    monkeypatch.setenv("CVLAB_DATA", str(tmp_path / "data"))
    args = ["train", "--data-dir", str(folder), "--model", "LinearModel", "--image-size", "8", "--batch-size", "32",
            "--scheduler", "none",
            "--no-progress"]
    firsts = []
    for _ in range(2):
        assert run(args + ["--epochs", "1"]) == 0
        firsts.append(capsys.readouterr().out.splitlines()[0])
    runs = sorted((tmp_path / "data" / "runs").iterdir())
    assert len(runs) == 2 and [f"cvlab train: writing to {r}" for r in runs] == sorted(firsts)
    stamp = datetime.datetime.now().strftime("%Y%m%d")
    assert runs[0].name.startswith(f"LinearModel-{folder.name}-{stamp}-")
    for r in runs:
        assert {p.name for p in r.iterdir()} == {"best.pt", "last.pt", "history.json"}
    # --resume without --output-dir: the same run, in its own folder; no third folder
    first_best = (runs[0] / "best.pt").read_bytes()
    assert run(args + ["--epochs", "2", "--resume", str(runs[0] / "last.pt")]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"cvlab train: continuing the run in {runs[0]}"
    assert sorted((tmp_path / "data" / "runs").iterdir()) == runs
    hist = json.loads((runs[0] / "history.json").read_text())
    assert [r["epoch"] for r in hist["records"]] == [1, 2]
    best_epoch = min(hist["records"], key=lambda r: r["val_loss"])["epoch"]
    assert ((runs[0] / "best.pt").read_bytes() == first_best) == (best_epoch == 1), \
        "best.pt is only replaced by a better epoch of the same run"


def test_new_run_dir_appends_a_number_when_the_name_is_taken(tmp_path):
    now = datetime.datetime(2025, 1, 2, 3, 4, 5)
    made = [new_run_dir(tmp_path / "runs", "TinyVGG", "fashion-mnist", now) for _ in range(3)]
    assert [p.name for p in made] == ["TinyVGG-fashion-mnist-20250102-030405", "TinyVGG-fashion-mnist-20250102-030405-2",
                                      "TinyVGG-fashion-mnist-20250102-030405-3"]
    assert all(p.is_dir() for p in made)


def test_bad_data_dir_exits_2_with_a_message(tmp_path, capsys):
    assert run(["train", "--data-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "argument --data-dir" in err and "has no train/ folder" in err and "train/<class>" in err
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    assert run(["train", "--data-dir", str(tmp_path), "--no-progress", "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "argument --data-dir" in err and str(tmp_path / "train") in err
    assert "hold no image files" in err or "no class folders with images" in err  # (datasets' words for it)
    assert not (tmp_path / "o").exists(), "a refused run writes nothing"


def test_resume_from_a_missing_checkpoint(folder, tmp_path, capsys):
    assert run(["train", "--data-dir", str(folder), "--model", "TinyVGG", "--image-size", "16", "--no-progress",
                "--resume", str(tmp_path / "nope.pt"), "--output-dir", str(tmp_path)]) == 2
    assert f"argument --resume: no file {tmp_path / 'nope.pt'}" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--epochs", "0"], ["--lr", "-1"], ["--model", "ResNet"], ["--num-workers", "-2"],
                                 ["--scheduler", "warp"]])
def test_bad_arguments_exit_2(bad, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", *bad])
    assert info.value.code == 2
    assert f"error: argument {bad[0]}" in capsys.readouterr().err


def test_help_explains_every_option_and_the_exit_statuses():
    out = subprocess.run([sys.executable, "-m", "cvlab", "train", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--data-dir", "--model", "--epochs", "--batch-size", "--lr", "--optimizer", "--scheduler",
                   "--image-size", "--augment", "--num-workers", "--resume", "--output-dir", "--overwrite", "--amp",
                   "--patience", "--device", "--max-grad-norm", "--weight-decay", "--train-limit"):
        assert option in out
    assert "exit status:" in out and "a bad command line" in out and "the run started and failed" in out


# --- setup --no-download: no network, no package install ------------------------------------------

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Any subprocess, socket connection or torchvision download fails the test; empty data and hub folders."""
    def forbidden(*args, **kwargs):
        raise AssertionError(f"--no-download must not run or download anything: {args[:1]}")
    monkeypatch.setattr(subprocess, "run", forbidden)
    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(provisioning.tv_datasets, "FashionMNIST", forbidden)
    monkeypatch.setenv("CVLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "data").mkdir()
    return tmp_path


def _use_mirror(monkeypatch, mirror: Path) -> None:
    # Debian's mirror is present on some machines. prepare_fashion_mnist's `mirror` default is bound when it
    # is defined, so both the default and the module constant are replaced (whichever setup() ends up using)
    monkeypatch.setitem(provisioning.prepare_fashion_mnist.__kwdefaults__, "mirror", mirror)
    monkeypatch.setattr(provisioning, "DEBIAN_MIRROR", mirror)


def test_setup_no_download_without_local_files_fails_clearly_and_touches_no_network(offline, monkeypatch, capsys):
    _use_mirror(monkeypatch, offline / "no-mirror")
    assert run(["setup", "--no-download"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cvlab setup: Could not place Fashion-MNIST in")
    assert "tried: local mirror" in err and "apt-get install dataset-fashion-mnist" in err
    assert "--no-download: nothing was downloaded or installed; run without --no-download" in err
    assert not list((offline / "data").rglob("*-ubyte")), "nothing placed"


def test_setup_no_download_places_local_files_offline(offline, monkeypatch, capsys, fmnist_root):
    mirror = offline / "mirror"
    mirror.mkdir()
    for name in FASHION_MNIST_SHA256:
        with open(fmnist_root / "FashionMNIST" / "raw" / name, "rb") as src, \
                gzip.open(mirror / f"{name}.gz", "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)
    _use_mirror(monkeypatch, mirror)
    assert run(["setup", "--no-download"]) == 0
    assert "placed and sha256 checked" in capsys.readouterr().out
    assert sorted(p.name for p in (offline / "data" / "FashionMNIST" / "raw").iterdir()) == sorted(FASHION_MNIST_SHA256)


# --- python course.py: --help, and a broken .venv -------------------------------------------------

def test_course_help_shows_every_command_on_one_line():
    out = subprocess.run([sys.executable, str(ROOT / "course.py"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    table = lines[lines.index("commands:") + 1:]
    for command in ("lab", "test", "regenerate", "setup", "lock"):
        rows = [line for line in table if line.split()[:1] == [command]]
        assert len(rows) == 1 and len(rows[0]) <= 110, f"{command!r} needs one line of help"
        assert len(rows[0].split()) > 4
    assert set(course.COMMANDS) == {"lab", "test", "regenerate", "student", "setup", "lock"}
    assert "_execute" not in out, "the internal notebook runner is not a command to show"
    assert "rm -rf .venv && python course.py setup" in out


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "unknown command 'bogus': use one of lab, test, regenerate, student, setup, lock"),
    (["setup", "--upgrade"], "--upgrade goes with lock, not setup: python course.py lock --upgrade"),
    (["test", "--no-regenerate"], "--no-regenerate goes with lock, not test"),
    (["test", "--headless"], "--headless goes with lab, not test: python course.py --headless"),
    (["setup", "01"], "'setup' takes no further arguments, got: 01"),
    (["lock", "--verbose"], "unrecognized arguments: --verbose"),
    (["setup", "--avx2"], "--avx2 goes with lab or test or regenerate, not setup: python course.py --avx2"),
])
def test_course_refuses_options_that_do_not_go_with_the_command(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        course.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_course_command_line_that_works():
    assert course.parse_args([]).command == "lab"
    args = course.parse_args(["--headless", "01", "02"])  # the notebooks to run, not a command
    assert (args.command, args.extra) == ("lab", ["01", "02"])
    args = course.parse_args(["test", "-k", "checkpoint", "-x"])
    assert (args.command, args.extra) == ("test", ["-k", "checkpoint", "-x"])
    assert course.parse_args(["lock", "--upgrade", "--no-regenerate"]).upgrade
    args = course.parse_args(["--avx2", "--headless", "04"])
    assert args.avx2 and (args.command, args.extra) == ("lab", ["04"])
    assert course.parse_args(["regenerate", "--avx2", "05"]).avx2 and course.parse_args(["test", "--avx2"]).avx2


def test_course_and_cvlab_agree_on_the_avx2_mode():
    """course.py cannot import cvlab before the environment exists, so it keeps its own copy."""
    from cvlab.utils import AVX2_ENV, avx2_env
    assert course.avx2_env() == avx2_env() and AVX2_ENV.items() <= avx2_env().items()
    assert avx2_env()["TORCHINDUCTOR_CACHE_DIR"].endswith("_avx2")


def test_the_avx2_mode_reaches_torch_and_the_cpu_report():
    """The variables act on a fresh interpreter: ATen reports AVX2, cpu_info says so, bf16 is off."""
    from cvlab.utils import avx2_env
    code = ("import torch; from cvlab.utils import cpu_info, cpu_has_bf16; "
            "print(torch.backends.cpu.get_cpu_capability(), cpu_has_bf16(), cpu_info(), sep='|')")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **avx2_env()}, capture_output=True,
                         text=True, check=True).stdout.strip().split("|")
    assert out[0] == "AVX2" and out[1] == "False"
    assert out[2].endswith("ATen AVX2, oneDNN max AVX2")


posix_only = pytest.mark.skipif(os.name == "nt", reason="fake environments use POSIX shell scripts and links")


def _fake_python(env: Path, body: str) -> Path:
    python = course.venv_python(env)
    python.parent.mkdir(parents=True, exist_ok=True)
    python.write_text(f"#!/bin/sh\n{body}\n")
    python.chmod(0o755)
    return python


WORKING = f'exec "{sys.executable}" "$@"'  # a Python with pip: this test's own


@posix_only
def test_venv_problem_names_what_is_broken(tmp_path):
    env = tmp_path / ".venv"
    assert course.venv_problem(env) is None, "a missing folder is not broken (it is made)"
    env.mkdir()
    assert "it has no Python" in course.venv_problem(env)
    python = course.venv_python(env)
    python.parent.mkdir(parents=True)
    python.symlink_to(tmp_path / "removed-python3.11")
    assert "which no longer exists" in course.venv_problem(env) and "removed-python3.11" in course.venv_problem(env)
    python.unlink()
    _fake_python(env, "echo 'libpython3.11.so: cannot open shared object file' >&2; exit 127")
    assert "does not run (libpython3.11.so: cannot open shared object file)" in course.venv_problem(env)
    python.chmod(0o644)  # not executable (execve wants an x bit, also for root)
    assert "cannot be started" in course.venv_problem(env)
    _fake_python(env, "echo False True")
    assert "older than 3.10" in course.venv_problem(env)
    _fake_python(env, "echo True False")
    assert "it has no pip" in course.venv_problem(env)
    _fake_python(env, WORKING)
    assert course.venv_problem(env) is None


class FakeBuilder:
    """Stands in for venv.EnvBuilder: records its calls; `works` decides what the rebuilt env holds."""
    calls: list = []
    works = True

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def create(self, env):
        FakeBuilder.calls.append(self.kwargs)
        if self.kwargs.get("clear"):
            shutil.rmtree(env)
        _fake_python(Path(env), WORKING if FakeBuilder.works else "exit 1")


@pytest.fixture
def fake_builder(monkeypatch):
    FakeBuilder.calls, FakeBuilder.works = [], True
    monkeypatch.setattr(course.venv, "EnvBuilder", FakeBuilder)
    return FakeBuilder


@posix_only
def test_a_venv_with_a_dangling_python_link_is_rebuilt(tmp_path, fake_builder, capsys):
    env = tmp_path / ".venv"
    python = course.venv_python(env)
    python.parent.mkdir(parents=True)
    python.symlink_to(tmp_path / "gone" / "python3")
    (env / course.STAMP_NAME).write_text("stale\n")
    assert course.ensure_venv(env) == python
    out = capsys.readouterr().out
    assert "is broken: its Python" in out and "no longer exists" in out and "rebuilding it" in out
    assert fake_builder.calls == [{"with_pip": True, "clear": True}]
    assert course.venv_problem(env) is None and not (env / course.STAMP_NAME).exists(), \
        "the rebuilt environment has no install stamp, so the set-up installs the lock again"
    # a working environment is left alone
    assert course.ensure_venv(env) == python and len(fake_builder.calls) == 1
    # a missing one is made, without --clear
    assert course.ensure_venv(tmp_path / "new") == course.venv_python(tmp_path / "new")
    assert fake_builder.calls[-1] == {"with_pip": True}


@posix_only
def test_when_the_rebuild_fails_the_message_says_how_to_do_it_by_hand(tmp_path, fake_builder, capsys):
    env = tmp_path / ".venv"
    _fake_python(env, "exit 1")
    fake_builder.works = False
    with pytest.raises(SystemExit) as info:
        course.ensure_venv(env)
    assert info.value.code == 1
    out = capsys.readouterr().out
    assert "still does not work" in out and f"rm -rf {env} && python course.py setup" in out


def test_a_huge_learning_rate_stops_with_a_divergence_message_and_exit_1(tmp_path, capsys):
    """Issue 9's check: --lr 1e9 is a valid number, so the run starts, diverges, and says so (exit 1),
    keeping history.json of the epochs before (none here, or the good ones)."""
    out = tmp_path / "run"
    code = main(["train", "--model", "LinearModel", "--epochs", "2", "--train-limit", "512", "--lr", "1e9",
                 "--no-progress", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Training stopped" in err and "Learning rate" in err and "lower learning rate" in err


def test_train_detector_end_to_end_with_checkpoints_and_history(tmp_path, capsys, fmnist_root):
    out = tmp_path / "det"
    args = ["train-detector", "--train-scenes", "48", "--test-scenes", "16", "--image-size", "64", "--epochs", "2",
            "--batch-size", "16", "--output-dir", str(out), "--no-progress", "--device", "cpu"]
    assert run(args) == 0
    report = capsys.readouterr().out
    assert report.splitlines()[0] == f"cvlab train-detector: writing to {out}" and "best epoch" in report
    assert {p.name for p in out.iterdir()} == {"best.pt", "last.pt", "history.json"}
    hist = json.loads((out / "history.json").read_text())
    assert hist["ended"] == "finished" and [r["epoch"] for r in hist["records"]] == [1, 2]
    assert all(0 <= r["map_50"] <= 1 and r["loss"] > 0 for r in hist["records"])
    ckpt = torch.load(out / "best.pt", weights_only=True)
    from cvlab.detectors import fcos_mobilenet_v2
    model = fcos_mobilenet_v2(**ckpt["model_kwargs"], pretrained_backbone=False)
    model.load_state_dict(ckpt["state_dict"])
    assert ckpt["class_names"][1] == "T-shirt/top" and ckpt["metrics"]["map_50"] == max(r["map_50"] for r in hist["records"])
    assert run(args) == 2                                     # that folder holds a run now
    assert "already holds" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--image-size", "32"], "--image-size: scenes need at least 64 pixels"),
    (["--batch-size", "64", "--train-scenes", "32"], "--batch-size: 64 is larger than --train-scenes 32"),
    (["--lr", "nan"], "--lr"),
    (["--frozen-blocks", "9"], "--frozen-blocks"),
])
def test_train_detector_refuses_bad_options(extra, message, capsys, tmp_path):
    assert run(["train-detector", "--output-dir", str(tmp_path / "x"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_train_detector_interrupted_keeps_the_finished_epochs(tmp_path, capsys, monkeypatch, fmnist_root):
    from cvlab import detection
    real, calls = detection.train_one_epoch, []

    def stop_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(detection, "train_one_epoch", stop_in_epoch_2)
    out = tmp_path / "det"
    assert run(["train-detector", "--train-scenes", "32", "--test-scenes", "8", "--image-size", "64", "--epochs", "3",
                "--output-dir", str(out), "--no-progress", "--device", "cpu"]) == 130
    hist = json.loads((out / "history.json").read_text())
    assert hist["ended"] == "interrupted" and [r["epoch"] for r in hist["records"]] == [1]
    assert (out / "best.pt").is_file() and "interrupted after 1 epoch(s)" in capsys.readouterr().err
