"""User errors in the tools: one line that says what is wrong, an exit status, no traceback.

A user error is something the user asked for that cannot be done: a config file that does not
exist, a bad key or value, missing dataset files, a checkpoint that is missing, damaged or of
another activation, an output folder that holds a run. The steps where such errors arise mark
them (:func:`user_errors`, or :class:`UserError`), and the tools run through
:func:`exit_on_user_error`, which prints ``<tool>: error: <message>`` as the last line of the
output and exits with the error's status: 2 (as argparse) for errors in the command line and
the config, 1 for the others. Anything else is a bug and keeps its traceback. ``--debug``
(:func:`add_debug_argument`) or ``PWLU_DET_DEBUG=1`` shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = [
    "DEBUG_ENV",
    "FAILURE",
    "USAGE",
    "UserError",
    "add_debug_argument",
    "debugging",
    "exit_on_user_error",
    "one_line",
    "user_error_status",
    "user_errors",
]

#: Environment variable that makes the tools show the traceback of every error.
DEBUG_ENV = "PWLU_DET_DEBUG"
#: Exit status of errors in the command line or the config (argparse's).
USAGE = 2
#: Exit status of the other user errors.
FAILURE = 1

_T = TypeVar("_T")


class UserError(Exception):
    """Something the user asked for cannot be done; the message says what and what to do.

    Args:
        message: the explanation (printed on one line).
        status: the tool's exit status, :data:`USAGE` or :data:`FAILURE`.
    """

    def __init__(self, message: str, status: int = FAILURE):
        super().__init__(message)
        self.status = status


_STATUS = "pwlu_det_user_error_status"  # the attribute that marks an exception as the user's


@contextlib.contextmanager
def user_errors(*types: type[BaseException], status: int = FAILURE) -> Iterator[None]:
    """Mark exceptions of ``types`` raised in the block as user errors with ``status``.

    The exception itself propagates, of its own type (callers and tests see a ``ValueError``
    as before); :func:`exit_on_user_error` then prints it as a user error. A mark set by an
    inner block is kept.
    """
    try:
        yield
    except types as error:
        if user_error_status(error) is None:
            setattr(error, _STATUS, status)
        raise


def user_error_status(error: BaseException) -> int | None:
    """The exit status of a user error (:class:`UserError` or marked); None for a bug."""
    if isinstance(error, UserError):
        return error.status
    return getattr(error, _STATUS, None)


def add_debug_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--debug`` (full tracebacks, also for user errors) to ``parser``; returns it."""
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the full traceback of any error (or set {DEBUG_ENV}=1)",
    )
    return parser


def debugging(args: argparse.Namespace | None = None) -> bool:
    """Whether ``args.debug`` is set or the environment has ``PWLU_DET_DEBUG`` (not 0)."""
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def one_line(message: str) -> str:
    """``message`` with its line breaks and indentation collapsed into single spaces."""
    return " ".join(message.split())


def exit_on_user_error(run: Callable[[], _T], *, debug: bool = False, prog: str = "") -> _T:
    """Return ``run()``; on a user error (:func:`user_error_status`), print it and exit.

    Args:
        run: the tool's work.
        debug: re-raise the error instead (the traceback shows); the environment variable
            ``PWLU_DET_DEBUG`` does the same.
        prog: the tool's name in the message (default: the script's name).

    Raises:
        SystemExit: with the error's status, after printing ``<prog>: error: <message>`` to
            stderr (stdout flushed first, so that the message is the output's last line).
    """
    try:
        return run()
    except Exception as error:
        status = user_error_status(error)
        if status is None or debug or debugging():
            raise
        sys.stdout.flush()
        name = prog or os.path.basename(sys.argv[0])
        print(f"{name}: error: {one_line(str(error))}", file=sys.stderr, flush=True)
        raise SystemExit(status) from None
