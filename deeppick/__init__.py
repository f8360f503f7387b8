"""deeppick: deep-learning particle picking for cryo-EM micrographs."""

from ._version import __version__
from .errors import DeepPickError

__all__ = ["__version__", "DeepPickError"]
