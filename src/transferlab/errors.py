"""Errors a user can cause and fix: bad paths, bad data, bad config values."""


class UserError(Exception):
    """A problem the user can fix.

    The message names the problem (the path, value or setting at fault) and the fix. Entry points print it
    as one line without a traceback and exit with status 2.
    """
