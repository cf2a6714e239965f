"""The one answer vocabulary: what a person can answer, how an answer is stored, shown, and learned from.

A question shows K options (K = 1 for a like/dislike rating). Every answer is one of:

* an option's position ``"0" .. "K-1"`` (given also as the widget's letter ``"A"``, ``"B"``, ... or an int);
* ``"tie"`` (pairs only), ``"like"`` / ``"dislike"`` (one image), ``"skip"``, ``"both_bad"`` (several options).

The store keeps the normalised string (:func:`normalise`); the choice model reads an :class:`Answer`
(:func:`to_outcome`); the LoRA update reads winner/loser pairs and ratings (:func:`training_signal`);
people read :func:`label`. Nothing else defines, validates or decodes answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TIE, LIKE, DISLIKE, SKIP, BOTH_BAD = "tie", "like", "dislike", "skip", "both_bad"
#: Answers other than an option's position.
FIXED = (TIE, SKIP, BOTH_BAD, LIKE, DISLIKE)
#: Answers that say nothing about which option is better (no likelihood, no update signal).
NO_PREFERENCE = (SKIP, BOTH_BAD)


class AnswerError(ValueError):
    """An answer that the question it is given to cannot take."""


def normalise(choice: object, n_options: int) -> str:
    """``choice`` as stored: an option's position ``"0".."K-1"`` (from an int, ``"1"`` or the letter ``"B"``)
    or one of :data:`FIXED`; raises :class:`AnswerError` saying what this ``n_options``-option question takes."""
    if isinstance(choice, (int, np.integer)) and not isinstance(choice, bool):
        choice = str(int(choice))
    if not isinstance(choice, str):
        raise AnswerError(f"answer must be an option index or one of {FIXED}, got {choice!r}")
    choice = choice.strip().lower()
    if len(choice) == 1 and "a" <= choice <= "z":
        choice = str(ord(choice) - ord("a"))
    if choice.isdigit():
        if n_options < 2 or not 0 <= int(choice) < n_options:
            raise AnswerError(f"answer {choice} is not an option of this {n_options}-option question")
        return str(int(choice))
    if choice not in FIXED:
        raise AnswerError(f"unknown answer {choice!r}; use an option index (0, 1, ... or A, B, ...) or one of {FIXED}")
    if choice == TIE and n_options != 2:
        raise AnswerError("'tie' answers pairs only")
    if choice in (LIKE, DISLIKE) and n_options != 1:
        raise AnswerError(f"'{choice}' rates one image; this question shows {n_options}")
    if choice == BOTH_BAD and n_options < 2:
        raise AnswerError("'both_bad' answers a question with several options")
    return choice


def label(choice: str, n_options: int) -> str:
    """A stored answer as the answer widget names it: "A" / "B" of a pair, "option 3" of K, "both bad", ..."""
    if choice.isdigit():
        return "AB"[int(choice)] if n_options == 2 else f"option {int(choice) + 1}"
    return choice.replace("_", " ")


def to_outcome(choice: str) -> int | str:
    """A stored answer as an :class:`Answer` outcome (a position becomes an int)."""
    return int(choice) if choice.isdigit() else choice


def training_signal(choice: str, options: Sequence[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """What a LoRA update learns from one answer to a question showing ``options`` (candidate ids):
    (winner, loser) pairs, the pick against each other option; and (candidate, +1 / -1) ratings, from
    like / dislike and from "both bad" (a dislike of each option). Ties and skips carry no update signal."""
    if choice.isdigit():
        winner = options[int(choice)]
        return [(winner, loser) for loser in options if loser != winner], []
    if choice in (LIKE, DISLIKE):
        return [], [(options[0], 1 if choice == LIKE else -1)]
    if choice == BOTH_BAD:
        return [], [(c, -1) for c in options]
    return [], []


@dataclass(frozen=True)
class Answer:
    """One human action on one question, as the choice model reads it.

    ``query`` lists candidate rows of a feature table; ``outcome`` is the chosen position in
    ``query`` (0 = first), or ``"tie"`` (pairs), ``"like"`` / ``"dislike"`` (single images),
    ``"skip"`` / ``"both_bad"`` (no preference information).
    """

    query: tuple[int, ...]
    outcome: int | str

    def __post_init__(self):
        object.__setattr__(self, "query", tuple(int(i) for i in self.query))
        k = len(self.query)
        if k < 1:
            raise ValueError("an answer's query must name at least one candidate")
        if len(set(self.query)) != k:
            raise ValueError(f"query {self.query} names a candidate twice; a question shows distinct candidates")
        outcome = self.outcome
        if isinstance(outcome, (int, np.integer)) and not isinstance(outcome, bool):
            if k < 2 or not 0 <= outcome < k:
                raise ValueError(f"choice index {outcome} is not a position in the {k}-option query {self.query}")
            object.__setattr__(self, "outcome", int(outcome))
        elif outcome == TIE:
            if k != 2:
                raise ValueError(f"'tie' is only an answer to pairs, not to a {k}-option query")
        elif outcome in (LIKE, DISLIKE):
            if k != 1:
                raise ValueError(f"'{outcome}' rates one image; the query has {k}")
        elif outcome not in NO_PREFERENCE:
            raise ValueError(
                f"unknown outcome {outcome!r}; use a choice index, 'tie', 'like', 'dislike', 'skip' or 'both_bad'"
            )

    @property
    def informative(self) -> bool:
        return self.outcome not in NO_PREFERENCE
