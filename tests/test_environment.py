"""The installed packages are the ones requirements.lock pins (the versions the notebooks were made
with). One implementation of the comparison, ``course.lock_drift``, serves this test and the set-up."""
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import course  # noqa: E402


def test_installed_versions_match_the_lock():
    drift = course.lock_drift()
    assert not drift, ("installed versions differ from requirements.lock (`python course.py setup` "
                       "re-installs from it):\n" + "\n".join(drift))


def test_the_lock_pins_torch_and_torchvision_and_keeps_opencv_below_5():
    pins = {name: v for name, v, marker in course.lock_pins(course.LOCK.read_text(encoding="utf-8"))}
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert int(pins["opencv-python-headless"].split(".")[0]) == 4


def test_a_wrong_or_missing_version_is_reported():
    torch = version("torch")
    lock = ("# a comment\n"
            "torch==0.0.1\n"
            "    # via cvlab (pyproject.toml)\n"
            "Typing_Extensions==" + version("typing-extensions") + "\n"   # names compare normalised
            "no-such-package-cvlab==1.0 ; sys_platform != 'nonexistent'\n"
            "pywinpty==0.0.1 ; python_version < '3'\n"                    # marker does not apply here
            "cvlab==0.0.0\n")                                             # the project itself: skipped
    assert course.lock_drift(lock) == [f"torch: 0.0.1 in the lock, {torch} installed",
                                       "no-such-package-cvlab: 1.0 in the lock, not installed"]


def test_versions_compare_as_pip_does():
    lock = "torch==2.14.1\nnumpy==2.4.6 \\\n    --hash=sha256:0123\n"
    assert course.lock_drift(lock, installed={"torch": "2.14.1+cpu", "NumPy": "2.4.6"}) == []
    assert course.lock_drift(lock, installed={"torch": "2.14.10", "numpy": "2.4.6"}) == [
        "torch: 2.14.1 in the lock, 2.14.10 installed"]


def test_a_line_that_is_not_an_exact_pin_is_an_error():
    with pytest.raises(ValueError, match="not an exact pin"):
        course.lock_pins("torch>=2.2\n")
