"""Command line: ``python -m cvlab setup`` places the data the lessons need (run by course.py)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cvlab`` and the ``cvlab`` console script; returns an exit status."""
    parser = argparse.ArgumentParser(prog="cvlab", description="cvlab course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p_setup = sub.add_parser("setup", help="place Fashion-MNIST in the data root, checked by sha256")
    p_setup.add_argument("--root", help="data root (default: $CVLAB_DATA or the project's data/)")
    p_setup.add_argument("--no-download", action="store_true", help="never download; local sources only")
    args = parser.parse_args(argv)

    if args.command == "setup":
        from .data import CorruptDatasetError, DatasetNotFoundError, prepare_fashion_mnist
        try:
            prepare_fashion_mnist(args.root, allow_download=not args.no_download)
        except (DatasetNotFoundError, CorruptDatasetError) as exc:
            print(f"cvlab setup: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
