"""``edpbrl bench update``: one update on the same answers under several update settings, side by side.

A simulated person answers ``rounds`` rounds of designed questions about base-model candidates (no update in
between, so every setting learns from the very same answers). Then each setting runs one update from the
base model, and its samples on fixed seeds are judged: well-formed rate, share preferred (well formed and
liked), and the variety of each attribute the person is indifferent to (total-variation distance to the
base model's preferred samples). The tilted target is printed too: the share and well-formed rate of the
base pool re-weighted by the learned reward, which is what distillation can reach at best.

Settings are :class:`UpdateConfig` overrides, e.g. ``default``, ``method=dpo``, ``dpo_positive=30``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..imaging import save_grid
from ..loop.loop import PersonalizationLoop
from ..loop.session import PersonalizationSession
from ..loop.training import training_data
from ..models.shapes import AttributeJudge, EmbeddedEncoder
from ..models.shapes.judge import WELL_FORMED
from ..models.shapes.shapes import ATTRIBUTES
from ..models.shapes.weights import load_pipeline
from ..simulate.evaluation import total_variation
from ..simulate.people import make_user
from ..tuning.adapters import restart_adapter
from ..tuning.losses import effective_sample_size, reward_tilt
from ..tuning.updater import LoraUpdater, UpdateConfig
from .common import environment, markdown_table, write_json

EVAL_SEED = 50_000


def parse_setting(text: str) -> dict:
    """``"default"`` or ``"key=value,key=value"`` -> :class:`UpdateConfig` overrides (values typed like the defaults)."""
    if text == "default":
        return {}
    defaults, out = UpdateConfig(), {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if not hasattr(defaults, key) or not value:
            raise ValueError(
                f"bad update setting {item!r}: use key=value with an UpdateConfig field, e.g. dpo_positive=30"
            )
        kind = type(getattr(defaults, key))
        out[key] = value.lower() == "true" if kind is bool else kind(value)
    UpdateConfig(**out)
    return out


def run_user(user_name: str, seed: int, rounds: int, settings: list[str], eval_samples: int, out: Path) -> dict:
    encoder = EmbeddedEncoder()
    judge = AttributeJudge(encoder)
    user = make_user(user_name, seed=seed, judge=judge)
    pipe = load_pipeline()
    with tempfile.TemporaryDirectory() as tmp:
        session = PersonalizationSession(Path(tmp) / "store.db", "bench", encoder=encoder)
        loop = PersonalizationLoop(session, pipe, UpdateConfig(seed=seed), [""])
        for round_ in range(1, rounds + 1):
            candidates, _ = loop.sample(24, seed * 1_000_003 + round_ * 24)
            for question in loop.ask(10, seed=seed + round_, candidate_ids=candidates.ids):
                loop.record(question.id, user.answer(session.question_images(question.id)))
        pairs, ratings = training_data(session.store, session.session)
        pool, _ = loop.updater.base_pool()
        pool_labels = judge(pool)
        preferred = user.taste.preferred(pool_labels)
        rewards = torch.as_tensor(session.reward(pool), dtype=torch.float64)
        named = {n for v in user.taste.likes + user.taste.dislikes for n, vals in ATTRIBUTES.items() if v in vals}
        indifferent = [n for n in ("shape", "fill", "background") if n not in named]
        base_config = UpdateConfig(seed=seed)
        tilt = reward_tilt(rewards, base_config.distill_temperature, base_config.distill_min_ess)
        record = {
            "user": user_name,
            "seed": seed,
            "answers": len(session.store.answers(session.session)),
            "pairs": len(pairs),
            "learned_taste": session.status()["taste"],
            "tilted_target": {
                "share": float((tilt.numpy() * preferred).sum()),
                "well_formed": float((tilt.numpy() * pool_labels[WELL_FORMED]).sum()),
                "effective_samples": effective_sample_size(tilt),
            },
            "settings": {},
        }
        base_images = loop.images(eval_samples, EVAL_SEED)
        for text in ["base"] + settings:
            start = time.perf_counter()
            restart_adapter(loop.updater.unet)
            report = None
            if text != "base":
                config = UpdateConfig(seed=seed, **parse_setting(text))
                report = LoraUpdater(pipe, config, reward_fn=session.reward, prompts=[""]).update(pairs, ratings)
            images = base_images if report is None else loop.images(eval_samples, EVAL_SEED)
            labels = judge(images)
            formed = labels[WELL_FORMED]
            record["settings"][text] = {
                "well_formed": float(formed.mean()),
                "share": float(user.taste.preferred(labels).mean()),
                "variety": {
                    n: total_variation(labels[n][formed], pool_labels[n][preferred], len(ATTRIBUTES[n]))
                    for n in indifferent
                },
                "drift": None if report is None else report.drift,
                "steps": None if report is None else report.steps,
                "seconds": time.perf_counter() - start,
            }
            save_grid(images[:32], out / f"update_{user_name}_{seed}_{text.replace(',', '_')}.png", columns=8)
            print(f"{user_name} seed {seed} {text:40} {record['settings'][text]}", flush=True)
        restart_adapter(loop.updater.unet)
    return record


def run(out: Path, users: list[str], seeds: int, settings: list[str], rounds: int = 3, eval_samples: int = 64) -> dict:
    for text in settings:
        parse_setting(text)  # bad settings fail before minutes of sampling
    out.mkdir(parents=True, exist_ok=True)
    records = [run_user(u, s, rounds, settings, eval_samples, out) for u in users for s in range(seeds)]
    report = {"benchmark": "update", "rounds": rounds, "eval_samples": eval_samples, "environment": environment()}
    report["records"] = records
    write_json(out / "update.json", report)
    print(format_table(records))
    return report


def format_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        target = r["tilted_target"]
        rows.append(
            [r["user"], r["seed"], "tilted target", f"{target['well_formed']:.2f}", f"{target['share']:.2f}", "", ""]
        )
        for text, v in r["settings"].items():
            variety = ", ".join(f"{k} {x:.2f}" for k, x in v["variety"].items())
            drift = "" if v["drift"] is None else f"{v['drift']:.3f}"
            rows.append([r["user"], r["seed"], text, f"{v['well_formed']:.2f}", f"{v['share']:.2f}", variety, drift])
    return markdown_table(["user", "seed", "update", "well formed", "share preferred", "variety TV", "drift"], rows)
