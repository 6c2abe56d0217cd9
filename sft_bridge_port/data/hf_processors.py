"""Row processors for hub datasets (``HFDatasetConfig.process_example_fn``); module-level so configs serialise."""

from __future__ import annotations

from typing import Any


def process_squad_example(example: dict[str, Any], tokenizer: Any = None) -> dict[str, Any]:
    """SQuAD row -> Bridge prompt/completion row.

    Example: ``{"context": "Paris is in France.", "question": "Where is Paris?", "answers": {"text": ["France"]}}``
    -> ``{"input": "Context: Paris is in France. Question: Where is Paris? Answer:", "output": "France",
    "original_answers": ["France"]}``.
    """
    answers = example["answers"]["text"]
    if not answers:
        raise ValueError(f"SQuAD row {example.get('id', '?')} has no answer text in 'answers.text'")
    return {
        "input": f"Context: {example['context']} Question: {example['question']} Answer:",
        "output": answers[0],
        "original_answers": list(answers),
    }
