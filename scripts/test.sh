#!/usr/bin/env bash
# The project's test command (README): the official OpenAI Python client against
# `demorecon serve`, then the whole Rust test suite. Run scripts/setup.sh once first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p demorecon --locked
scripts/check-openai-client.sh
cargo test --workspace --locked
