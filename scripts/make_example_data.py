#!/usr/bin/env python3
"""Generate peftrun's JSONL example: data/example/{train,eval}.jsonl, chat conversations.

Each line is {"messages": [...]}: an optional system message, then one or two user questions
about small arithmetic, counting and word facts, each answered by the assistant in a fixed
style ("7 plus 5 is 12."). The task is easy to learn, so a few hundred steps of LoRA on a tiny
random model show the held-out loss on assistant tokens falling. configs/jsonl_example.yaml
trains on it with the Qwen2-style test tokenizer (tests/tokenizer/fixtures/qwen2, chatml).

Deterministic (scripts/make_corpus.py's splitmix64 generator); standard library only.

    python3 scripts/make_example_data.py
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_corpus import Rng  # noqa: E402  (the same splitmix64 generator)

WORDS = ["river", "lantern", "harbour", "garden", "window", "kettle", "ladder", "forest",
         "market", "castle", "pencil", "basket", "meadow", "bridge", "candle", "island"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve"]
SYSTEMS = ["You answer in one short sentence.", "Be precise and brief.", ""]


def question(rng):
    kind = rng.below(4)
    if kind == 0:
        a, b = rng.below(20), rng.below(20)
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    if kind == 1:
        a = rng.below(20) + 10
        b = rng.below(a)
        return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."
    if kind == 2:
        word = rng.pick(WORDS)
        return (f"How many letters are in the word '{word}'?",
                f"The word '{word}' has {NUMBER_WORDS[len(word)]} letters.")
    word = rng.pick(WORDS)
    return f"Spell '{word}' backwards.", f"'{word}' backwards is '{word[::-1]}'."


def conversation(rng):
    messages = []
    system = rng.pick(SYSTEMS)
    if system:
        messages.append({"role": "system", "content": system})
    for _ in range(1 + rng.below(2)):
        q, a = question(rng)
        messages.append({"role": "user", "content": q})
        messages.append({"role": "assistant", "content": a})
    return {"messages": messages}


def write(path, seed, count, exclude=()):
    rng = Rng(seed)
    lines = []
    while len(lines) < count:
        line = json.dumps(conversation(rng), ensure_ascii=False)
        if line not in exclude:
            lines.append(line)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return set(lines)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "example")
    os.makedirs(out, exist_ok=True)
    train = write(os.path.join(out, "train.jsonl"), 20241201, 800)
    write(os.path.join(out, "eval.jsonl"), 97, 80, exclude=train)


if __name__ == "__main__":
    main()
