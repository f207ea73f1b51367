"""The peer for scripts/bench-judge.sh: the InFoBench and FollowBench judge protocols as their
reference evaluation scripts run them (one item after another, the official `openai` client),
against the same OpenAI-compatible endpoint our side uses. Written for this benchmark; it
follows the protocols in ../shared/JUDGE-BENCH-NOTES.md, not the reference code.

Usage: reference_loops.py infobench|followbench BASE_URL DATA RESPONSES
Prints one line: `items N calls C wall_s S`.
"""
import json, os, sys, time
from pathlib import Path

from openai import OpenAI

PREAMBLE = ("Answer each question about the generated text with YES or NO. YES only when the text "
            "entirely meets the condition; any inaccuracy means NO.\n\n")


def infobench(client, data, responses):
    items = {json.loads(l)["id"]: json.loads(l) for l in open(data) if l.strip()}
    outputs = {}
    for line in open(responses):
        if line.strip():
            row = json.loads(line)
            outputs[row["id"]] = row.get("output", row.get("response"))
    calls = 0
    for item_id, item in items.items():
        messages = []
        for i, question in enumerate(item["decomposed_questions"]):
            if i == 0:
                text = PREAMBLE
                if item["input"]:
                    text += f'Input:\n"{item["input"]}"\n\n'
                text += f'Generated Text:\n"{outputs[item_id]}"\n\nQuestion:\n{question}'
            else:
                text = question
            messages.append({"role": "user", "content": text})
            reply = client.chat.completions.create(model="judge", messages=messages, temperature=0,
                                                   max_tokens=64).choices[0].message.content
            calls += 1
            messages.append({"role": "assistant", "content": reply})
            low = reply.lower()
            if low.startswith("yes") or low.startswith("no"):
                continue
            if ("YES" in reply) != ("NO" in reply):
                continue
            break
    return len(items), calls


RULE_SOURCES = {"E2E", "WIKIEVENTS", "CONLL2003", "BBH_logical", "BBH_time", "self_made_space",
                "gsm_8k", "text_editing", "cnn_dailymail", "xsum", "samsum", "gigaword", "arxiv"}


def followbench(client, data, responses):
    calls = items = 0
    for kind in ["content", "situation", "style", "format", "example", "mixed"]:
        rows = [json.loads(l) for l in open(Path(data) / f"{kind}_constraints.jsonl") if l.strip()]
        by_level = {(r["example_id"], r["level"]): r for r in rows}
        answers = {}
        for line in open(Path(responses) / f"{kind}_constraint.jsonl"):
            if line.strip():
                r = json.loads(line)
                text = r.get("choices", [{}])[0].get("message", {}).get("content") if "choices" in r else r.get("response")
                answers[r.get("prompt_new", r.get("prompt"))] = text
        for r in rows:
            if r["level"] == 0:
                continue
            items += 1
            rule = kind == "example" or r["source"] in RULE_SOURCES or (
                kind == "format" and r["example_id"] in (22, 30))
            if rule:
                continue
            path = "\n".join(f"Instruction {l}: {by_level[(r['example_id'], l)]['instruction']}"
                             for l in range(0, r["level"] + 1) if (r["example_id"], l) in by_level)
            prompt = (f"{path}\n\nAnswer:\n{answers[r['instruction']]}\n\nFor each of the "
                      f"{r['level']} added constraints, say whether the answer meets it; end with a "
                      "Python list of YES/NO.")
            client.chat.completions.create(model="judge", messages=[{"role": "user", "content": prompt}],
                                           temperature=0, max_tokens=1024)
            calls += 1
    return items, calls


def main():
    which, base_url, data, responses = sys.argv[1:5]
    client = OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    start = time.perf_counter()
    items, calls = (infobench if which == "infobench" else followbench)(client, data, responses)
    print(f"items {items} calls {calls} wall_s {time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
