"""The one exception type users see: a single line saying what is wrong and how to fix it."""


class KitError(Exception):
    """A user-facing failure. The CLI prints `error: <message>` and exits with status 2.

    The message must fit on one line and name the fix, e.g.
    "test.zip is missing from foo.zip: download the competition again with `make download`".
    """
