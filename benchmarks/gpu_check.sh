#!/usr/bin/env bash
# The GPU check, in one go on a GPU machine (under 8 minutes): the CUDA-marked tests, the scanner on CUDA,
# and micrographs per second at 4096², box 160. Run from anywhere; it uses the machine's python3 with its
# CUDA PyTorch, installs deeppick's other needs from wheels in $DEEPPICK_WHEELS (a folder, for a machine
# that reaches no package index) or else from the index, and prints every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE PYTHONUNBUFFERED=1
site=$(mktemp -d)
if [ -d "${DEEPPICK_WHEELS:-.whl}" ]; then
    python3 -m pip install -q --no-index --no-deps --target "$site" "${DEEPPICK_WHEELS:-.whl}"/*.whl
else
    python3 -m pip install -q --target "$site" mrcfile starfile "dask[distributed]"
fi
export PYTHONPATH="$site:$PWD"
python3 - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA GPU seen by this python3's torch"
print("torch", torch.__version__, "on", torch.cuda.get_device_name())
PY
python3 -m pytest -q -p no:cacheprovider -m cuda tests
python3 benchmarks/scan_speed.py --device cuda --repeats 5
python3 benchmarks/throughput.py --sizes 4096 --micrographs 32 --device cuda
