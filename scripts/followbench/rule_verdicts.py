#!/usr/bin/env python3
"""Expected FollowBench rule verdicts, computed independently of the Rust port.

Re-implements the rule checks of FollowBench's reference evaluation (YJiangcm/FollowBench,
code/rule_based_evaluation.py) with the same Python operations the reference relies on
(`re`, `str.split(' ')`, `str.split()`, `string.punctuation`, `ast.literal_eval`,
`str.islower()`), joins responses to items by exact instruction text, and prints one
`{"id": "{constraint_type}/{example_id}/L{level}", "verdict": bool}` line per rule-checked
item (levels 1-5), in data order.

Usage:
  scripts/followbench/rule_verdicts.py DATA_DIR RESPONSES_DIR > expected_rule_verdicts.jsonl
e.g. DATA_DIR=../shared/data/followbench
     RESPONSES_DIR=../shared/data/followbench/responses_mistral-7b-instruct-v0.3

Only derived verdicts are printed (ids and booleans), never benchmark text.
"""

import ast
import json
import os
import re
import string
import sys

CATEGORIES = ["content", "situation", "style", "format", "example", "mixed"]
RULE_SOURCES = {
    "E2E", "WIKIEVENTS", "CONLL2003",
    "text_editing", "cnn_dailymail", "xsum", "samsum", "gigaword", "arxiv",
    "BBH_logical", "BBH_time", "self_made_space", "gsm_8k",
}


# ---- helpers, with the reference's semantics ---------------------------------------------

def has_word(text, word):
    return re.search(r"\b" + re.escape(word) + r"\b", text) is not None


def sentence_pieces(text):
    return [p for p in re.split(r"[.!?]", text) if p]


def n_sentences(text):
    return len(sentence_pieces(text))


def all_sentences_shorter(text, n):
    return all(len(p.split()) < n for p in sentence_pieces(text))


def all_sentences_longer(text, n):
    return all(len(p.split()) > n for p in sentence_pieces(text))


def nth_sentence_has_word(text, n, word):
    pieces = sentence_pieces(text)
    return len(pieces) >= n and has_word(pieces[n - 1], word)


def present_perfect(text):
    return re.search(r"\b(has|have)\s+\w+", text) is not None


def nth_sentence_present_perfect(text, n):
    pieces = sentence_pieces(text)
    return len(pieces) >= n and present_perfect(pieces[n - 1])


def present_continuous(text):
    return re.search(r"\b(am|is|are)\s+\w+ing\b", text) is not None


def no_procrast(text):
    return re.search(r"procrast", text, re.IGNORECASE) is None


def space_words(text):
    return len(text.split(" "))


def n_punct(text):
    return sum(1 for c in text if c in string.punctuation)


def numbered_paragraphs(text):
    for p in text.split("\n\n"):
        p = p.lstrip()
        if p and not re.match(r"\d+\.", p):
            return False
    return True


# ---- per-source rules ---------------------------------------------------------------------

def upto(checks, level):
    """Levels 1-4 need the first `level` checks; any other level (the reference's `else`) all."""
    return all(c() for c in (checks[:level] if 1 <= level <= 4 else checks))


def rule_cnn_dailymail(g, t, level):
    checks = [
        lambda: n_sentences(g) == 3,
        lambda: all_sentences_shorter(g, 15),
        lambda: nth_sentence_has_word(g, 1, "Potter")
        and nth_sentence_has_word(g, 2, "actor")
        and nth_sentence_has_word(g, 3, "films"),
        lambda: not nth_sentence_has_word(g, 2, "lavish"),
        lambda: nth_sentence_present_perfect(g, 3),
    ]
    return upto(checks, level)


def rule_xsum(g, t, level):
    checks = [
        lambda: n_sentences(g) == 1,
        lambda: space_words(g) < 20,
        lambda: not has_word(g, "Newton Stewart"),
        lambda: present_continuous(g),
        lambda: has_word(g, "operation"),
    ]
    return upto(checks, level)


def rule_samsum(g, t, level):
    checks = [
        lambda: n_sentences(g) == 1,
        lambda: space_words(g) < 15,
        lambda: has_word(g, "stuff"),
        lambda: no_procrast(g),
        lambda: n_punct(g) == 1,
    ]
    return upto(checks, level)


def rule_gigaword(g, t, level):
    checks = [
        lambda: space_words(g) == 8,
        lambda: not any(c in string.punctuation for c in g),
        lambda: g.islower(),
        lambda: not has_word(g, "bus"),
        lambda: has_word(g, "in"),
    ]
    return upto(checks, level)


def rule_arxiv(g, t, level):
    checks = [
        lambda: n_sentences(g) == 1,
        lambda: space_words(g) <= 20,
        lambda: g[:2] == "We",
        lambda: has_word(g, "activations"),
        lambda: not has_word(g, "transformer"),
    ]
    return upto(checks, level)


def rule_last_match(pattern):
    def rule(g, t, level):
        found = re.findall(pattern, g)
        return bool(found) and found[-1] == t
    return rule


SOURCE_RULES = {
    "E2E": lambda g, t, level: g == t,
    "WIKIEVENTS": lambda g, t, level: all(line in t.split("\n") for line in g.split("\n")),
    "CONLL2003": lambda g, t, level: g in ast.literal_eval(t),
    "text_editing": lambda g, t, level: g == t,
    "cnn_dailymail": rule_cnn_dailymail,
    "xsum": rule_xsum,
    "samsum": rule_samsum,
    "gigaword": rule_gigaword,
    "arxiv": rule_arxiv,
    "BBH_logical": rule_last_match(r"\([A-Z]\)"),
    "BBH_time": rule_last_match(r"\d{2}/\d{2}/\d{4}"),
    "self_made_space": lambda g, t, level: t in g,
    "gsm_8k": rule_last_match(r"\$\d+"),
}


def rule_format_22(g, level):
    paras = g.split("\n\n")
    want = 4 if level >= 5 else 3
    if len(paras) != want:
        return False
    if level >= 2 and not all(n_sentences(paras[i]) < 3 for i in range(3)):
        return False
    if level >= 3 and not all_sentences_longer(g, 20):
        return False
    if level >= 4 and not numbered_paragraphs(g):
        return False
    if level >= 5 and g[-len("Those are suggestions"):] != "Those are suggestions":
        return False
    return True


def rule_format_30(g, level):
    sentences = re.split(r"(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s", g)
    numbered = [s for s in sentences if any(f"{k}." in s for k in range(1, 6))]
    checks = [
        "**" in g,
        len(re.findall(r"\*\*[\d].+?:", g)) == 5,
        all(len(s.split(".")) < 3 for s in numbered),
        all(10 <= len(s.split()) <= 15 for s in sentences),
        all(not w.endswith("-ly") for s in sentences for w in s.split()),
    ]
    return all(checks[:level])


def rule_example(g, target):
    template = target.replace("{instruction}\n", "")
    pattern = template.replace("{{", "{").replace("}}", "}").replace("{answer}", ".*")
    pattern = re.escape(pattern).replace("\\.\\*", ".*")
    return re.fullmatch(pattern, g) is not None


def verdict(category, item, g):
    if category == "example":
        return rule_example(g, item["target"])
    if item["source"] in RULE_SOURCES:
        return SOURCE_RULES[item["source"]](g, item["target"], item["level"])
    if category == "format" and item["example_id"] == 22:
        return rule_format_22(g, item["level"])
    if category == "format" and item["example_id"] == 30:
        return rule_format_30(g, item["level"])
    return None


def main():
    data_dir, resp_dir = sys.argv[1], sys.argv[2]
    for cat in CATEGORIES:
        with open(os.path.join(data_dir, f"{cat}_constraints.jsonl"), encoding="utf-8") as f:
            items = [json.loads(l) for l in f if l.strip()]
        responses = {}
        with open(os.path.join(resp_dir, f"{cat}_constraint.jsonl"), encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                prompt = row.get("prompt_new", row.get("prompt"))
                responses.setdefault(prompt, row["choices"][0]["message"]["content"])
        for item in items:
            if item["level"] < 1:
                continue
            g = responses[item["instruction"]]
            v = verdict(cat, item, g)
            if v is None:
                continue
            rid = f"{cat}/{item['example_id']}/L{item['level']}"
            print(json.dumps({"id": rid, "verdict": bool(v)}))


if __name__ == "__main__":
    main()
