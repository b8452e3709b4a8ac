"""The one base of every error a user can fix (a path, a config value, a file, a recording).

Every job turns a :class:`UserError` into one line naming the culprit and exit status 1, never a
traceback (``jobs._cli.fail``). Each module's own error class derives from it and from the builtin
it always was (``ConfigError`` is still a ``ValueError``, ``StorageError`` an ``OSError``).
"""


class UserError(Exception):
    """Input a user can fix; the message names it and says what to do."""
