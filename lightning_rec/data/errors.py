"""The one exception type for bad input data, so callers can catch it apart from bugs."""


class DataError(ValueError):
    """Bad input data; the message names the file, row and/or field."""
