"""Exceptions with messages meant for users: each names the file or key at fault."""


class SeasError(Exception):
    """Base class: the CLIs print these as `error: <message>` and exit with status 2."""


class ConfigError(SeasError, ValueError):
    """A configuration file or value that does not match the schema."""


class DataError(SeasError, ValueError):
    """A dataset tree, image, mask or manifest that cannot be used as it is."""


class CheckpointError(SeasError):
    """A missing, incomplete or incompatible checkpoint / model directory."""
