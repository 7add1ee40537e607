import random

import numpy as np
import pytest
import torch

from cvlab import utils as U


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


@pytest.mark.parametrize("total", [7, 1000, 30000])
def test_progress_bar_redraws_at_most_max_bar_refreshes_times(total):
    import io
    out = io.StringIO()
    with U.progress_bar(total=total, desc="x", mininterval=0, file=out) as bar:
        for _ in range(total):
            bar.update(1)
    redraws = out.getvalue().count("\r")
    assert 2 <= redraws <= U.MAX_BAR_REFRESHES + 3, redraws
    assert bar.n == total


def test_progress_bar_takes_the_length_of_an_iterable_and_counts_when_disabled():
    bar = U.progress_bar(range(50), enabled=False)
    assert bar.total == 50 and list(bar) == list(range(50)) and bar.disable
    assert U.progress_bar(iter(range(3))).total is None
