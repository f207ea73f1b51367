#!/usr/bin/env bash
# The Debian packages the build and the tests use, installed when missing (only as root with
# apt; elsewhere it says what to install). One list for every script:
#   build    cmake, g++, libclang-dev — llama.cpp, the embedded model's engine, is compiled by
#            the build (CMake) and bound through bindgen (libclang);
#            libopenblas-dev — the training GEMMs link the system OpenBLAS when it is there
#            (crates/train/build.rs; without it they run on the gemm crate, slower);
#   browser  chromium — the report's browser test (it says it skipped without it).
# Usage: scripts/system-deps.sh [build] [browser]   (default: build)
set -euo pipefail
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(build)
missing=()
for group in "${want[@]}"; do
  case "$group" in
    build)
      command -v cmake >/dev/null || missing+=(cmake)
      command -v c++ >/dev/null || missing+=(g++)
      ldconfig -p 2>/dev/null | grep -q 'libclang' || missing+=(libclang-dev)
      ldconfig -p 2>/dev/null | grep -q 'libopenblas\.so ' || missing+=(libopenblas-dev)
      ;;
    browser) command -v chromium >/dev/null || missing+=(chromium) ;;
    *) echo "system-deps: unknown group $group (build, browser)" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "system-deps: installing ${missing[*]} (apt-get)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
    echo "system-deps: could not install ${missing[*]}" >&2
else
  echo "system-deps: please install ${missing[*]} (Debian/Ubuntu package names)" >&2
fi
