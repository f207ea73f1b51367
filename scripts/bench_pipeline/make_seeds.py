"""Writes N synthetic, deterministic seed instructions as JSONL ({"id", "instruction"}).

Each seed combines a task, a topic, an audience, a tone, a length limit, a format and a keyword
from small fixed lists, chosen from the seed number, so every run of the benchmark sees the same
file, and no two seeds (up to about a million) are equal. Usage: make_seeds.py N OUT.jsonl
"""

import json
import sys

TASKS = [
    "Write an email to {who} about {topic}",
    "Write a product description of {topic} for {who}",
    "Write a short poem about {topic} for {who}",
    "Explain {topic} to {who}",
    "Write a travel plan that includes {topic} for {who}",
    "Summarize the main facts about {topic} for {who}",
    "Write a job advertisement that mentions {topic}, aimed at {who}",
    "Write a text message about {topic} to {who}",
]
TOPICS = [
    "a delayed train to Porto", "a bamboo cutting board", "the first frost of the year",
    "how compound interest works", "a weekend in Kyoto", "the quarterly sales figures",
    "a new bike-sharing scheme", "a vegetarian lasagne recipe", "the history of the telescope",
    "a broken office printer", "solar panels for small roofs", "a school science fair",
]
WHO = [
    "a busy manager", "a ten-year-old child", "a retired teacher", "new employees",
    "first-time customers", "a university student", "a neighbour", "hospital nurses",
]
TONES = ["formal", "friendly", "enthusiastic", "calm", "humorous", "persuasive"]
LIMITS = [
    "Use at most {n} words.", "Write exactly {k} paragraphs.", "Use fewer than {n} words.",
    "Write exactly {k} sentences.", "Keep it under {n} words.",
]
FORMATS = [
    "Format the answer as a bullet list.", "Give it a title wrapped in double angular brackets.",
    "Write everything in lowercase letters.", "Do not use any commas.",
    "Return the answer as a JSON object with the keys \"title\" and \"body\".",
    "End with the exact phrase \"Any other questions?\"",
]
KEYWORDS = ["river", "budget", "lantern", "deadline", "harvest", "compass", "window", "signal"]


def seed(i: int) -> dict:
    # A bijective scramble of i, read as mixed-radix digits over the lists: every seed number
    # below the lists' product gets its own combination, so no two instructions are equal
    # (a cache would otherwise answer repeats for free) and neighbours differ in every part.
    lists = [TASKS, TOPICS, WHO, TONES, LIMITS, FORMATS, KEYWORDS]
    space = 1
    for values in lists:
        space *= len(values)
    j = (i * 1_000_003) % space
    digits = []
    for values in lists:
        j, d = divmod(j, len(values))
        digits.append(d)
    task, topic, who, tone, limit, fmt, keyword = (v[d] for v, d in zip(lists, digits))
    text = (
        f"{task.format(who=who, topic=topic)}. Use a {tone} tone. "
        f"{limit.format(n=40 + (i * 13) % 110, k=2 + i % 4)} {fmt} Include the keyword \"{keyword}\"."
    )
    return {"id": f"bench-{i:05d}", "instruction": text}


def main() -> None:
    n, out = int(sys.argv[1]), sys.argv[2]
    if n > 1_105_920:
        sys.exit("make_seeds.py: at most 1,105,920 distinct seeds")
    with open(out, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(seed(i)) + "\n")


if __name__ == "__main__":
    main()
