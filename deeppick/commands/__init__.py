"""The ``deeppick`` commands, one small module per group; each command parses its options and calls the
library (:mod:`deeppick.cli` gathers them)."""

from .automatic import autopick, pretrain
from .benchmark import benchmark
from .files import convert, fetch, info, manifest
from .looking import report, show
from .picking import evaluate, pick
from .simulate import simulate
from .training import extract, fit, refine, threshold, train

COMMANDS = (simulate, info, convert, extract, train, fit, refine, threshold, pick, evaluate, report, show, pretrain,
            autopick, manifest, fetch, benchmark)
