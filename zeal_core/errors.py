"""Errors that reach users: each message names what went wrong, the file involved, and the fix."""


class ZealError(Exception):
    """Base class for every error the lab reports to a user (page, command line, job log)."""


class DataError(ZealError):
    """A dataset, archive or image could not be read, downloaded or verified."""


class ConfigError(ZealError, ValueError):
    """A setting, parameter or name is invalid (unknown name, NaN, out of range)."""


class ModelError(ZealError):
    """A model version is missing, unreadable or does not fit the data."""


class Cancelled(ZealError):
    """Long work stopped because its cancel token was set."""
