"""Runs a command and records the peak memory of its whole process tree.

/usr/bin/time -v reports the largest single process; a multi-process program (distilabel runs
each step in its own worker process) uses the sum. This samples /proc every 100 ms, adds up the
proportional set size (Pss: shared pages split between the processes that map them, so forked
workers are not counted twice; VmRSS where smaps_rollup is unreadable) of the command and every
descendant, and writes the peak in KiB to OUT. The command's exit status is passed through.
Usage: treepeak.py OUT -- COMMAND [ARG ...]
"""

import os
import subprocess
import sys
import time


def children_map() -> dict:
    kids: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss(root: int) -> int:
    kids = children_map()
    total, stack = 0, list(kids.get(root, []))
    while stack:
        pid = stack.pop()
        total += rss_kib(pid)
        stack.extend(kids.get(pid, []))
    return total


def main() -> None:
    out, sep, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
    if sep != "--" or not cmd:
        sys.exit(__doc__)
    proc = subprocess.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, rss_kib(proc.pid) + tree_rss(proc.pid))
        time.sleep(0.1)
    with open(out, "w", encoding="utf-8") as f:
        f.write(f"{peak}\n")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
