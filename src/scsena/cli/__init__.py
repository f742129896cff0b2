"""Command line interface: ``scsena demo``, ``train``, ``evaluate`` and ``activity``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from ._activity import _add_activity_parser
from ._common import (
    _HelpFormatter,
    _quiet,
    _use_threads,
    cli_message,
    heldout_option,  # noqa: F401 - the --heldout parser, used by scripts and tests
)
from ._demo import _add_demo_parser
from ._evaluate import _add_evaluate_parser
from ._train import _add_train_parser

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``scsena`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="scsena",
        description="SENA-discrepancy-VAE for single-cell perturbation screens. "
        "Run `scsena COMMAND --help` for a command's options and their defaults.",
        epilog="Start with `scsena demo`; then `scsena train`, `scsena evaluate`, "
        "`scsena activity`. --out is always a directory.",
        formatter_class=_HelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_activity_parser(sub)
    return parser


#: Errors that come from what the user gave (data, options, files): one line, no traceback.
USER_ERRORS = (
    ValueError,
    KeyError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``scsena`` command.

    Returns the exit status: 0, 1 for a user error (printed as one line on standard
    error, naming the command-line option to change), 130 after Ctrl-C.
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        _quiet()
        _use_threads(args)
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("error: interrupted (Ctrl-C); nothing further was started.", file=sys.stderr)
            return 130
        except USER_ERRORS as err:
            print(f"error: {cli_message(err)}", file=sys.stderr)
            return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
