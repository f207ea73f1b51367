"""The peer side of scripts/bench-pipeline.sh: a three-step distilabel generation pipeline
(decompose -> vary -> respond, three chained TextGeneration tasks on one OpenAILLM) over the
same seed file and against the same instant endpoint as `demorecon run`.

Usage: distilabel_pipeline.py SEEDS.jsonl BASE_URL OUT_DIR [--batch-size N]

Every step gets `input_batch_size` = N (default 64): distilabel sends one batch of a step's
rows to the model concurrently (asyncio.gather over the batch), so N is its concurrency per
step, comparable with `--max-concurrency 64` on our side; the three steps run in their own
processes, so up to 3N requests are in flight. Its own cache is off (use_cache=False) so every
repetition does the full work. Prints one JSON line: rows written, wall seconds inside Python.
"""

import argparse
import json
import logging
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seeds")
    ap.add_argument("base_url")
    ap.add_argument("out_dir")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")
    logging.getLogger("distilabel").setLevel(logging.WARNING)

    from distilabel.models.llms import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    with open(args.seeds, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]

    def llm() -> OpenAILLM:
        return OpenAILLM(
            model="bench",
            base_url=args.base_url,
            api_key="x",
            max_retries=2,
            timeout=60,
            generation_kwargs={"max_new_tokens": 256, "temperature": 0.0},
        )

    bs = args.batch_size
    start = time.perf_counter()
    with Pipeline(name="bench-demorecon-peer", cache_dir=os.path.join(args.out_dir, "cache")) as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=bs)
        decompose = TextGeneration(
            name="decompose",
            llm=llm(),
            template=(
                "Split this instruction into the facts it states and the separate requirements "
                "it makes, one per line.\n\nInstruction: {{ instruction }}"
            ),
            columns=["instruction"],
            output_mappings={"generation": "decomposition", "model_name": "decompose_model"},
            input_batch_size=bs,
        )
        vary = TextGeneration(
            name="vary",
            llm=llm(),
            template=(
                "Instruction: {{ instruction }}\n\nIts requirements:\n{{ decomposition }}\n\n"
                "Change exactly one requirement into a different but compatible one and rewrite "
                "the instruction with that single change and nothing else."
            ),
            columns=["instruction", "decomposition"],
            output_mappings={"generation": "variant", "model_name": "vary_model"},
            input_batch_size=bs,
        )
        respond = TextGeneration(
            name="respond",
            llm=llm(),
            input_mappings={"instruction": "variant"},
            output_mappings={"generation": "response", "model_name": "respond_model"},
            input_batch_size=bs,
        )
        load >> decompose >> vary >> respond

    distiset = pipeline.run(use_cache=False)
    data = distiset["default"]["train"]
    wall = time.perf_counter() - start
    n = len(data)
    missing = sum(1 for r in data["response"] if r is None)
    data.to_json(os.path.join(args.out_dir, "rows.jsonl"))
    print(json.dumps({"rows": n, "missing_responses": missing, "python_wall_s": round(wall, 3)}))
    if n != len(rows):
        sys.exit(f"distilabel wrote {n} rows for {len(rows)} seeds")


if __name__ == "__main__":
    main()
