#!/usr/bin/env bash
# Installs Tessera with its test dependencies (and redis-server for the scale-out tests),
# then runs the linter, the import-layer contracts and the type checker (both set in pyproject.toml)
# and the whole test suite. .ci/run calls this very script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="dev,redis" source "$ROOT/scripts/install.sh"
if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -qq redis-server >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq redis-server >/dev/null; }
fi
# The web gallery's browser tests drive Debian's headless Chromium (no browser download).
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; }; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$VENV/bin/ruff" check .
"$VENV/bin/lint-imports" --no-logo
"$VENV/bin/mypy"  # [tool.mypy] in pyproject.toml says what and how strictly
exec "$VENV/bin/python" -m pytest "$@"
