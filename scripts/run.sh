#!/usr/bin/env bash
# Installs Tessera and runs the bot, configured from .env (see .env.example).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${EXTRAS:-redis}" source "$ROOT/scripts/install.sh"
cd "$ROOT"
echo "tessera: starting the bot (Ctrl-C stops it); other commands: $VENV/bin/tessera --help" >&2
exec "$VENV/bin/python" -m bot "$@"
