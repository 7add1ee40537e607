import os
import random

import numpy as np
import pytest
import torch

from cvlab import utils as U
from cvlab.models import TinyVGG, LinearModel


def test_set_seed_repeats_every_generator():
    U.set_seed(7)
    a = (random.random(), np.random.rand(), torch.rand(3))
    U.set_seed(7)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "1", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        U.set_seed(bad)


def test_get_device(monkeypatch):
    monkeypatch.delenv("CVLAB_DEVICE", raising=False)
    assert U.get_device("cpu") == torch.device("cpu")
    assert U.get_device().type in ("cpu", "cuda", "mps")
    monkeypatch.setenv("CVLAB_DEVICE", "cpu")
    assert U.get_device() == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            U.get_device("cuda")


def test_key_result_line(capsys):
    U.key_result("test accuracy 91.0 %")
    assert capsys.readouterr().out == "Key result: test accuracy 91.0 %\n"


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TinyVGG(hidden_units=4).eval()
    path = U.save_checkpoint(tmp_path / "sub" / "tiny.pt", model, model_kwargs={"hidden_units": 4},
                             class_names=["a", "b"], metrics={"test_acc": 88.5}, epoch=3)
    fresh = TinyVGG(hidden_units=4).eval()
    ckpt = U.load_checkpoint(path, fresh)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(fresh(x), model(x))
    assert ckpt["metrics"] == {"test_acc": 88.5} and ckpt["epoch"] == 3 and ckpt["arch"] == "TinyVGG"
    assert os.listdir(tmp_path / "sub") == ["tiny.pt"]  # no temporary file left behind


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = LinearModel()
    path = U.save_checkpoint(tmp_path / "m.pt", model, metrics={"v": 1})

    def broken_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        U.save_checkpoint(path, model, metrics={"v": 2})
    monkeypatch.undo()
    assert U.load_checkpoint(path)["metrics"] == {"v": 1}
    assert os.listdir(tmp_path) == ["m.pt"]


def test_checkpoint_of_another_architecture(tmp_path):
    path = U.save_checkpoint(tmp_path / "lin.pt", LinearModel())
    with pytest.raises(U.CheckpointError, match="holds a 'LinearModel' model, but a 'TinyVGG'"):
        U.load_checkpoint(path, TinyVGG())


def test_checkpoint_with_other_shapes(tmp_path):
    path = U.save_checkpoint(tmp_path / "t.pt", TinyVGG(hidden_units=4), model_kwargs={"hidden_units": 4})
    with pytest.raises(U.CheckpointError, match="hidden_units"):
        U.load_checkpoint(path, TinyVGG(hidden_units=8))


def test_corrupt_and_missing_checkpoints(tmp_path):
    path = U.save_checkpoint(tmp_path / "m.pt", LinearModel())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(U.CheckpointError, match="truncated or corrupt"):
        U.load_checkpoint(path, LinearModel())
    with pytest.raises(U.CheckpointError, match="no checkpoint at"):
        U.load_checkpoint(tmp_path / "none.pt")
    torch.save(LinearModel().state_dict(), tmp_path / "bare.pt")
    with pytest.raises(U.CheckpointError, match="not written by cvlab"):
        U.load_checkpoint(tmp_path / "bare.pt", LinearModel())


def test_unloadable_entries_are_refused_before_writing(tmp_path):
    import numpy as np
    with pytest.raises(TypeError, match=r"checkpoint\['epoch'\] is a numpy"):
        U.save_checkpoint(tmp_path / "m.pt", LinearModel(), epoch=np.int64(3))
    assert not (tmp_path / "m.pt").exists()


def test_sha256_file(tmp_path):
    import hashlib
    (tmp_path / "f").write_bytes(b"cvlab" * 300_000)
    assert U.sha256_file(tmp_path / "f") == hashlib.sha256(b"cvlab" * 300_000).hexdigest()


def test_cpu_has_bf16_reads_cpuinfo(monkeypatch):
    import builtins
    real_open = builtins.open

    def fake(text):
        def opener(path, *a, **k):
            if path == "/proc/cpuinfo":
                if text is None:
                    raise OSError("no such file")
                import io
                return io.StringIO(text)
            return real_open(path, *a, **k)
        return opener

    monkeypatch.setattr(builtins, "open", fake("flags : fpu avx2 amx_bf16 amx_tile"))
    assert U.cpu_has_bf16() is True
    monkeypatch.setattr(builtins, "open", fake("flags : fpu avx2"))
    assert U.cpu_has_bf16() is False
    monkeypatch.setattr(builtins, "open", fake(None))
    assert U.cpu_has_bf16() is False
