#!/usr/bin/env bash
# Builds (once) the Python environments that scripts/check-export.sh checks an export with,
# under target/venv-export: `base` holds torch, installed once; `trl`, `llamafactory` and
# `axolotl` are small venvs of their own (their pins conflict: transformers 5.24 / 5.6 / 5.16)
# that see base's site-packages through a .pth file, so torch and its CUDA wheels are on disk
# once (a NAME-nodeps.txt beside NAME.txt is installed without dependencies). Every version is pinned in the *.txt files beside this script; everything comes from
# PyPI. A venv is rebuilt only when its requirements file changed (a stamp holds its hash).
# Usage: venv.sh [trl] [llamafactory] [axolotl]   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=target/venv-export
HERE=scripts/check_export
PY=${PYTHON:-python3}
mkdir -p "$ROOT"

stamp() { # a hash of the requirement files of venv $1 (the -nodeps one may not exist)
    {
        cat "$HERE/$1.txt" "$HERE/constraints.txt"
        [ ! -f "$HERE/$1-nodeps.txt" ] || cat "$HERE/$1-nodeps.txt"
    } | sha256sum | cut -c1-16
}

fresh() { # name -> 0 when the venv is built from the current requirements
    [ -x "$ROOT/$1/bin/python" ] && [ "$(cat "$ROOT/$1/.stamp" 2>/dev/null)" = "$(stamp "$1")" ]
}

build() { # name [base site-packages to layer on]
    local name=$1 layer=${2:-}
    if fresh "$name"; then return 0; fi
    local start=$SECONDS
    rm -rf "$ROOT/$name"
    "$PY" -m venv "$ROOT/$name"
    if [ -n "$layer" ]; then
        local site
        site=$("$ROOT/$name/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        echo "$layer" > "$site/zz-venv-export-base.pth"
    fi
    "$ROOT/$name/bin/pip" install -q --disable-pip-version-check --upgrade pip
    "$ROOT/$name/bin/pip" install -q --disable-pip-version-check \
        -c "$HERE/constraints.txt" -r "$HERE/$name.txt"
    if [ -f "$HERE/$name-nodeps.txt" ]; then
        "$ROOT/$name/bin/pip" install -q --disable-pip-version-check --no-deps -r "$HERE/$name-nodeps.txt"
    fi
    stamp "$name" > "$ROOT/$name/.stamp"
    echo "venv $name: built in $((SECONDS - start)) s" >&2
}

build base
BASE_SITE=$(cd "$ROOT/base" && bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
for name in "${@:-trl llamafactory axolotl}"; do
    for n in $name; do build "$n" "$BASE_SITE"; done
done
