"""Prints the side-by-side table of scripts/bench-pipeline.sh from its results TSV.

Each row of the TSV is one repetition of one tool: tool, rep, seeds, wall seconds, calls (the
endpoint's request-count delta), max RSS of the largest process in KiB (GNU time), peak summed
Pss of the whole process tree in KiB, exit status. Medians are over the successful
repetitions. Usage: summarize.py RESULTS.tsv LABEL_OURS LABEL_PEER
"""

import csv
import statistics
import sys


def main() -> None:
    path, label_ours, label_peer = sys.argv[1:4]
    rows: dict = {}
    failed: dict = {}
    with open(path, encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if r["exit"] != "0":
                failed[r["tool"]] = failed.get(r["tool"], 0) + 1
                continue
            rows.setdefault(r["tool"], []).append(r)

    def med(tool: str, fn) -> float | None:
        values = [fn(r) for r in rows.get(tool, [])]
        return statistics.median(values) if values else None

    metrics = [
        ("seeds", lambda r: float(r["seeds"]), "{:.0f}"),
        ("wall s", lambda r: float(r["wall_s"]), "{:.2f}"),
        ("seeds/s", lambda r: float(r["seeds"]) / float(r["wall_s"]), "{:.1f}"),
        ("calls", lambda r: float(r["calls"]), "{:.0f}"),
        ("calls/seed", lambda r: float(r["calls"]) / float(r["seeds"]), "{:.2f}"),
        ("calls/s", lambda r: float(r["calls"]) / float(r["wall_s"]), "{:.0f}"),
        ("peak RSS MB, largest process", lambda r: float(r["maxrss_kib"]) / 1024, "{:.0f}"),
        ("peak PSS MB, whole process tree", lambda r: float(r["tree_kib"]) / 1024, "{:.0f}"),
    ]
    tools = ["ours", "peer"]
    labels = {"ours": label_ours, "peer": label_peer}
    width = max(len(m[0]) for m in metrics) + 2
    print()
    print(
        f"{'median of ' + str(max((len(rows.get(t, [])) for t in tools), default=0)) + ' runs':<{width}}"
        + "".join(f"{labels[t]:>22}" for t in tools)
        + f"{'ours / peer':>14}"
    )
    for name, fn, fmt in metrics:
        cells = []
        values = {t: med(t, fn) for t in tools}
        for t in tools:
            v = values[t]
            cells.append(f"{fmt.format(v) if v is not None else '-':>22}")
        ratio = ""
        if name in ("seeds/s", "calls/s") and values["ours"] and values["peer"]:
            ratio = f"{values['ours'] / values['peer']:.1f}x"
        print(f"{name:<{width}}" + "".join(cells) + f"{ratio:>14}")
    for tool, n in failed.items():
        print(f"note: {n} failed repetition(s) of {labels.get(tool, tool)} left out (see the logs)")


if __name__ == "__main__":
    main()
