"""Shared helpers of the export checks: where things are, the tokenizer, counting results.

Each check_*.py runs in its own venv (see venv.sh) and prints one `ok:` or `FAIL:` line per
check; the process exits non-zero when any check failed.
"""
import json
import sys
from pathlib import Path

FAILED = []


def ok(what):
    print(f"ok: {what}", flush=True)


def fail(what, why):
    FAILED.append(what)
    print(f"FAIL: {what}: {why}", flush=True)


def check(what, fn):
    """Runs fn(); an exception is a failed check (named), not a crash of the script."""
    try:
        detail = fn()
        ok(what + (f" ({detail})" if detail else ""))
    except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
        fail(what, f"{type(e).__name__}: {e}")


def finish():
    if FAILED:
        print(f"{len(FAILED)} check(s) failed", flush=True)
        sys.exit(1)


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def export_info(folder):
    return json.loads((Path(folder) / "export.json").read_text())


def hf_dir(gguf, cache):
    """A folder with the GGUF model's tokenizer and config in this venv's transformers, made
    once: LLaMA-Factory and axolotl load a tokenizer by folder, not from a GGUF file."""
    cache = Path(cache)
    if not (cache / "config.json").exists():
        from transformers import AutoConfig, AutoTokenizer

        gguf = Path(gguf)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok.save_pretrained(str(cache))
        AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(cache))
    return str(cache)
