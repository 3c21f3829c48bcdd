"""Errors a user can act on.

Every error raised at an edge of the system (files, configs, adapters, CLI
arguments) derives from :class:`TaloraError`, so the CLI can print the message
without a traceback and exit non-zero. Messages name the file, line and field.
"""


class TaloraError(Exception):
    """Base class of every error meant for the user, not the developer."""


class DataError(TaloraError, ValueError):
    """A data file, split or example is malformed or inconsistent."""


class ConfigError(TaloraError, ValueError):
    """A config file or argument has an unknown key, a wrong type or a bad value."""


class AdapterError(TaloraError, ValueError):
    """An adapter file is corrupt, or was made for another base model or method."""


class TrainingError(TaloraError, RuntimeError):
    """Training cannot go on (for example the loss became NaN)."""


class CheckpointError(TaloraError, ValueError):
    """A training checkpoint is missing a file or cannot be read."""
