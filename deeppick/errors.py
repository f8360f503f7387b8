"""One exception family for problems a user can fix.

Every message says what is wrong, where (the file), and what to do. The CLI prints the message as one
line and exits with status 2; programming errors are ordinary Python exceptions and are not caught.
"""


class DeepPickError(Exception):
    """Base class of every user-facing deeppick error."""


class MicrographError(DeepPickError):
    """A micrograph cannot be read or is unusable (corrupt, wrong mode, constant, too small...)."""


class CoordinateError(DeepPickError):
    """A coordinate file cannot be read, written or matched to a micrograph."""


class DatasetError(DeepPickError):
    """A dataset folder is missing parts or is inconsistent."""


class ModelFileError(DeepPickError):
    """A model file is missing, corrupt or from an incompatible version."""


class ConfigError(DeepPickError):
    """An option or parameter has a value that cannot work."""
