"""Preference data in and out of a store: JSON Lines preference pairs (the canonical, re-importable format) and
kohya-style DPO folders. Functions of a :class:`~.store.PreferenceStore`; no torch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ..learning import answers
from .store import CandidateRecord, PreferenceStore, StoreError


def preference_pairs(store: PreferenceStore, session: str) -> list[dict]:
    """Answered choices as (winner, loser) pairs: a K-way choice gives K − 1 pairs; ties and skips give none."""
    user = store.get_session(session).user
    by_id = {c.id: c for c in store.candidates(session)}
    pairs = []
    for answer in store.answers(session):
        for winner_id, loser_id in answers.training_signal(answer.choice, answer.candidates)[0]:
            winner, loser = by_id[winner_id], by_id[loser_id]
            pairs.append(
                {
                    "session": session,
                    "user": user,
                    "time": answer.created,
                    "question": answer.query,
                    "prompt": winner.prompt if winner.prompt == loser.prompt else None,
                    "winner": _image_ref(store, winner),
                    "loser": _image_ref(store, loser),
                    "winner_prompt": winner.prompt,
                    "loser_prompt": loser.prompt,
                }
            )
    return pairs


def _image_ref(store: PreferenceStore, candidate: CandidateRecord) -> str | None:
    path = store.image_file(candidate)
    return None if path is None else str(path.resolve())


def export_pairs(store: PreferenceStore, session: str, path: str | Path) -> int:
    """Write the session's preference pairs as JSON Lines (the canonical, re-importable format)."""
    pairs = preference_pairs(store, session)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return len(pairs)


def import_pairs(store: PreferenceStore, path: str | Path, session: str) -> int:
    """Import JSON Lines pairs into ``session`` (created if missing) as answered pair questions.

    Images are copied into this store (by content hash); features are left empty for the session's
    encoder to fill (``set_features``). Returns the number of pairs imported.
    """
    lines = Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            winner, loser = Path(record["winner"]), Path(record["loser"])
        except (ValueError, KeyError, TypeError) as error:
            raise StoreError(f"{path}:{number} is not a preference pair record ({error})") from error
        for image in (winner, loser):
            if not image.is_file():
                raise StoreError(f"{path}:{number} references missing image {image}")
        records.append((record, winner, loser))
    if not store.has_session(session):
        store.create_session(
            session,
            user=records[0][0].get("user", "imported") if records else "imported",
            config={"imported_from": str(path)},
        )
    for record, winner, loser in records:
        images = [np.asarray(Image.open(p).convert("RGB")) for p in (winner, loser)]
        prompts = [
            record.get("winner_prompt") or record.get("prompt") or "",
            record.get("loser_prompt") or record.get("prompt") or "",
        ]
        ids = store.add_candidates(session, prompts, images=images, generator={"imported": True})
        query = store.add_query(session, ids, strategy="imported")
        store.submit_answer(query.id, 0)
    return len(records)


def export_dpo_folders(store: PreferenceStore, session: str, folder: str | Path) -> int:
    """kohya-style DPO folders: ``w/NNNNN.png`` beats ``l/NNNNN.png``, prompts in ``NNNNN.txt``."""
    folder = Path(folder)
    pairs = preference_pairs(store, session)
    for sub in ("w", "l"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for number, pair in enumerate(pairs):
        for sub, key in (("w", "winner"), ("l", "loser")):
            if pair[key] is None:
                raise StoreError(f"question {pair['question']} has no stored image; cannot export DPO folders")
            shutil.copyfile(pair[key], folder / sub / f"{number:05d}.png")
            (folder / sub / f"{number:05d}.txt").write_text(pair[f"{key}_prompt"] or "")
    return len(pairs)
