"""deeppick: deep-learning particle picking for cryo-EM micrographs."""

import os

# Idle OpenMP threads sleep instead of spinning. On a shared node or beside another job, spinning threads
# wait on descheduled peers and torch runs many times slower (docs/measurements.md, *Shared machines*); on a
# quiet machine passive waiting costs little. It takes effect when torch loads after deeppick (deeppick
# itself imports torch lazily); a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__  # noqa: E402
from .errors import DeepPickError  # noqa: E402

__all__ = ["__version__", "DeepPickError"]
