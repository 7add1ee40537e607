"""``torchrun --nproc-per-node 2 -m cvlab train``: DistributedDataParallel on the CPU (gloo), end to end.

Each torchrun test starts two real processes (``python -m torch.distributed.run --standalone``, a free port)
on Fashion-MNIST images or the ``folder`` fixture, and checks what a learner sees: one run folder, the
history every rank computed, the accuracy of one process, resuming, a pretrained backbone frozen and then
unfrozen, and a rank that fails or hangs ending the run with its rank named. The probes (a rank's history,
its weights after each epoch, a forced failure) live in ``tests/ddp_probe.py``, which torchrun runs instead
of ``-m cvlab``; the code under test is the same ``cvlab.__main__.main``. Without torchrun the helpers of
``cvlab.distributed`` are the one-process case, tested here in this process.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cvlab import distributed
from cvlab.__main__ import main
from cvlab.models import CompactCNN

ROOT = Path(__file__).resolve().parents[1]
PROBE = str(ROOT / "tests" / "ddp_probe.py")


def fm(epochs=1, train_limit=3000, timeout=60):
    """``cvlab train`` on Fashion-MNIST: the first ``train_limit`` training images, the 10,000 test images to
    validate on, batches of 64 (32 per process on two)."""
    return ["train", "--model", "CompactCNN", "--train-limit", str(train_limit), "--batch-size", "64", "--epochs",
            str(epochs), "--no-progress", "--device", "cpu", "--dist-timeout", str(timeout)]


def torchrun(args, *, env=None, script=PROBE, timeout=120):
    """Run ``script`` (or ``-m cvlab`` for script=None) with ``args`` on 2 processes; (result, seconds)."""
    target = ["-m", "cvlab"] if script is None else [script]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *target, *args]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CVLAB_PROBE") and k != "CVLAB_DEVICE"}
    t0 = time.perf_counter()
    result = subprocess.run(command, env={**full_env, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout, cwd=ROOT)
    return result, time.perf_counter() - t0


@pytest.fixture(scope="module")
def data(tmp_path_factory, fmnist_root):
    """A data root holding (a link to) Fashion-MNIST and no runs yet."""
    root = tmp_path_factory.mktemp("data")
    (root / "FashionMNIST").symlink_to(fmnist_root / "FashionMNIST", target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory):
    """One epoch on 2 processes into the default run folder; every rank writes its History."""
    probes = tmp_path_factory.mktemp("probes")
    result, seconds = torchrun(fm(), env={"CVLAB_DATA": str(data),
                                        "CVLAB_PROBE_HISTORY": str(probes / "history-{rank}.json")})
    assert result.returncode == 0, result.stderr[-3000:]
    return result, seconds, probes


def test_two_processes_write_one_run_folder(ddp_run, data):
    result, seconds, _ = ddp_run
    runs = list((data / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("CompactCNN-fashion-mnist-"), runs
    assert {p.name for p in runs[0].iterdir()} == {"best.pt", "last.pt", "history.json"}
    lines = result.stdout.splitlines()
    assert lines[0] == f"cvlab train: writing to {runs[0]}", "rank 0 says where it writes, first"
    assert sum("cvlab train:" in line for line in lines) == 2, "rank 1 prints nothing: one header, not two"
    assert "2 processes (32 images each per step) on cpu" in lines[1]
    assert result.stdout.count("best epoch 1:") == 1
    hist = json.loads((runs[0] / "history.json").read_text())
    assert hist["processes"] == 2 and [r["epoch"] for r in hist["records"]] == [1]
    model = CompactCNN(in_channels=1, num_classes=10, image_size=28)
    model.load_state_dict(torch.load(runs[0] / "best.pt", weights_only=True)["state_dict"])  # no "module." keys
    assert seconds < 60


def test_every_rank_computed_the_history_rank_0_wrote(ddp_run, data):
    _, _, probes = ddp_run
    ranks = [json.loads((probes / f"history-{r}.json").read_text()) for r in (0, 1)]
    written = json.loads(next((data / "runs").iterdir()).joinpath("history.json").read_text())["records"]
    metrics = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    for rank in ranks:
        assert [{k: r[k] for k in metrics} for r in rank] == [{k: r[k] for k in metrics} for r in written]
    assert 60 < written[0]["val_acc"] < 95


def test_the_accuracy_of_one_process_within_noise(ddp_run, data, tmp_path, capsys):
    """The same command line on one process: 3,000 images, one epoch; seeds 0-2 gave 78.5-79.7 % on one
    process and 77.6-80.2 % on two, so 3 points is noise, more is a bug."""
    assert main([*fm(), "--output-dir", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "history.json").read_text())["records"][0]["val_acc"]
    two = json.loads(next((data / "runs").iterdir()).joinpath("history.json").read_text())["records"][0]["val_acc"]
    assert abs(one - two) < 3, f"one process {one:.2f} %, two processes {two:.2f} %"


def test_resume_on_two_processes_continues_to_epoch_2(ddp_run, data):
    run = next((data / "runs").iterdir())
    first_best = (run / "best.pt").read_bytes()
    result, seconds = torchrun([*fm(epochs=2), "--resume", str(run / "last.pt")], env={"CVLAB_DATA": str(data)}, script=None)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == f"cvlab train: continuing the run in {run}"
    assert list((data / "runs").iterdir()) == [run], "no second run folder"
    hist = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in hist["records"]] == [1, 2] and hist["processes"] == 2
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    best_epoch = min(hist["records"], key=lambda r: r["val_loss"])["epoch"]
    assert ((run / "best.pt").read_bytes() == first_best) == (best_epoch == 1)
    assert seconds < 60


def test_a_pretrained_backbone_frozen_then_unfrozen_on_two_processes(folder, tmp_path):
    """--unfreeze-at 2: DDP leaves the frozen backbone alone in epoch 1 (no gradient, no weight decay, same
    BatchNorm statistics: exactly the ImageNet weights), trains it in epoch 2, and the ranks stay equal."""
    from cvlab.pretrained import pretrained
    out, probes = tmp_path / "run", tmp_path / "weights-{rank}.json"
    result, seconds = torchrun(["train", "--model", "mobilenet_v2", "--data-dir", str(folder), "--image-size", "32",
                                "--batch-size", "30", "--epochs", "2", "--unfreeze-at", "2", "--lr", "1e-3",
                                "--scheduler", "none", "--no-progress", "--device", "cpu", "--output-dir", str(out)],
                               env={"CVLAB_PROBE_WEIGHTS": str(probes)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backbone frozen until epoch 2, then at lr x 0.1" in result.stdout
    imagenet, _ = pretrained("mobilenet_v2", allow_download=False, verbose=False)
    start = sum(p.double().sum().item() for p in imagenet.features.parameters())
    statistics = sum(b.double().sum().item() for b in imagenet.features.buffers())
    ranks = [json.loads(Path(str(probes).format(rank=r)).read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1], "both ranks hold the same weights after every epoch"
    epoch_1, epoch_2 = ranks[0]
    assert not epoch_1["backbone_trains"] and (epoch_1["backbone"], epoch_1["statistics"]) == (start, statistics)
    assert epoch_2["backbone_trains"] and epoch_2["backbone"] != start and epoch_2["statistics"] != statistics
    assert epoch_1["head"] != epoch_2["head"]
    groups = torch.load(out / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [(g["name"], g["lr"]) for g in groups] == [("classifier", 1e-3), ("features", pytest.approx(1e-4))]
    assert seconds < 60


@pytest.mark.parametrize("how", ["raise", "hang"])
def test_a_failing_rank_ends_the_run_naming_the_rank(how, fmnist_root, tmp_path):
    """Rank 1 raises in epoch 2 (torchrun then ends rank 0), or sleeps in epoch 2 (rank 0 gives up after
    --dist-timeout 5 s): either way the run ends, non-zero, within seconds, the rank named; epoch 1 is kept."""
    out = tmp_path / "run"
    result, seconds = torchrun([*fm(epochs=2, train_limit=512, timeout=5), "--output-dir", str(out)],
                               env={"CVLAB_PROBE_FAIL": f"1:2:{how}"}, timeout=90)
    assert result.returncode != 0 and seconds < 60
    if how == "raise":
        assert "cvlab train: rank 1 of 2 failed: RuntimeError: probe: rank 1 fails at the start of epoch 2" in result.stderr
        assert "rank      : 1 (local_rank: 1)" in result.stderr, "torchrun names the rank too"
    else:  # rank 0 waited 5 s, then stopped, keeping epoch 1 (last.pt, best.pt, and history.json from last.pt)
        line = next(l for l in result.stderr.splitlines() if l.startswith("cvlab train: rank 0 of 2 failed:"))
        assert "lost another rank" in line and "--dist-timeout 5 s" in line
        assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
        assert [r["epoch"] for r in json.loads((out / "history.json").read_text())["records"]] == [1]


# --- the one-process case, in this process ---------------------------------------------------------

def test_torchrun_env_reads_all_three_variables_or_none():
    assert distributed.torchrun_env({}) is None
    assert distributed.torchrun_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(ValueError, match="RANK set but not WORLD_SIZE, LOCAL_RANK: start the run with torchrun"):
        distributed.torchrun_env({"RANK": "0"})
    with pytest.raises(ValueError, match="whole numbers"):
        distributed.torchrun_env({"RANK": "a", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="do not fit WORLD_SIZE=2"):
        distributed.torchrun_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_without_torchrun_every_helper_is_the_one_process_case(monkeypatch):
    for name in distributed.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_distributed("cpu") == torch.device("cpu") and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_model(model, "cpu") is model and distributed.unwrap(model) is model
    assert distributed.reduce_sums([1.5, 2, 3]) == [1.5, 2, 3] and distributed.broadcast_object("x") == "x"
    assert distributed.eval_indices(5) == range(5) and len(distributed.train_sampler(5)) == 5
    distributed.sync_buffers(model)
    distributed.cleanup()
    with pytest.raises(ValueError, match="timeout must be > 0"):
        distributed.init_distributed("cpu", timeout=0)
