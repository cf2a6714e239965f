"""``edpbrl demo``: the whole personalization loop on an embedded model, offline: the styled-shapes model
(default), or PAPA's setting, the unconditional MNIST digits / Fashion-MNIST models (``--model digits``).

Each round samples candidates, asks the most informative questions (Fisher design), records the
answers in the store (a simulated user by default, or you in the terminal with ``--interactive``),
refits the reward model and runs one LoRA update. Writes to ``--out``: the store, ``summary.json``,
``learning_curve.png``, ``before.png`` / ``after.png`` and the LoRA in diffusers and kohya format.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .imaging import save_grid
from .learning._validation import check_query_size
from .learning.metrics import choice_accuracy
from .loop.loop import PersonalizationLoop
from .loop.session import PersonalizationSession
from .loop.versions import write_lora
from .models.digits import DigitsEncoder
from .models.digits import load_pipeline as load_class_pipeline
from .models.digits.judge import ClassJudge
from .models.shapes import AttributeJudge, EmbeddedEncoder, load_shapes_pipeline
from .simulate.evaluation import PROMPT_SEED, adherence, compare, random_prompts
from .simulate.people import make_user
from .simulate.terminal import TerminalAsker
from .tuning.updater import UpdateConfig

EVAL_SEED = 10_000
PROMPTED_SAMPLES = 64


def run_demo(
    out: str | Path = "edpbrl_demo",
    user: str = "blue-outline",
    rounds: int = 3,
    questions_per_round: int = 10,
    candidates_per_round: int = 24,
    prompt: str = "",
    eval_samples: int = 64,
    seed: int = 0,
    interactive: bool = False,
    update: UpdateConfig | None = None,
    generator: str | Path | None = None,
    k: int = 2,
    model: str = "shapes",
) -> dict:
    """Run the loop; ``k`` options per question (2: A/B with "tie"; 4: pick the best of four, which keeps
    teachers who answer at random on equal pairs from teaching noise, see the README's alignment benchmark).
    ``model``: "shapes" (prompts, attribute tastes) or "digits" / "fashion" (unconditional: no prompt; PAPA's
    users, judged by the classifier)."""
    check_query_size(k, candidates_per_round)  # before minutes of loading and sampling, not after
    if model != "shapes" and (prompt or generator):
        raise ValueError(f"the {model} model is unconditional and ships its own weights: no prompt or generator")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {"sample": 0.0, "select": 0.0, "answer": 0.0, "update": 0.0, "evaluate": 0.0}
    torch.manual_seed(seed)
    if model == "shapes":
        pipe = load_shapes_pipeline(generator) if generator else load_shapes_pipeline()
        encoder = EmbeddedEncoder()
        judge = AttributeJudge(encoder)
    else:
        pipe, encoder = load_class_pipeline(model), DigitsEncoder(model)
        judge = ClassJudge(model, encoder=encoder)
    person = None if interactive else make_user(user, seed=seed, judge=judge)
    store_path = out / "store.db"
    session_id = f"demo-{'you' if interactive else user}-{time.strftime('%Y%m%d-%H%M%S')}"
    session = PersonalizationSession(
        store_path, session_id, user="you" if interactive else f"simulated:{user}", encoder=encoder
    )
    loop = PersonalizationLoop(session, pipe, update or UpdateConfig(seed=seed), [prompt], k=k)

    t = time.perf_counter()
    before = loop.images(eval_samples, EVAL_SEED)
    prompts, wanted = random_prompts(PROMPTED_SAMPLES, PROMPT_SEED) if model == "shapes" else ([], [])
    before_prompted = judge(loop.images(len(prompts), PROMPT_SEED, prompts)) if prompts else None
    timings["evaluate"] += time.perf_counter() - t
    save_grid(before[:64], out / "before.png", columns=8)
    # The base model's evaluation samples are held out (no question shows them): the reward model's accuracy
    # is measured on their pairs.
    heldout = before
    heldout_features = encoder.encode(heldout)
    # The simulated user's utility of the held-out images, for the reward model's accuracy curve.
    true_utility = person.utility(heldout) if person else None

    def reward_accuracy() -> float | None:
        if true_utility is None:
            return None
        # Accuracy of θ̂'s choices on held-out pairs, judged by the simulated user's utility.
        index = rng_eval.integers(0, len(heldout), size=(2000, 2))
        accuracy = choice_accuracy(heldout_features[index] @ session.model.theta_, true_utility[index])
        return None if np.isnan(accuracy) else accuracy

    rng_eval = np.random.default_rng(seed + 1)
    curve = [
        {
            "answers": 0,
            "reward_accuracy": reward_accuracy(),
            "share_preferred": person.share_preferred(before) if person else None,
        }
    ]
    updates, after = [], None
    ask = TerminalAsker(out / "question.png") if interactive else person.answer
    for round_ in range(rounds):
        done = loop.run_round(
            ask,
            candidates_per_round,
            questions_per_round,
            seed=seed * 100_000 + round_ * candidates_per_round,
            question_seed=seed + round_,
            progress=not interactive,
        )
        for stage, seconds in done.seconds.items():
            timings[stage] += seconds
        report = done.report
        updates.append(
            {
                "round": round_ + 1,
                "summary": report.summary(),
                "drift": report.drift,
                "steps": report.steps,
                "seconds": round(report.seconds, 2),
            }
        )
        t = time.perf_counter()
        # the last round's probe is the start of the final evaluation (same seeds, same model): sampled once
        last = round_ + 1 == rounds
        after = loop.images(eval_samples, EVAL_SEED) if last else None
        probe = (after[:32] if last else loop.images(32, EVAL_SEED)) if person else None
        timings["evaluate"] += time.perf_counter() - t
        n_answers = len(session.store.answers(session_id))
        curve.append(
            {
                "answers": n_answers,
                "reward_accuracy": reward_accuracy(),
                "share_preferred": person.share_preferred(probe) if person else None,
            }
        )
        print(
            f"round {round_ + 1}/{rounds}: {n_answers} answers; {report.summary()}"
            + (f"; share preferred {curve[-1]['share_preferred']:.2f}" if person else "")
        )

    if after is None:  # no rounds
        after = before
    save_grid(after[:64], out / "after.png", columns=8)
    t = time.perf_counter()
    after_prompted = judge(loop.images(len(prompts), PROMPT_SEED, prompts)) if prompts else None
    model = _model_report(person, judge, before, after, before_prompted, after_prompted, wanted)
    timings["evaluate"] += time.perf_counter() - t
    paths = write_lora(
        pipe,
        out / "lora",
        f"edpbrl_{session_id}.safetensors",
        {"session": session_id, "answers": session.model.n_answers_},
    )
    status = session.status()
    summary = {
        "session": session_id,
        "user": "interactive" if interactive else user,
        "answers": status["answers"],
        "options_per_question": k,
        "informative_answers": status["informative_answers"],
        "learned_taste": status["taste"],
        "reward_accuracy_heldout": curve[-1]["reward_accuracy"],
        "share_preferred_before": person.share_preferred(before) if person else None,
        "share_preferred_after": person.share_preferred(after) if person else None,
        "expected_accuracy_on_pool": status["expected_accuracy"],
        "model_before_after": model,
        "curve": curve,
        "updates": updates,
        "timings_seconds": {k: round(v, 2) for k, v in timings.items()}
        | {"total": round(time.perf_counter() - started, 2)},
        "files": {
            "store": str(store_path),
            "lora_diffusers": str(paths["diffusers"]),
            "lora_kohya": str(paths["kohya"]),
            "before": str(out / "before.png"),
            "after": str(out / "after.png"),
            "learning_curve": str(out / "learning_curve.png"),
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _plot_curve(curve, out / "learning_curve.png")
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "answers",
                    "learned_taste",
                    "reward_accuracy_heldout",
                    "share_preferred_before",
                    "share_preferred_after",
                )
            },
            indent=1,
        )
    )
    print(_format_model_report(model))
    print(f"wrote {out}/summary.json, before.png, after.png, learning_curve.png, lora/")
    return summary


def _model_report(person, judge, before, after, before_prompted, after_prompted, wanted) -> dict:
    """The base model and the personalized one on the same seeds: the person's win rate (a simulated person
    only), well-formed rate and adherence to random prompts (judged, never shown to the loop)."""
    base_labels, after_labels = judge(before), judge(after)
    if person is None:
        sides = {
            "before": {"well_formed": float(base_labels["well_formed"].mean())},
            "after": {"well_formed": float(after_labels["well_formed"].mean())},
        }
        for side, prompted in (("before", before_prompted), ("after", after_prompted)):
            if prompted is not None:
                sides[side]["adherence"] = adherence(prompted, wanted)
                sides[side]["well_formed_prompted"] = float(prompted["well_formed"].mean())
        return sides
    base = (before, base_labels)
    return {
        "before": compare(person.taste, base, base, before_prompted, wanted),
        "after": compare(person.taste, (after, after_labels), base, after_prompted, wanted),
    }


def _format_model_report(model: dict) -> str:
    before, after = model["before"], model["after"]
    lines = ["the model, base -> personalized (same seeds; judged, never shown to the loop):"]
    for key, label in (
        ("share", "share you prefer"),
        ("win_rate", "your win rate vs base"),
        ("well_formed", "well formed"),
        ("well_formed_prompted", "well formed (random prompts)"),
    ):
        if key in after:
            lines.append(f"  {label:30} {before[key]:.2f} -> {after[key]:.2f}")
    for name, value in after.get("adherence", {}).items():
        lines.append(f"  {'prompt adherence: ' + name:30} {before['adherence'][name]:.2f} -> {value:.2f}")
    return "\n".join(lines)


def _plot_curve(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    answers = [c["answers"] for c in curve]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for key, label in (
        ("reward_accuracy", "reward model: held-out pair accuracy"),
        ("share_preferred", "share of samples you prefer"),
    ):
        values = [c[key] for c in curve]
        if any(v is not None for v in values):
            ax.plot(answers, [np.nan if v is None else v for v in values], marker="o", label=label)
    ax.set_xlabel("answers (human actions)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
