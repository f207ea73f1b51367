#!/usr/bin/env bash
# The DeMoRecon loop end to end with the `demorecon` binary, into one folder:
#
#   1. pipeline  `demorecon run` on the first N seeds: variants, responses, verdicts, datasets
#   2. train     six LoRA models from the same base, the same steps each:
#                {sft, dpo, sft+dpo} × {FGIV-A, FGIV-R}
#   3. eval      the base and every trained model on IFEval, FGIV-Eval (the run's held-out
#                variants), InFoBench and FollowBench, on fixed slices, the same for every model
#   4. report    one HTML page: each trained model against the base, with the pipeline's
#                funnel and the training curves
#
# Usage:
#   scripts/reproduce.sh [--preset tiny|small] [options] [-- GLOBAL_FLAGS...]
#
#   scripts/reproduce.sh --preset tiny                      # every stage on a few items
#   scripts/reproduce.sh --preset small --judge "gpt-4o-mini@https://api.openai.com/v1" \
#       -- --api-key-env OPENAI_API_KEY
#
# Options (paths relative to the current directory; defaults relative to the repository):
#   --preset tiny|small     the sizes below (default: small)
#   --seeds FILE            seed file, JSONL (default: examples/seeds.jsonl)
#   --out DIR               output folder (default: runs/reproduce-<preset>)
#   --ifeval FILE           IFEval's input_data.jsonl      (default: ../shared/data/ifeval/input_data.jsonl)
#   --infobench FILE        InFoBench's infobench.jsonl    (default: ../shared/data/infobench/infobench.jsonl)
#   --followbench DIR       FollowBench's six *_constraints.jsonl (default: ../shared/data/followbench)
#                           (the defaults are used only when they exist; otherwise the flag is required)
#   --bin PATH              the demorecon binary (default: $DEMORECON_BIN, else target/release/demorecon)
#   --cache FILE            the call cache (default: OUT/cache.sqlite, so OUT is self-contained)
#   --generator SPEC, --responder SPEC, --judge SPEC
#                           backends of the pipeline's and the evals' roles (global flags of the binary)
#   --target SPEC           evaluate the base model at SPEC instead of `embedded` (it should serve
#                           the training base's weights, e.g. llama.cpp's server on the same GGUF)
#   --offline               answer every call from the cache; fails on a miss (proves a rerun is free)
#   --threads N             CPU threads of the embedded model and of training (default: the binary's
#                           choice; DEMORECON_THREADS works too)
#   Overrides of the preset: --seeds-count N|all, --steps N, --response-max-tokens N, --samples K,
#                           --sample-temperature T, --eval-max-tokens N,
#                           --variant-kinds free|verifiable|both ('' omits the pipeline's
#                           --variant-kinds/--samples/--sample-temperature; env VARIANT_KINDS too)
#   -- FLAGS...             anything after `--` goes to every demorecon call as global flags
#                           (e.g. --api-key-env VAR, --max-concurrency N, --model-path FILE.gguf);
#                           env DEMORECON_FLAGS (whitespace-separated) does the same
#   -h, --help              this text
#
# Resumable: rerun the same command. The run folder resumes by itself, a finished training
# (OUT/train/X/model.gguf and the stamp OUT/train/X/reproduce.done) is never redone, every eval
# call is a cache hit, and the report is drawn again. `--offline` on a rerun proves it.
#
# Outputs in OUT: seeds.jsonl, run/ (the pipeline's run folder), train/<mode>-<a|r>/,
# eval/<benchmark>/<model>/ (model: base or a training's name), report.html, report.md, skipped.txt (what
# could not run and why, e.g. a training on an empty dataset), timings.tsv (stage and seconds of
# this invocation: pipeline, train, eval, report, total, then each step as stage/step),
# timings-history.tsv (every invocation's, after the time it started), machine.txt, logs/ (each
# command's output of the latest invocation), cache.sqlite, train/refcache.jsonl.
#
# User errors (unknown flag, missing file) print one line and exit 2; a failing command exits
# with its status after the end of its log.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,/^set -euo pipefail$/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "reproduce: error: $*" >&2; exit 2; }
abspath() { realpath -m -- "$1"; }
rows() { grep -c . "$1" 2>/dev/null || true; } # non-blank lines; 0 for an empty file

# ---------------------------------------------------------------------------------------------
# Presets: one block each. Every knob of a preset can be overridden by the flag named beside it.
# ---------------------------------------------------------------------------------------------
preset_tiny() {
  SEEDS_COUNT=3                  # --seeds-count: the first N seeds of --seeds
  RESPONSE_MAX_TOKENS=48         # --response-max-tokens: the pipeline's responses
  VARIANT_KINDS_DEFAULT=both     # --variant-kinds: free (the paper's), verifiable or both
  SAMPLES=2                      # --samples: draws per verifiable variant
  SAMPLE_TEMPERATURE=0.8         # --sample-temperature
  TRAIN_STEPS=1                  # --steps: optimiser steps of every training
  EVAL_MAX_TOKENS=48             # --eval-max-tokens: new tokens per answer of a model under test
  IFEVAL_LIMIT=4                 # the first N of IFEval's 541 prompts ("" = all)
  INFOBENCH_LIMIT=2              # the first N of InFoBench's 500 instructions
  FOLLOWBENCH_SLICE=(--categories situation --examples 1)   # 1 example group × 5 levels = 5 items
  FOLLOWBENCH_JUDGE_MAX_TOKENS=48
}
preset_small() {
  # Sized to finish in about two hours on a 2-core laptop CPU; a workstation can raise
  # --seeds-count, --eval-max-tokens and the slices.
  SEEDS_COUNT=24
  RESPONSE_MAX_TOKENS=128
  VARIANT_KINDS_DEFAULT=both
  SAMPLES=4
  SAMPLE_TEMPERATURE=0.8
  TRAIN_STEPS=40
  EVAL_MAX_TOKENS=64
  IFEVAL_LIMIT=""                # all 541
  INFOBENCH_LIMIT=20
  FOLLOWBENCH_SLICE=(--examples 1)                          # 6 categories × 1 group × 5 levels = 30 items
  FOLLOWBENCH_JUDGE_MAX_TOKENS=256
}
EVAL_CONCURRENCY=16              # calls in flight per eval
TRAIN_SEED=0

# ---------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------
preset=small seeds="" out="" ifeval="" infobench="" followbench="" cache="" target=""
bin=${DEMORECON_BIN:-}
threads=${DEMORECON_THREADS:-}
offline=0
roles=()
declare -A override=()
extra=()
# shellcheck disable=SC2206  # DEMORECON_FLAGS is split on whitespace on purpose
[[ -n ${DEMORECON_FLAGS:-} ]] && extra=(${DEMORECON_FLAGS})
# VARIANT_KINDS from the environment, even when set to "" (which omits the flags).
[[ -v VARIANT_KINDS ]] && override[variant-kinds]=$VARIANT_KINDS

while (($#)); do
  arg=$1
  shift
  value=""
  has_value=0
  if [[ $arg == --*=* ]]; then
    value=${arg#*=}
    arg=${arg%%=*}
    has_value=1
  fi
  case $arg in
    -h | --help) usage; exit 0 ;;
    --offline) offline=1; continue ;;
    --) extra+=("$@"); break ;;
    --preset | --seeds | --out | --ifeval | --infobench | --followbench | --bin | --cache | \
      --generator | --responder | --judge | --target | --threads | --seeds-count | --steps | \
      --response-max-tokens | --samples | --sample-temperature | --eval-max-tokens | --variant-kinds)
      if ((!has_value)); then
        (($#)) || die "$arg needs a value (see --help)"
        value=$1
        shift
      fi ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
  case $arg in
    --preset) preset=$value ;;
    --seeds) seeds=$value ;;
    --out) out=$value ;;
    --ifeval) ifeval=$value ;;
    --infobench) infobench=$value ;;
    --followbench) followbench=$value ;;
    --bin) bin=$value ;;
    --cache) cache=$value ;;
    --generator | --responder | --judge) roles+=("$arg" "$value") ;;
    --target) target=$value ;;
    --threads) threads=$value ;;
    *) override[${arg#--}]=$value ;;
  esac
done

case $preset in
  tiny) preset_tiny ;;
  small) preset_small ;;
  *) die "--preset must be tiny or small, not '$preset'" ;;
esac
VARIANT_KINDS=$VARIANT_KINDS_DEFAULT
number() { [[ $2 =~ ^[0-9]+$ && $2 -ge 1 ]] || die "--$1 must be a whole number ≥ 1, not '$2'"; }
decimal() { [[ $2 =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--$1 must be a number, not '$2'"; }
for key in "${!override[@]}"; do
  v=${override[$key]}
  case $key in
    seeds-count) [[ $v == all ]] || number "$key" "$v"; SEEDS_COUNT=$v ;;
    steps) number "$key" "$v"; TRAIN_STEPS=$v ;;
    response-max-tokens) number "$key" "$v"; RESPONSE_MAX_TOKENS=$v ;;
    samples) number "$key" "$v"; SAMPLES=$v ;;
    sample-temperature) decimal "$key" "$v"; SAMPLE_TEMPERATURE=$v ;;
    eval-max-tokens) number "$key" "$v"; EVAL_MAX_TOKENS=$v ;;
    variant-kinds)
      [[ -z $v || $v =~ ^(free|verifiable|both)$ ]] ||
        die "--variant-kinds must be free, verifiable, both or '' (VARIANT_KINDS), not '$v'"
      VARIANT_KINDS=$v ;;
  esac
done
[[ -z $threads ]] || number threads "$threads"

# Paths: given ones from the current directory, defaults from the repository; all absolute,
# so the commands recorded in OUT do not depend on where the script was started.
seeds=$(abspath "${seeds:-$root/examples/seeds.jsonl}")
out=$(abspath "${out:-$root/runs/reproduce-$preset}")
bin=$(abspath "${bin:-$root/target/release/demorecon}")
shared=$root/../shared/data
bench_path() { # flag given default kind → the path, or a one-line error naming the flag
  local flag=$1 given=$2 default=$3 kind=$4
  if [[ -n $given ]]; then
    given=$(abspath "$given")
    [[ $kind == dir && -d $given || $kind == file && -f $given ]] || die "$flag $given: no such ${kind/dir/directory}"
    echo "$given"
  elif [[ $kind == dir && -d $default || $kind == file && -f $default ]]; then
    abspath "$default"
  else
    die "$flag is required (no $default here)"
  fi
}
ifeval=$(bench_path --ifeval "$ifeval" "$shared/ifeval/input_data.jsonl" file)
infobench=$(bench_path --infobench "$infobench" "$shared/infobench/infobench.jsonl" file)
followbench=$(bench_path --followbench "$followbench" "$shared/followbench" dir)
[[ -f $seeds ]] || die "--seeds $seeds: no such file"
[[ -x $bin && ! -d $bin ]] || die "--bin $bin: not an executable (build it: cargo build --release, or pass --bin / DEMORECON_BIN)"
cache=$(abspath "${cache:-$out/cache.sqlite}")
if [[ -n $VARIANT_KINDS ]] && ! "$bin" run --help 2>/dev/null | grep -q -- '--variant-kinds'; then
  die "$bin has no 'run --variant-kinds'; use a newer binary or VARIANT_KINDS='' (or --variant-kinds '')"
fi

# Global flags of every call: the cache, roles, threads, offline, and the passthrough.
global=(--cache "$cache" "${roles[@]}")
[[ -z $threads ]] || global+=(--threads "$threads")
((!offline)) || global+=(--offline)
global+=("${extra[@]}")
train_threads=()
[[ -z $threads ]] || train_threads=(--threads "$threads")

# The first N seeds (non-blank lines) of --seeds: checked before anything is written.
[[ $(awk 'NF { print substr($1, 1, 1); exit }' "$seeds") == "{" ]] ||
  die "--seeds $seeds: not JSONL (one seed object a line), which --seeds-count needs"
available=$(rows "$seeds")
count=$SEEDS_COUNT
[[ $count == all ]] && count=$available
seeds_note=""
if ((available < count)); then
  seeds_note="$seeds has $available seeds, fewer than $count; using them all"
  count=$available
fi
wanted=$(awk -v n="$count" 'NF && ++k <= n' "$seeds")
if [[ -f $out/seeds.jsonl && $(cat "$out/seeds.jsonl") != "$wanted" ]]; then
  die "$out was started with other seeds (--seeds/--seeds-count); use another --out"
fi

run=$out/run
mkdir -p "$out/logs" "$out/train" "$out/eval"
: >"$out/skipped.txt"
skip_note() { printf '%s\t%s\n' "$1" "$2" >>"$out/skipped.txt"; echo "  skipped $1: $2"; }

# ---------------------------------------------------------------------------------------------
# Steps and timings
# ---------------------------------------------------------------------------------------------
timings=()
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# step NAME CMD...: runs CMD with its output in OUT/logs/NAME.log, prints one line with the
# wall time, records it; on failure shows the end of the log on stderr and returns the
# command's status.
step() {
  local name=$1 log start status=0
  shift
  log="$out/logs/${name//\//_}.log"
  start=$(now)
  printf '  %-28s ' "$name"
  "$@" >"$log" 2>&1 || status=$?
  local took
  took=$(secs "$start" "$(now)")
  timings+=("$name	$took")
  if ((status)); then
    echo "failed after ${took} s (status $status)"
    { echo "reproduce: $name failed (status $status); the end of $log:"; tail -n 30 "$log" | sed 's/^/    /'; } >&2
    return "$status"
  fi
  echo "${took} s"
}
stage_start=""
begin_stage() { stage_start=$(now); echo "== $1"; }
end_stage() { timings+=("$1	$(secs "$stage_start" "$(now)")"); }


total_start=$(now)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
{
  echo "machine: $(uname -srm); $(bash "$root/scripts/cpu-info.sh")"
  echo "binary: $bin ($("$bin" --version 2>/dev/null || echo 'version unknown'))"
  echo "preset: $preset; threads: ${threads:-chosen by the binary}; started $started"
} | tee "$out/machine.txt"
echo "out: $out"

# ---------------------------------------------------------------------------------------------
# 1. Pipeline
# ---------------------------------------------------------------------------------------------
begin_stage pipeline
[[ -z $seeds_note ]] || echo "  note: $seeds_note"
if [[ ! -f $out/seeds.jsonl ]]; then
  printf '%s\n' "$wanted" >"$out/seeds.jsonl.tmp"
  mv "$out/seeds.jsonl.tmp" "$out/seeds.jsonl"
fi
# The seed's response is regenerated by the same responder (a seed file's own answer, e.g.
# WizardLM's gpt-3.5 one, would make the hard negative another model's text): chosen and
# rejected then differ by the requirement, not by who wrote them.
pipeline_args=(run "$out/seeds.jsonl" -o "$run" --response-max-tokens "$RESPONSE_MAX_TOKENS"
  --regenerate-seed-responses)
if [[ -n $VARIANT_KINDS ]]; then
  pipeline_args+=(--variant-kinds "$VARIANT_KINDS" --samples "$SAMPLES" --sample-temperature "$SAMPLE_TEMPERATURE")
fi
step pipeline/run "$bin" "${global[@]}" "${pipeline_args[@]}"
# The closing table's counts and files, as the run printed them.
grep -E '^ +(seeds in|decomposed|variants valid|pairs valid|FGIV-Eval seeds|datasets/)' "$out/logs/pipeline_run.log" |
  awk '!seen[$0]++ { sub(/^ */, "    "); print }' || true
end_stage pipeline

# ---------------------------------------------------------------------------------------------
# 2. Training: the same base, steps and seed for every model
# ---------------------------------------------------------------------------------------------
begin_stage train
trained=()
for fgiv in a r; do
  for mode in sft dpo sft+dpo; do
    name=$mode-$fgiv
    dir=$out/train/$name
    kind=dpo
    [[ $mode == sft ]] && kind=sft
    data=$run/datasets/${kind}_fgiv_$fgiv.jsonl
    # --epochs = --max-steps: every epoch has at least one step, so each model takes exactly
    # TRAIN_STEPS steps whatever its data size.
    settings=(--fgiv "$fgiv" --mode "$mode" --max-steps "$TRAIN_STEPS" --epochs "$TRAIN_STEPS" --seed "$TRAIN_SEED")
    stamp=${settings[*]}
    if [[ -f $dir/model.gguf && -f $dir/reproduce.done ]]; then
      [[ $(cat "$dir/reproduce.done") == "$stamp" ]] ||
        die "$dir was trained with other settings ($(cat "$dir/reproduce.done")); use another --out or remove it"
      printf '  %-28s done earlier\n' "train/$name"
      trained+=("$name")
      continue
    fi
    if [[ -f $data && $(rows "$data") == 0 ]]; then
      skip_note "train/$name" "no rows in ${data#"$out"/}"
      continue
    fi
    # --resume continues an interrupted training (and starts afresh when there is nothing).
    if step "train/$name" "$bin" "${global[@]}" train "$run" "${settings[@]}" --out "$dir" \
      --ref-cache "$out/train/refcache.jsonl" --resume "${train_threads[@]}"; then
      printf '%s' "$stamp" >"$dir/reproduce.done"
      trained+=("$name")
    else
      status=$?
      if grep -q 'no training examples' "$out/logs/train_$name.log"; then
        skip_note "train/$name" "no training examples in ${data#"$out"/}"
      else
        exit "$status"
      fi
    fi
  done
done
end_stage train

# ---------------------------------------------------------------------------------------------
# 3. Evaluation: the base and each trained model, the same slices and caps for all
# ---------------------------------------------------------------------------------------------
begin_stage eval
models=(base "${trained[@]}")
spec_of() { if [[ $1 == base ]]; then echo "${target:-embedded}"; else echo "embedded:$out/train/$1/model.gguf"; fi; }
benches=(ifeval fgiv infobench followbench)
if [[ $(rows "$run/datasets/fgiv_eval.jsonl") == 0 ]]; then
  skip_note eval/fgiv "the run held out no FGIV-Eval seed (no seed with 4 valid variants; more seeds help)"
  benches=(ifeval infobench followbench)
fi
for model in "${models[@]}"; do
  spec=$(spec_of "$model")
  for bench in "${benches[@]}"; do
    case $bench in
      ifeval) args=(ifeval --input "$ifeval" ${IFEVAL_LIMIT:+--limit "$IFEVAL_LIMIT"}) ;;
      fgiv) args=(fgiv "$run") ;;
      infobench) args=(infobench --input "$infobench" --limit "$INFOBENCH_LIMIT") ;;
      followbench) args=(followbench --data "$followbench" "${FOLLOWBENCH_SLICE[@]}"
        --judge-max-tokens "$FOLLOWBENCH_JUDGE_MAX_TOKENS") ;;
    esac
    step "eval/$bench/$model" "$bin" "${global[@]}" eval "${args[@]}" --model "$spec" \
      --max-tokens "$EVAL_MAX_TOKENS" --concurrency "$EVAL_CONCURRENCY" --quiet -o "$out/eval/$bench/$model"
  done
done
end_stage eval

# ---------------------------------------------------------------------------------------------
# 4. Report: the base first in every benchmark, so each trained model is compared with it
# ---------------------------------------------------------------------------------------------
begin_stage report
folders=()
for model in "${models[@]}"; do
  for bench in "${benches[@]}"; do
    folders+=("$out/eval/$bench/$model")
  done
done
folders+=("$run")
for name in "${trained[@]}"; do folders+=("$out/train/$name"); done
step report/html "$bin" "${global[@]}" report "${folders[@]}" --baseline-first --markdown "$out/report.md" \
  --title "DeMoRecon reproduction ($preset)" -o "$out/report.html"
end_stage report

timings+=("total	$(secs "$total_start" "$(now)")")
{
  printf 'stage\tseconds\n'
  for t in "${timings[@]}"; do if [[ $t != */* ]]; then echo "$t"; fi; done
  for t in "${timings[@]}"; do if [[ $t == */* ]]; then echo "$t"; fi; done
} >"$out/timings.tsv"
# Every invocation's figures, so a rerun (all cache hits) does not hide the first one's.
awk -v at="$started" 'NR > 1 { print at "\t" $0 }' "$out/timings.tsv" >>"$out/timings-history.tsv"
echo "== wall time"
awk -F'\t' 'NR > 1 && $1 !~ /\// { printf "  %-10s %8.1f s\n", $1, $2 }' "$out/timings.tsv"
if [[ -s $out/skipped.txt ]]; then echo "skipped (see $out/skipped.txt): $(cut -f1 "$out/skipped.txt" | paste -sd' ')"; fi
echo "report: $out/report.html"
