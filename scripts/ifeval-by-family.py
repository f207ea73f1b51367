#!/usr/bin/env python3
"""IFEval instruction-level strict accuracy of each eval folder, split into the instruction types
that verifiable variants train on and the seven they never use (held-out types).

Usage: scripts/ifeval-by-family.py OUT/eval/ifeval/*   (folders with items.jsonl)
Prints a Markdown table: model, seen types (passed/total, %), held-out types (passed/total, %).
"""
import json
import sys
from pathlib import Path

# IFEval's types that demorecon's verifiable variants never draw (crates/pipeline/src/verifiable.rs).
HELD_OUT = {
    "keywords:frequency",
    "keywords:letter_frequency",
    "length_constraints:nth_paragraph_first_word",
    "detectable_format:constrained_response",
    "combination:two_responses",
    "combination:repeat_prompt",
    "change_case:capital_word_frequency",
}

print("| model | seen types, strict | held-out types, strict |")
print("|---|---|---|")
for folder in map(Path, sys.argv[1:]):
    counts = {True: [0, 0], False: [0, 0]}
    with open(folder / "items.jsonl", encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            for inst, ok in zip(item["instruction_id_list"], item["verdict"]["strict"]):
                c = counts[inst in HELD_OUT]
                c[0] += bool(ok)
                c[1] += 1
    cell = lambda c: f"{c[0]}/{c[1]} ({100 * c[0] / max(c[1], 1):.1f} %)"
    print(f"| {folder.name} | {cell(counts[False])} | {cell(counts[True])} |")
