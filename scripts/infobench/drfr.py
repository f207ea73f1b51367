#!/usr/bin/env python3
"""DRFR of an InFoBench judgements file, aggregated the way the reference does.

The reference (qinyiwei/InfoBench, evaluation.py, `bool_ratio`) walks every row's `eval`
list and counts each entry: truthy -> "true", anything else (False, None) -> "false";
DRFR = true / (true + false). So an unparseable judge reply (None) counts as a NO, and
questions left unasked after such a reply (the list is shorter than the questions) are
not in the denominator. The reference prints only the overall ratio; the paper also
reports DRFR per subset (Easy/Hard) and per constraint label, which this script computes
with the same counting (a question with several labels counts once in each of them).

This is an independent check for the Rust port's tests, not part of the product.

Usage: drfr.py JUDGEMENTS.jsonl   -> one JSON object on stdout with [num, den] per metric.
"""

import json
import sys


def main(path):
    counts = {}

    def add(key, value):
        num, den = counts.get(key, (0, 0))
        counts[key] = (num + (1 if value else 0), den + 1)

    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for row in rows:
        evals = row["eval"]
        labels = row["question_label"]
        subset = {"Easy_set": "drfr_easy", "Hard_set": "drfr_hard"}[row["subset"]]
        for i, value in enumerate(evals):
            add("drfr", value)
            add(subset, value)
            for label in labels[i]:
                add("drfr_label_" + label, value)
    out = {
        "rows": len(rows),
        "none": sum(1 for r in rows for v in r["eval"] if v is None),
        "metrics": {k: list(v) for k, v in sorted(counts.items())},
        "values": {k: v[0] / v[1] for k, v in sorted(counts.items())},
    }
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main(sys.argv[1])
