"""The course run fails when a lesson hangs or is cut short, and long cells do not flood nbval.

Each case writes small notebooks into a temporary folder with a copy of the project's conftest.py
and pyproject.toml (so the project's own pytest settings apply), runs nbval there as
``python course.py test`` does, and reads the verdict per cell.
"""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _nbval(folder: Path, timeout_s: int) -> tuple[int, dict[str, str], str]:
    """Run nbval over ``folder`` with the project's settings: (exit status, {cell: verdict}, output)."""
    shutil.copy(ROOT / "conftest.py", folder / "conftest.py")
    shutil.copy(ROOT / "pyproject.toml", folder / "pyproject.toml")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", f"--nbval-cell-timeout={timeout_s}", "."],
                          cwd=folder, capture_output=True, text=True, timeout=600)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    verdicts = dict((cell, verdict) for verdict, cell in
                    re.findall(r"^(PASSED|FAILED|XFAIL|XPASS|ERROR) \S+::(Cell \d+)", out, re.M))
    return proc.returncode, verdicts, out


def test_a_timed_out_cell_fails_the_run_even_when_its_code_swallows_the_interrupt(tmp_path):
    """Issue 9: nbval interrupted a slow cell, fit took it for Ctrl-C and returned, and the run passed."""
    _notebook(tmp_path / "hang.ipynb",
              "import time\ntry:\n    time.sleep(120)\nexcept KeyboardInterrupt:\n    print('carried on')",
              "print('the next cell')")
    status, verdicts, out = _nbval(tmp_path, timeout_s=3)
    assert status == 1, out
    assert verdicts == {"Cell 0": "FAILED", "Cell 1": "FAILED"}, out
    assert "Cell 0 ran past the cell time limit (--nbval-cell-timeout=3 s)" in out
    assert "[XPASS(strict)] Previous cell timed out" in out


def test_fit_re_raises_nbvals_interrupt_so_the_cell_fails(tmp_path, fmnist_root):
    """fit keeps its history and checkpoint, then raises TrainingInterrupted: a timeout is never a finished run."""
    _notebook(tmp_path / "slow_fit.ipynb",
              "import time, torch\nfrom cvlab.models import LinearModel\nfrom cvlab.training import fit\n"
              "class Slow:\n    def __len__(self): return 1000\n"
              "    def __iter__(self):\n        for _ in range(1000):\n            time.sleep(0.05)\n"
              "            yield torch.rand(8, 1, 4, 4), torch.randint(0, 2, (8,))\n"
              "history = fit(LinearModel(16, 2), Slow(), epochs=1, device='cpu')",
              "print('not reached')")
    status, verdicts, out = _nbval(tmp_path, timeout_s=8)
    assert status == 1, out
    assert verdicts["Cell 0"] == "FAILED" and verdicts["Cell 1"] in ("XFAIL", "FAILED"), out
    assert "TrainingInterrupted" in out and "interrupted after 0 finished epoch(s)" in out


@pytest.mark.parametrize("bar, verdict", [("cvlab.utils.progress_bar(range(30000), mininterval=0)", "PASSED"),
                                          ("tqdm.auto.tqdm(range(30000), mininterval=0)", "FAILED")])
def test_a_long_progress_bar_does_not_flood_nbval(bar, verdict, tmp_path):
    """CI failed with "Timeout of 5 seconds exceeded waiting for output" after a 3-minute training cell:
    tqdm's 10 redraws a second overflowed ZeroMQ's queue while nbval waited for the cell to end, and the
    kernel's "idle" message was lost. cvlab's bars redraw at most MAX_BAR_REFRESHES times; a plain tqdm
    bar redrawing 30,000 times shows the failure this guards against."""
    _notebook(tmp_path / "bar.ipynb", "import tqdm.auto, cvlab.utils\n"
              f"for _ in {bar}:\n    pass\nprint('done')")
    status, verdicts, out = _nbval(tmp_path, timeout_s=120)
    assert verdicts == {"Cell 0": verdict}, out
    if verdict == "FAILED":
        assert "Timeout of 5 seconds exceeded waiting for output" in out
