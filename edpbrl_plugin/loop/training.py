"""What a LoRA update learns from: every answer of a session as winner/loser pairs and like/dislike ratings."""

from __future__ import annotations

import numpy as np

from ..learning import answers as vocabulary
from ..storage.store import PreferenceStore
from ..tuning.updater import PreferencePair, Rating


def training_data(store: PreferenceStore, session: str) -> tuple[list[PreferencePair], list[Rating]]:
    """(pairs, ratings) from every answer of ``session``, as :func:`~edpbrl_plugin.learning.answers.training_signal`
    reads each one (a pick beats each other option; "both bad" dislikes each; ties and skips carry nothing).
    Images ``[H, W, 3]`` in 0..1, each loaded once."""
    records = {c.id: c for c in store.candidates(session)}
    cache: dict[int, np.ndarray] = {}

    def image(cid: int) -> np.ndarray:
        if cid not in cache:
            cache[cid] = store.load_image(records[cid]).astype(np.float32) / 255.0
        return cache[cid]

    pairs, ratings = [], []
    for answer in store.answers(session):
        won, rated = vocabulary.training_signal(answer.choice, answer.candidates)
        pairs += [PreferencePair(image(w), image(lost), records[w].prompt, records[lost].prompt) for w, lost in won]
        ratings += [Rating(image(c), label, records[c].prompt) for c, label in rated]
    return pairs, ratings
