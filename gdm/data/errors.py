"""The one error type of the data layer: a ValueError whose message names the file or config key and the fix."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data input or state (missing source, corrupt shard, changed config); the message says what to do."""
