"""Deterministic generator of varied English sentences (for text rendering and MiniLM)."""
from __future__ import annotations

import numpy as np

_SUBJECTS = (
    "the engineer", "a small dog", "my neighbour", "the committee", "our team", "the old farmer",
    "a young student", "the river", "this company", "the orchestra", "every visitor", "the pilot",
    "a tired nurse", "the city council", "her brother", "the new manager", "a curious child",
    "the scientists", "the baker", "most people", "the train", "an experienced doctor",
)
_VERBS = (
    "builds", "watched", "will explain", "has painted", "carried", "describes", "repaired",
    "is reading", "found", "measured", "ignored", "celebrated", "sold", "designed", "studies",
    "wrote about", "photographed", "cleaned", "forgot", "discovered", "tested", "delivered",
)
_ADJECTIVES = (
    "quiet", "enormous", "fragile", "bright", "ancient", "complicated", "cheap", "beautiful",
    "strange", "heavy", "modern", "wooden", "useful", "noisy", "careful", "golden", "empty",
)
_OBJECTS = (
    "bridge", "report", "garden", "machine", "letter", "mountain path", "recipe", "bicycle",
    "software update", "painting", "market", "telescope", "contract", "library", "storm",
    "violin", "database", "harbour", "experiment", "kitchen table", "train schedule",
)
_PLACES = (
    "in the morning", "near the station", "after lunch", "during the winter", "at the museum",
    "on the second floor", "before the meeting", "in a small village", "by the sea",
    "last Tuesday", "without any help", "under heavy rain", "for nearly three hours",
)
_CONNECTORS = ("and", "but", "because", "although", "while", "so", "even though", "until")
_QUESTIONS = ("Why did", "When will", "How could", "Where did", "Did")


def _clause(rng: np.random.Generator) -> str:
    subj = _SUBJECTS[rng.integers(len(_SUBJECTS))]
    verb = _VERBS[rng.integers(len(_VERBS))]
    adj = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
    obj = _OBJECTS[rng.integers(len(_OBJECTS))]
    words = f"{subj} {verb} the {adj} {obj}"
    if rng.random() < 0.6:
        words += " " + _PLACES[rng.integers(len(_PLACES))]
    return words


def _sentence(rng: np.random.Generator) -> str:
    kind = rng.random()
    if kind < 0.12:  # short fragments and questions give very different lengths
        q = _QUESTIONS[rng.integers(len(_QUESTIONS))]
        subj = _SUBJECTS[rng.integers(len(_SUBJECTS))]
        obj = _OBJECTS[rng.integers(len(_OBJECTS))]
        return f"{q} {subj} leave the {obj}?"
    if kind < 0.2:
        return f"{_ADJECTIVES[rng.integers(len(_ADJECTIVES))].capitalize()} {_OBJECTS[rng.integers(len(_OBJECTS))]}."
    n_clauses = min(int(rng.geometric(0.5)) + (2 if rng.random() < 0.25 else 0), 6)
    parts = [_clause(rng)]
    for _ in range(n_clauses - 1):
        parts.append(_CONNECTORS[rng.integers(len(_CONNECTORS))])
        parts.append(_clause(rng))
    text = " ".join(parts)
    if rng.random() < 0.15:
        text += f", costing {int(rng.integers(2, 9999))} dollars"
    return text[0].upper() + text[1:] + "."


def english_sentences(n: int, seed: int) -> list[str]:
    """``n`` grammatical English sentences of varied length (2 to ~70 words), deterministic."""
    rng = np.random.default_rng(seed)
    return [_sentence(rng) for _ in range(n)]
