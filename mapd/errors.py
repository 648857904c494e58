"""One exception type for every user-facing problem; the CLI turns it into one line and exit 2."""


class MapdError(Exception):
    """Bad input, bad config or a missing/corrupt file. The message names the problem."""


class DataError(MapdError):
    """A data set on disk is missing, corrupt or not in the expected format."""


class ConfigError(MapdError):
    """A configuration value is missing, unknown or out of range."""


class MissingSplit(ConfigError):
    """This copy of a data set has no such split (e.g. an image folder without test/)."""
