#!/usr/bin/env bash
# Set up synthgap from scratch: a virtualenv in .venv with the pinned torch build first (so no
# later step can pull another torch), then synthgap and its test extras.
# Used by the README, CI (.ci/run) and the Dockerfile alike.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() {
  # Hide pip's notes about absent local mirrors; keep its exit status and real errors.
  .venv/bin/python -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2)
}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install torch==2.14.1 torchvision==0.29.1
pip_install -e ".[test]"
.venv/bin/python -c "import torch, synthgap; assert torch.__version__.startswith('2.14.1'), torch.__version__; print('synthgap', synthgap.__version__, 'torch', torch.__version__)"
