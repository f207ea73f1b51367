#!/usr/bin/env bash
# One line for benchmark output: the CPU model, core count and the vector extensions this
# machine has (of those that decide which kernels run), so figures from different machines
# are never compared by mistake.
set -euo pipefail
model=$(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2-) "
found=()
for f in sse4_2 avx avx2 fma f16c avx_vnni avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_int8 amx_bf16; do
  [[ "$flags" == *" $f "* ]] && found+=("$f")
done
echo "cpu: ${model:-unknown} ($(nproc) cores); vector extensions: ${found[*]:-none}"
