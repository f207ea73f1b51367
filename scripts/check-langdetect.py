#!/usr/bin/env python3
"""Cross-check demorecon-checks against Python on every IFEval text in the shared data.

Writes, for each response (GPT-4 and more_responses/*, each also without its first line and
without asterisks, as the loose mode scores them) and each prompt, what Python says:
langdetect 1.0.9's language (seed 0; null when it raises), nltk's sent_tokenize and
word_tokenize (punkt_tab english). Then runs the ignored Rust test that compares.

Usage (in a venv with nltk==3.10.4 langdetect==1.0.9):
    python scripts/check-langdetect.py [SHARED_DATA_DIR]
The Punkt parameters are copied into a temporary NLTK_DATA folder (nltk refuses symlinks).
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "DEMORECON_SHARED_DATA", os.path.join(root, "..", "shared", "data"))
tmp = tempfile.mkdtemp()
nltk_dir = os.path.join(tmp, "nltk_data", "tokenizers", "punkt_tab")
os.makedirs(nltk_dir)
shutil.copytree(os.path.join(data, "punkt_tab", "english"), os.path.join(nltk_dir, "english"))
os.environ["NLTK_DATA"] = os.path.join(tmp, "nltk_data")

from langdetect import DetectorFactory, detect  # noqa: E402
from langdetect.lang_detect_exception import LangDetectException  # noqa: E402
from nltk.tokenize import sent_tokenize, word_tokenize  # noqa: E402

DetectorFactory.seed = 0
ifeval = os.path.join(data, "ifeval")
texts = []
files = [os.path.join(ifeval, "input_response_data_gpt4_20231107_145030.jsonl")]
files += sorted(glob.glob(os.path.join(ifeval, "more_responses", "*.jsonl")))
for f in files:
    for line in open(f, encoding="utf-8"):
        r = json.loads(line)["response"]
        texts += [r, "\n".join(r.split("\n")[1:]).strip(), r.replace("*", "")]
for line in open(os.path.join(ifeval, "input_data.jsonl"), encoding="utf-8"):
    texts.append(json.loads(line)["prompt"])

out = os.path.join(tmp, "oracle.jsonl")
with open(out, "w", encoding="utf-8") as o:
    for t in texts:
        try:
            lang = detect(t)
        except LangDetectException:
            lang = None
        o.write(json.dumps({"text": t, "lang": lang, "sentences": sent_tokenize(t),
                            "words": word_tokenize(t)}) + "\n")
print(f"{len(texts)} texts written to {out}", file=sys.stderr)
env = dict(os.environ, DEMORECON_PYTHON_ORACLE=out)
rc = subprocess.call(["cargo", "test", "-p", "demorecon-checks", "--test", "checks", "--",
                      "--ignored", "--nocapture", "python_oracle_parity"], cwd=root, env=env)
shutil.rmtree(tmp)
sys.exit(rc)
