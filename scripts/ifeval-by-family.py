#!/usr/bin/env python3
"""IFEval instruction-level strict accuracy of each eval folder, split into the instruction types
that demorecon's verifiable variants train on and the seven they never use (held-out types),
with McNemar's exact test of each folder against the first (discordant instructions: first
only / this one only). Instructions of one prompt are not independent; read the p-values as
indicative.

Usage: scripts/ifeval-by-family.py BASE_FOLDER OTHER_FOLDER...   (IFEval eval folders)
Prints a Markdown table.
"""
import json
import math
import sys
from pathlib import Path

# IFEval's types that verifiable variants never draw (crates/pipeline/src/verifiable.rs).
HELD_OUT = {
    "keywords:frequency",
    "keywords:letter_frequency",
    "length_constraints:nth_paragraph_first_word",
    "detectable_format:constrained_response",
    "combination:two_responses",
    "combination:repeat_prompt",
    "change_case:capital_word_frequency",
}


def load(folder):
    """(item id, index) -> (held out?, passed strict?)"""
    out = {}
    with open(Path(folder) / "items.jsonl", encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            pairs = zip(item["instruction_id_list"], item["verdict"]["strict"])
            for i, (inst, ok) in enumerate(pairs):
                out[(item["id"], i)] = (inst in HELD_OUT, bool(ok))
    return out


def mcnemar(b, c):
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


if len(sys.argv) < 2:
    sys.exit(__doc__)
base = load(sys.argv[1])
print("| model | seen types, strict | vs first: first only / this only, p | held-out types, strict | vs first: first only / this only, p |")
print("|---|---|---|---|---|")
for folder in sys.argv[1:]:
    this = load(folder)
    cells = []
    for held in (False, True):
        keys = [k for k, (h, _) in this.items() if h == held]
        passed = sum(this[k][1] for k in keys)
        cells.append(f"{passed}/{len(keys)} ({100 * passed / max(len(keys), 1):.1f} %)")
        if folder == sys.argv[1]:
            cells.append("–")
            continue
        b = sum(1 for k in keys if base[k][1] and not this[k][1])
        c = sum(1 for k in keys if not base[k][1] and this[k][1])
        cells.append(f"{b} / {c}, {mcnemar(b, c):.3f}")
    print(f"| {Path(folder).name} | " + " | ".join(cells) + " |")
