#!/usr/bin/env python
"""Generate the demo SFT dataset (our own templated content, CC0) into sft_bridge_port/data/demo/.

Deterministic: the same seed writes byte-identical files. OpenAI ``messages`` rows: single-turn instructions
(arithmetic, unit conversion, capitals, string reversal), multi-turn chats mixing them, small talk, some with a
system prompt. Run: ``python scripts/make_demo_dataset.py [--out DIR] [--train N] [--valid N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Portugal", "Lisbon"),
    ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("India", "New Delhi"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Greece", "Athens"), ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Austria", "Vienna"),
]
UNITS = [("kilometres", "metres", 1000), ("metres", "centimetres", 100), ("kilograms", "grams", 1000),
         ("hours", "minutes", 60), ("minutes", "seconds", 60), ("litres", "millilitres", 1000)]
WORDS = ["planet", "garden", "bridge", "silver", "window", "rocket", "marble", "forest", "candle", "puzzle",
         "harbor", "violet", "thunder", "pebble", "lantern"]
SYSTEMS = ["You are a concise assistant.", "You are a helpful tutor. Answer briefly.",
           "Answer in one sentence."]
SMALL_TALK = [
    ("Hello!", "Hello! How can I help you today?"),
    ("How are you?", "I am doing well, thank you. What would you like to talk about?"),
    ("Thanks for the help.", "You are welcome. Happy to help any time."),
    ("What can you do?", "I can do arithmetic, convert units, name capitals and reverse words."),
    ("Good night!", "Good night, sleep well."),
]


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op = rng.choice(["+", "-", "*"])
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return f"What is {a} {op} {b}?", f"{a} {op} {b} = {value}."


def conversion(rng: random.Random) -> tuple[str, str]:
    big, small, factor = rng.choice(UNITS)
    n = rng.randint(2, 40)
    return f"How many {small} are in {n} {big}?", f"{n} {big} is {n * factor} {small}."


def capital(rng: random.Random) -> tuple[str, str]:
    country, city = rng.choice(CAPITALS)
    return f"What is the capital of {country}?", f"The capital of {country} is {city}."


def reverse(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"Reverse the word '{word}'.", f"'{word}' reversed is '{word[::-1]}'."


def small_talk(rng: random.Random) -> tuple[str, str]:
    return rng.choice(SMALL_TALK)


TASKS = [arithmetic, conversion, capital, reverse, small_talk]


def make_row(rng: random.Random) -> dict:
    """One conversation of 1-3 exchanges, with a system prompt a third of the time."""
    messages = []
    if rng.random() < 1 / 3:
        messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
    for _ in range(rng.choice([1, 1, 2, 3])):
        question, answer = rng.choice(TASKS)(rng)
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sft_bridge_port/data/demo"))
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--valid", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "training.jsonl", [make_row(rng) for _ in range(args.train)])
    write(out / "validation.jsonl", [make_row(rng) for _ in range(args.valid)])
    print(f"wrote {args.train} training and {args.valid} validation rows to {out}")


if __name__ == "__main__":
    main()
