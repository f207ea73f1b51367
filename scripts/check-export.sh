#!/usr/bin/env bash
# Checks a `demorecon export --to all` folder with the trainers' own code, CPU only:
#   - datasets: every Parquet file has the rows of its JSONL twin; load_dataset(folder) and
#     every config of the card load;
#   - TRL: the configs parse with TrlParser; DPOTrainer and KTOTrainer tokenise every DPO and
#     KTO row; one DPO+SFT optimiser step on SmolLM2-135M (the project's embedded model);
#   - OpenRLHF: its preprocess_data reads every DPO and SFT row; the launch scripts' flags exist;
#   - LLaMA-Factory: the configs pass get_train_args; every dataset of dataset_info.json loads
#     through get_dataset (converter + template + tokeniser) and keeps every row;
#   - axolotl: each config passes load_cfg (schema + validators); its DPO, KTO and SFT loaders
#     read every row.
# The Python environments are built once under target/venv-export (scripts/check_export/venv.sh,
# pinned versions from PyPI). Nothing is downloaded from the Hugging Face Hub: the tokenizer and
# model come from the embedded model's GGUF (`demorecon model path`, fetched if missing).
#
# Usage: scripts/check-export.sh --export DIR     check DIR/{trl,llama-factory,axolotl,openrlhf}
#        scripts/check-export.sh --run RUN        export RUN --to all first, then check it
# Options: --no-train-step (skip the TRL optimiser step).
set -euo pipefail
cd "$(dirname "$0")/.."

EXPORT="" RUN="" TRAIN_STEP=--train-step
while [ $# -gt 0 ]; do
    case "$1" in
        --export) EXPORT=$2; shift 2 ;;
        --run) RUN=$2; shift 2 ;;
        --no-train-step) TRAIN_STEP=""; shift ;;
        *) echo "usage: $0 --export DIR | --run RUN [--no-train-step]" >&2; exit 2 ;;
    esac
done
[ -n "$EXPORT$RUN" ] || { echo "usage: $0 --export DIR | --run RUN [--no-train-step]" >&2; exit 2; }

# No telemetry, no Hub: everything here is local.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1 HF_HUB_DISABLE_TELEMETRY=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore

start=$SECONDS
bash scripts/check_export/venv.sh
echo "environments ready in $((SECONDS - start)) s" >&2

BIN=${DEMORECON_BIN:-target/debug/demorecon}
[ -x "$BIN" ] || cargo build -q -p demorecon --bin demorecon
"$BIN" model fetch >/dev/null
GGUF=$("$BIN" model path)

WORK=target/export-check
rm -rf "$WORK/tmp"
mkdir -p "$WORK/tmp"
if [ -n "$RUN" ]; then
    EXPORT=$WORK/export
    rm -rf "$EXPORT"
    "$BIN" export "$RUN" --to all -o "$EXPORT"
fi
EXPORT=$(cd "$EXPORT" && pwd)

status=0
run_check() { # venv script [args...]
    local venv=$1 script=$2 t=$SECONDS
    shift 2
    echo "== $script" >&2
    if ! "target/venv-export/$venv/bin/python" "scripts/check_export/$script" \
        "$EXPORT" "$GGUF" "$WORK/tmp" "$@" 2> "$WORK/$venv.log" | grep -E '^(ok|FAIL|[0-9]+ check)'; then
        status=1
        echo "   (details: $WORK/$venv.log)" >&2
    fi
    echo "   $script: $((SECONDS - t)) s" >&2
}
checks_start=$SECONDS
run_check trl check_trl.py $TRAIN_STEP
run_check llamafactory check_llamafactory.py
run_check axolotl check_axolotl.py
echo "checks: $((SECONDS - checks_start)) s" >&2
if [ $status -ne 0 ]; then
    echo "check-export: FAILED" >&2
    exit 1
fi
echo "check-export: all checks passed"
