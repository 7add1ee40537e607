"""The installed packages are the ones requirements.lock pins (the versions the notebooks were made
with). One implementation of the comparison, ``course.lock_drift``, serves this test and the set-up.
Also: the JupyterLab that ``python course.py`` opens starts (as root too) and answers at its URL."""
import json
import re
import os
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


def test_jupyterlab_opens_as_root_at_the_printed_url(tmp_path):
    """The command ``python course.py`` runs starts a JupyterLab that answers at the URL it prints,
    also as root (where Jupyter refuses to start without ``--allow-root``)."""
    import subprocess
    import time
    import urllib.request

    port, token = course.free_port(), "test-token-123"
    cmd = course.lab_command(Path(sys.executable), port=port, token=token, as_root=os.geteuid() == 0)
    assert ("--allow-root" in cmd) == (os.geteuid() == 0)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    server = subprocess.Popen(cmd + ["--no-browser", "--ServerApp.ip=127.0.0.1"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
                    status = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert server.poll() is None, f"JupyterLab exited: {server.stderr.read()[-2000:]}"
        assert status is not None and "started" in status
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={token}", timeout=5) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_record_run_times_writes_the_header_and_the_readme(tmp_path):
    import shutil
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(course.NOTEBOOKS / "00_setup_and_torchvision_tour.ipynb", notebooks)
    readme = tmp_path / "README.md"
    readme.write_text(course.README.read_text(encoding="utf-8"), encoding="utf-8")
    changes = course.record_run_times({"00_setup_and_torchvision_tour.ipynb": 123.4}, avx2=True, readme=readme,
                                      notebooks=notebooks)
    assert [c.split(":")[1].split()[0] for c in changes] == ["header", "README"]
    header = json.loads((notebooks / "00_setup_and_torchvision_tour.ipynb").read_text())["cells"][0]["source"]
    assert "and about 125 seconds with PyTorch" in "".join(header)
    first = re.search(r"^\| `00_setup_and_torchvision_tour` \|.*?\| ~(\d+) s / ~\d+ s \|", course.README.read_text(encoding="utf-8"),
                      flags=re.M).group(1)  # the AVX-512 column stays as it was
    assert f"| ~{first} s / ~125 s |" in readme.read_text(encoding="utf-8")
    assert course.record_run_times({"00_setup_and_torchvision_tour.ipynb": 124.0}, avx2=True, readme=readme,
                                   notebooks=notebooks) == []
    assert (course.rounded_seconds(11.4), course.rounded_seconds(62.4), course.rounded_seconds(133.2)) == (11, 60, 135)


def test_lab_settings_save_widget_state_and_keep_other_settings(tmp_path):
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    course.write_lab_settings(path)
    assert json.loads(path.read_text()) == {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
                                "@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": False}}))
    course.write_lab_settings(path)
    merged = json.loads(path.read_text())
    assert merged["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    assert merged["@jupyter-widgets/jupyterlab-manager:plugin"] == {"saveState": True}
    assert course.lab_settings_file(Path(sys.executable)) == Path(sys.prefix) / "share/jupyter/lab/settings/overrides.json"
