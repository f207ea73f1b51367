#!/usr/bin/env bash
# Drives `demorecon serve` with the official `openai` Python client, unchanged: models.list,
# a plain completion, a streamed one, and a json_schema response_format. Needs a venv with
# `openai` in $DEMORECON_VENV (scripts/test.sh makes one).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DEMORECON_VENV:-target/venv-openai}"
bin="${DEMORECON_BIN:-target/release/demorecon}"
tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin" --cache "$tmp/cache.sqlite" serve --port 0 --api-key sk-local-check 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 1 600); do
  url=$(grep -o 'http://[0-9.:]*/v1' "$tmp/serve.log" | head -n1 || true)
  [ -n "$url" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/serve.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "serve did not start" >&2; cat "$tmp/serve.log" >&2; exit 1; }

"$venv/bin/python" - "$url" <<'PY'
import json, sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key="sk-local-check")
passed = failed = 0

def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")

models = client.models.list()
name = models.data[0].id
check("models.list", len(models.data) == 1 and name, models)

r = client.chat.completions.create(model=name, temperature=0, max_tokens=40,
    messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}])
check("plain completion names Paris", "Paris" in (r.choices[0].message.content or ""), r)
check("usage reported", r.usage is not None and r.usage.completion_tokens > 0, r.usage)

chunks = list(client.chat.completions.create(model=name, temperature=0, max_tokens=40, stream=True,
    stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
check("streamed text equals plain text", text == r.choices[0].message.content, (text, r.choices[0].message.content))
check("stream ends with usage", chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0, chunks[-1])

schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
r = client.chat.completions.create(model=name, max_tokens=80,
    messages=[{"role": "user", "content": "Invent a person and give their name and age."}],
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
try:
    obj = json.loads(r.choices[0].message.content)
    ok = isinstance(obj, dict) and set(obj) == {"name", "age"} and isinstance(obj["name"], str) and isinstance(obj["age"], int)
except Exception as e:  # noqa: BLE001 - reported as a failure below
    ok, obj = False, e
check("json_schema response validates", ok, obj)

try:
    client.chat.completions.create(model="not-served", messages=[{"role": "user", "content": "x"}])
    check("unknown model is refused", False, "accepted")
except Exception as e:  # openai.NotFoundError
    check("unknown model is refused", getattr(e, "status_code", None) == 404, e)

print(f"openai-client: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
