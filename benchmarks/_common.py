"""What the benchmarks share: the ``--avx2`` option and the scenes of lessons 06 and 07.
(Run a benchmark as a script, ``.venv/bin/python benchmarks/bench_x.py``: its folder is then on the path.)"""
from __future__ import annotations

import argparse

from cvlab.utils import rerun_with_avx2_kernels

#: the scenes lessons 06 and 07 train and test on: 96 x 96 px, 1-3 items of 24-48 px
LESSON_SCENES = dict(size=96, min_items=1, max_items=3, scale=(24, 48))


def parse_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Add ``--avx2``, parse the command line, and with ``--avx2`` run this script again with
    PyTorch restricted to AVX2 kernels (``cvlab.utils.rerun_with_avx2_kernels``)."""
    parser.add_argument("--avx2", action="store_true",
                        help="time as on a CPU without AVX-512: PyTorch restricted to AVX2 kernels (cvlab.utils.AVX2_ENV)")
    args = parser.parse_args()
    if args.avx2:
        rerun_with_avx2_kernels()
    return args
