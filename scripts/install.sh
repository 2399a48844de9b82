#!/usr/bin/env bash
# Creates .venv (once) and installs Tessera into it. Sourced by run.sh and test.sh so the
# two README commands install the same way. EXTRAS selects optional dependency groups.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TESSERA_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
# torch and torchvision are pinned as a matching pair: spandrel imports torchvision, and a
# torchvision that does not match torch fails at import (see README, "Other CUDA versions").
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
STAMP="$VENV/.tessera-installed-${EXTRAS:-base}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --quiet $TORCH_SPEC -e "$ROOT${EXTRAS:+[$EXTRAS]}"
    touch "$STAMP"
fi
