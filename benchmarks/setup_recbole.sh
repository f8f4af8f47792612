#!/usr/bin/env bash
# Build a separate virtual environment with RecBole 1.2.1 (the SASRec peer used by
# benchmarks/benchmark.py) at benchmarks/.recbole-venv.
#
# Idempotent: if the venv already imports recbole 1.2.1 and torch, nothing is done.
# Use --force to rebuild it from scratch.
#
#   bash benchmarks/setup_recbole.sh [--force]
#
# Environment:
#   PYTHON          interpreter used to create the venv (default: python3)
#   RECBOLE_VENV    where to build it (default: benchmarks/.recbole-venv)
#   RECBOLE_TORCH   torch requirement (default: torch==2.13.0, the local CPU build)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${RECBOLE_VENV:-$HERE/.recbole-venv}"
PYTHON="${PYTHON:-python3}"
TORCH_REQ="${RECBOLE_TORCH:-torch==2.13.0}"

check() {
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$VENV/bin/python" - <<'EOF'
import warnings
warnings.filterwarnings("ignore")
import numpy, scipy, pandas, torch
import recbole
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
import recbole.quick_start  # imports ray (needs pkg_resources)
assert recbole.__version__ == "1.2.1", recbole.__version__
print(f"recbole {recbole.__version__}  torch {torch.__version__}  numpy {numpy.__version__}  "
      f"scipy {scipy.__version__}  pandas {pandas.__version__}")
EOF
}

if [[ "${1:-}" == "--force" ]]; then
    rm -rf "$VENV"
elif [[ -x "$VENV/bin/python" ]] && check 2>/dev/null; then
    echo "RecBole venv already works: $VENV"
    exit 0
fi

echo "Building RecBole venv at $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip wheel
# CPU torch first, so recbole's "torch>=1.10" requirement does not pull another build.
"${PIP[@]}" "$TORCH_REQ"
# RecBole 1.2.1 predates numpy 2, scipy 1.13 (scipy.sparse API) and pandas 2.2.
# recbole.quick_start imports ray, which RecBole pins to <=2.6.3; ray 2.6.3 does
# `import pkg_resources`, which setuptools dropped after 80.x. torch 2.13 needs
# setuptools>=77.0.3, so "setuptools<70" cannot be installed with it: 77.0.3..80.x
# satisfies both. The model-size report imports thop.
"${PIP[@]}" "$TORCH_REQ" "recbole==1.2.1" \
    "numpy<2" "scipy<1.13" "pandas<2.2" "setuptools>=77.0.3,<81" "ray<=2.6.3" \
    ray thop colorlog colorama tensorboard texttable pyyaml tqdm tabulate plotly \
    scikit-learn psutil

check
echo "RecBole venv ready: $VENV"
