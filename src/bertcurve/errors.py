"""The one exception type the CLI turns into a clean one-line error."""

import sys


class UserError(Exception):
    """Bad input or settings: the message says what is wrong and how to fix it.

    The CLI prints ``bertcurve: error: <message>`` and exits with status 2,
    without a traceback. Library callers get the exception as usual.
    """

    said = False  # the line is already on stderr (say_now); the CLI does not repeat it


def error_line(message: object) -> str:
    """The one line the CLI prints for an error (a UserError or the message it stands for)."""
    return f"bertcurve: error: {message}"


def say_now(exc: UserError) -> UserError:
    """Print ``exc``'s line at once and return it to raise.

    For a torchrun worker whose peer died: torchrun sends it SIGTERM as soon as
    it notices, and the default action would kill it silently between leaving
    the trainer (which holds SIGTERM while training) and the CLI's print.
    """
    print(error_line(exc), file=sys.stderr, flush=True)
    exc.said = True
    return exc
