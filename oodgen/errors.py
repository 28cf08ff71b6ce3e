"""One exception type for every user-facing failure.

Messages are a single line that says what is wrong and how to fix it; the CLIs print them and exit 2.
"""


class OodgenError(ValueError):
    """Bad input, missing data, unreadable checkpoint, unknown config key, ..."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force a single line


class DatasetNotFoundError(OodgenError):
    """A named dataset is unknown or none of its sources is available on this machine."""
