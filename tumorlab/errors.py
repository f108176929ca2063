"""Errors that the ``tumorlab`` command reports as one line (``tumorlab: error: ...``) instead of a traceback.

Raise them where the cause is known, naming the file, key or value and what was expected.
"""


class TumorlabError(Exception):
    """Base class of errors caused by the user's input (paths, files, config values)."""


class DataError(TumorlabError, ValueError):
    """A data root, file or split that cannot be used as given."""


class ConfigError(TumorlabError, ValueError):
    """A config value that is out of range or disagrees with another one."""


class RunError(TumorlabError, RuntimeError):
    """A run that cannot go on: a checkpoint that cannot be written (full disk, no permission)."""
