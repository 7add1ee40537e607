"""Benchmark: two lessons at once on a small machine — each one's slowdown against running alone,
with OpenMP's default wait policy, with ``OMP_WAIT_POLICY=PASSIVE`` and with a bounded spin
(``GOMP_SPINCOUNT``, what ``python course.py`` sets for the kernels it starts).

Why: PyTorch's CPU kernels run on an OpenMP thread pool, one thread per core. Between parallel
regions those threads spin-wait (the default, "active"), which is fastest when they have the cores
to themselves. Two kernels on 2 cores (a learner with two lessons open, a classroom server) each
spin on cores the other needs, and both slow down far more than 2x. Passive waiting (threads sleep
instead of spinning) gives the cores back.

For each policy, every lesson runs alone from a fresh kernel (``course.py _execute``, copies in
``build/executed/``, the committed notebooks untouched), then all lessons start together. Prints
the wall-clock seconds and the slowdown (together / alone) of each lesson, beside the CPU model.
A fair share of 2 cores between two lessons is a slowdown of about 2x; spinning threads make it
worse. This machine's timings are noisy (2-4x in a bad minute): run it twice. Not a test; it
asserts nothing.

Usage:  .venv/bin/python benchmarks/bench_two_lessons.py [--lessons 01 08] [--policies default PASSIVE ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cvlab.utils import cpu_info  # noqa: E402

#: OpenMP settings compared: libgomp spins 300,000 times (a fraction of a millisecond) before it
#: sleeps by default; PASSIVE sleeps at once; GOMP_SPINCOUNT bounds the spinning in between
POLICIES = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
            "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"}, "GOMP_SPINCOUNT=100000": {"GOMP_SPINCOUNT": "100000"}}


def start(lesson: str, policy: dict[str, str]) -> subprocess.Popen:
    """One lesson executed from a fresh kernel in a child process with the given OpenMP settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(policy)
    log = open(ROOT / "build" / f"bench_two_lessons_{lesson}.log", "w", encoding="utf-8")
    return subprocess.Popen([sys.executable, str(ROOT / "course.py"), "_execute", lesson], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def timed(lessons: list[str], policy: dict[str, str]) -> dict[str, float]:
    """Start the lessons together; the wall-clock seconds until each one ends."""
    t0 = time.perf_counter()
    running = {lesson: start(lesson, policy) for lesson in lessons}
    seconds = {}
    while running:
        for lesson, proc in list(running.items()):
            if proc.poll() is not None:
                if proc.returncode:
                    tail = (ROOT / "build" / f"bench_two_lessons_{lesson}.log").read_text(encoding="utf-8")[-3000:]
                    raise SystemExit(f"lesson {lesson} failed (exit {proc.returncode}):\n{tail}")
                seconds[lesson] = time.perf_counter() - t0
                del running[lesson]
        time.sleep(0.2)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lessons", nargs="+", default=["01", "08"], help="name parts of the lessons to run together")
    parser.add_argument("--policies", nargs="+", choices=list(POLICIES), default=list(POLICIES),
                        help="the OpenMP settings to compare")
    args = parser.parse_args()
    print(f"CPU: {cpu_info()}; lessons {', '.join(args.lessons)}")
    (ROOT / "build").mkdir(exist_ok=True)
    for name in args.policies:
        policy = POLICIES[name]
        alone = {}
        for lesson in args.lessons:
            alone.update(timed([lesson], policy))
        together = timed(args.lessons, policy)
        print(f"OpenMP {name}:")
        for lesson in args.lessons:
            print(f"  lesson {lesson}: alone {alone[lesson]:6.1f} s, together {together[lesson]:6.1f} s, "
                  f"slowdown {together[lesson] / alone[lesson]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
