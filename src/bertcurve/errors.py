"""The one exception type the CLI turns into a clean one-line error."""


class UserError(Exception):
    """Bad input or settings: the message says what is wrong and how to fix it.

    The CLI prints ``bertcurve: error: <message>`` and exits with status 2,
    without a traceback. Library callers get the exception as usual.
    """
