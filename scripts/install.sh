#!/usr/bin/env bash
# Creates .venv (once) and installs Tessera into it. Sourced by run.sh and test.sh so the
# two README commands install the same way. EXTRAS selects optional dependency groups.
# pip shows its progress: a first install downloads about 5.8 GB with CUDA torch (about 1 GB with
# the CPU-only TORCH_SPEC in the README) and takes minutes, which should not look like a hang.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TESSERA_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "tessera: creating $VENV" >&2
    "$PY" -m venv "$VENV"
fi
# torch and torchvision are pinned as a matching pair: spandrel imports torchvision, and a
# torchvision that does not match torch fails at import (see README, "Other CUDA versions").
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
STAMP="$VENV/.tessera-installed-${EXTRAS:-base}"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    echo "tessera: installing into $VENV ($TORCH_SPEC${EXTRAS:+, extras: $EXTRAS}); a first install downloads" \
         "about 5.8 GB with CUDA torch (1 GB CPU-only) and takes several minutes" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install --progress-bar on $TORCH_SPEC -e "$ROOT${EXTRAS:+[$EXTRAS]}"
    touch "$STAMP"
    echo "tessera: installed. The tessera command is $VENV/bin/tessera" \
         "(or run 'source $VENV/bin/activate' once, then just 'tessera')" >&2
fi
