"""``edpbrl bench queries``: learning curves per strategy on fixed synthetic settings, many seeds.

Settings (fixed before tuning):
  A   anisotropic Gaussian pool, d = 32, feature scales exp(−i/6), ‖θ*‖ = 3, pairs
  B   sparse one-hot attributes (4 attributes × 8 values) and a sparse user, pairs
  C-* ED-PBRL prompts: H = 4 slots, 10 or 50 words per slot (plus blank), anisotropic word features
      (d = 32) summed over slots, K = 2 or 4; the baseline is a uniform-random prompt policy
  D   clustered, L2-normalised features at d = 768, pairs
One answer = one human action (a noisy MNL teacher, β = 1). The default strategy, named before any
run, is ``d_optimal`` (θ-aware greedy D-optimal; θ̂ = 0 before the first answer, so it starts
θ-agnostic); in C it picks from prompts sampled from the ED-PBRL design. Every strategy is reported.
"""

from __future__ import annotations

import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..learning.answers import Answer
from ..learning.choice import ChoiceModel
from ..learning.metrics import choice_accuracy, cosine_error
from ..querying.design import PromptDesign, WordSlots
from ..querying.strategies import DEFAULT_STRATEGY, STRATEGIES, make_strategy
from ..simulate.teachers import LinearUser, Teacher
from .common import bootstrap_ci, environment, mean_ci, write_json
from .peers.botorch import BotorchPeer

SETTINGS = ("A", "B", "C-w10-k2", "C-w50-k2", "C-w10-k4", "C-w50-k4", "D")
PROMPT_STRATEGIES = ("uniform", "fw_static", "fw_adaptive")
PEER = "botorch_eubo"
REFERENCE_ANSWERS = 40
N_TEST = 2000


@dataclass
class Problem:
    theta_star: np.ndarray
    test: np.ndarray  # held-out questions [n, K, d]
    k: int
    pool: np.ndarray | None = None  # fixed candidate pool [N, d] (A, B, D)
    slots: WordSlots | None = None  # prompt setting (C)
    design: PromptDesign | None = None


def _scaled_theta(rng: np.random.Generator, d: int, norm: float = 3.0) -> np.ndarray:
    theta = rng.normal(size=d)
    return theta * norm / np.linalg.norm(theta)


def make_problem(setting: str, seed: int) -> Problem:
    rng = np.random.default_rng(10_000 + seed)
    if setting == "A":
        scales = np.exp(-np.arange(32) / 6)
        draw = lambda *shape: rng.normal(size=(*shape, 32)) * scales  # noqa: E731
        return Problem(_scaled_theta(rng, 32), draw(N_TEST, 2), 2, pool=draw(256))
    if setting == "B":
        n_attr, n_val = 4, 8

        def draw(*shape):
            values = rng.integers(0, n_val, size=(*shape, n_attr))
            return np.eye(n_val)[values].reshape(*shape, n_attr * n_val)

        theta = np.zeros(n_attr * n_val)
        attrs = rng.choice(n_attr, 3, replace=False)
        for a, w in zip(attrs, (2.0, 1.5, -1.5)):
            theta[a * n_val + rng.integers(n_val)] = w
        return Problem(theta, draw(N_TEST, 2), 2, pool=draw(256))
    if setting.startswith("C-"):
        n_words, k = (int(part[1:]) for part in setting.split("-")[1:])
        scales = np.exp(-np.arange(32) / 6)
        words = [[f"s{h}w{i}" for i in range(n_words)] for h in range(4)]
        slots = WordSlots.from_lists(words, [rng.normal(size=(n_words, 32)) * scales for _ in range(4)])
        uniform = np.stack([rng.integers(0, n_words + 1, size=(N_TEST, k)) for _ in range(4)], axis=-1)
        design = PromptDesign(k=k, budget=REFERENCE_ANSWERS).fit(slots)
        return Problem(_scaled_theta(rng, 32), slots.prompt_features(uniform), k, slots=slots, design=design)
    if setting == "D":
        d, n_clusters = 768, 20
        centers = rng.normal(size=(n_clusters, d))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)

        def draw(*shape):
            x = centers[rng.integers(0, n_clusters, size=shape)] + rng.normal(size=(*shape, d)) * 0.8 / np.sqrt(d)
            return x / np.linalg.norm(x, axis=-1, keepdims=True)

        theme = centers[rng.choice(n_clusters, 3, replace=False)].mean(axis=0)
        return Problem(3.0 * theme / np.linalg.norm(theme), draw(N_TEST, 2), 2, pool=draw(256))
    raise ValueError(f"unknown setting {setting!r}; choose from {SETTINGS}")


def strategies_for(setting: str, with_peer: bool) -> list[str]:
    names = list(STRATEGIES)
    if setting.startswith("C-"):
        names = list(PROMPT_STRATEGIES) + names
    if with_peer and make_problem_k(setting) == 2:
        names.append(PEER)
    return names


def make_problem_k(setting: str) -> int:
    return int(setting.rsplit("-k", 1)[1]) if setting.startswith("C-") else 2


def _prompt_pool(problem: Problem, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    episodes = problem.design.sample(math.ceil(size / problem.k), rng)
    return problem.slots.prompt_features(episodes.reshape(-1, episodes.shape[-1]))[:size]


def run_curve(setting: str, strategy: str, seed: int, n_answers: int) -> dict:
    """One learning curve: accuracy and cosine error after 0..n_answers answers."""
    problem = make_problem(setting, seed)
    rng = np.random.default_rng(seed)
    user = LinearUser(problem.theta_star, Teacher(beta=1.0), seed=seed)
    model = ChoiceModel().fit(np.zeros((1, len(problem.theta_star))), [])
    peer = BotorchPeer(seed) if strategy == PEER else None
    if peer is not None:
        peer.fit(None, [])
    points, comparisons = [], []
    true = problem.test @ problem.theta_star
    flat = problem.test.reshape(-1, problem.test.shape[-1])  # every option of every held-out question, for the peer
    accuracy = [choice_accuracy(problem.test @ model.theta_, true)]
    cosine = [cosine_error(model.theta_, problem.theta_star)]
    select_seconds = []
    design = problem.design
    for n in range(n_answers):
        start = time.perf_counter()
        if strategy in PROMPT_STRATEGIES:
            if strategy == "uniform":
                words = [rng.integers(0, len(f), size=problem.k) for f in problem.slots.features]
                options = problem.slots.prompt_features(np.stack(words, axis=1))
            else:
                if strategy == "fw_adaptive" and n > 0 and n % 5 == 0:
                    design = PromptDesign(k=problem.k, budget=REFERENCE_ANSWERS).fit(problem.slots, model.precision_)
                options = problem.slots.prompt_features(design.sample(1, rng)[0])
        else:
            pool = problem.pool if problem.pool is not None else _prompt_pool(problem, rng)
            if peer is not None:
                indices = peer.select(pool)
            else:
                indices = make_strategy(strategy).select(pool, model, k=problem.k, rng=rng).indices
            options = pool[list(indices)]
        select_seconds.append(time.perf_counter() - start)
        outcome = user.answer(options)
        model.partial_fit(options, [Answer(tuple(range(problem.k)), outcome)])
        if peer is not None and outcome in (0, 1):
            points.extend([options[outcome], options[1 - outcome]])
            comparisons.append((len(points) - 2, len(points) - 1))
        if peer is not None:
            peer.fit(np.asarray(points) if points else None, comparisons)
            accuracy.append(choice_accuracy(peer.utilities(flat).reshape(true.shape), true))
            cosine.append(float("nan"))
        else:
            accuracy.append(choice_accuracy(problem.test @ model.theta_, true))
            cosine.append(cosine_error(model.theta_, problem.theta_star))
    return {
        "setting": setting,
        "strategy": strategy,
        "seed": seed,
        "accuracy": accuracy,
        "cosine_error": cosine,
        "select_ms": 1000 * float(np.mean(select_seconds)),
    }


def _job(args):
    return run_curve(*args)


def answers_to_reach(curves: np.ndarray, target: float) -> float:
    """First answer count whose mean accuracy reaches ``target`` (inf if never)."""
    hits = np.flatnonzero(curves.mean(axis=0) >= target)
    return float(hits[0]) if len(hits) else float("inf")


def summarise(runs: list[dict], n_answers: int) -> dict:
    """Per setting and strategy: mean curves with 95% CIs, and answers needed to match random at 40."""
    summary = {}
    for setting in sorted({r["setting"] for r in runs}, key=SETTINGS.index):
        rows = [r for r in runs if r["setting"] == setting]
        baseline = "uniform" if setting.startswith("C-") else "random"
        by_strategy = {}
        for name in dict.fromkeys(r["strategy"] for r in rows):
            seeds = sorted(r["seed"] for r in rows if r["strategy"] == name)
            curves = {r["seed"]: r for r in rows if r["strategy"] == name}
            by_strategy[name] = {
                "seeds": seeds,
                "accuracy": np.array([curves[s]["accuracy"] for s in seeds]),
                "cosine_error": np.array([curves[s]["cosine_error"] for s in seeds]),
                "select_ms": float(np.mean([curves[s]["select_ms"] for s in seeds])),
            }
        if baseline not in by_strategy:
            continue
        base = by_strategy[baseline]
        ref = min(REFERENCE_ANSWERS, n_answers)
        target = float(base["accuracy"][:, ref].mean())
        out = {
            "baseline": baseline,
            "reference_answers": ref,
            "baseline_accuracy_at_reference": target,
            "strategies": {},
        }
        for name, data in by_strategy.items():
            common = [s for s in data["seeds"] if s in base["seeds"]]
            acc = data["accuracy"][[data["seeds"].index(s) for s in common]]
            base_acc = base["accuracy"][[base["seeds"].index(s) for s in common]]
            needed = answers_to_reach(acc, target)
            lo, hi = bootstrap_ci(
                lambda idx: min(answers_to_reach(acc[idx], base_acc[idx][:, ref].mean()), n_answers + 1), len(common)
            )
            out["strategies"][name] = {
                "default": name == DEFAULT_STRATEGY,
                "n_seeds": len(data["seeds"]),
                "answers": list(range(data["accuracy"].shape[1])),
                "accuracy": mean_ci(data["accuracy"]),
                "cosine_error": mean_ci(data["cosine_error"]),
                "answers_to_match_baseline": needed,
                "answers_to_match_baseline_ci": [lo, hi if hi <= n_answers else float("inf")],
                "select_ms": round(data["select_ms"], 3),
            }
        summary[setting] = out
    return summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(summary)
    cols = min(4, len(settings))
    rows = math.ceil(len(settings) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, setting in zip(axes.flat, settings):
        for name, data in summary[setting]["strategies"].items():
            acc = data["accuracy"]
            x = data["answers"]
            style = {"lw": 2.4, "color": "black"} if data["default"] else {"lw": 1.2}
            ax.plot(x, acc["mean"], label=name, **style)
            ax.fill_between(x, acc["lo"], acc["hi"], alpha=0.15, color=style.get("color"))
        ax.axhline(summary[setting]["baseline_accuracy_at_reference"], ls=":", color="grey")
        ax.set_title(setting)
        ax.set_xlabel("answers (human actions)")
        ax.set_ylabel("held-out accuracy")
    for ax in list(axes.flat)[len(settings) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(
    out: Path,
    settings: list[str],
    seeds: int,
    n_answers: int,
    strategies: list[str] | None = None,
    workers: int = 1,
    with_peer: bool = True,
) -> dict:
    """Run (resumably: finished curves are kept in ``queries_runs.jsonl``), summarise, plot, print."""
    out.mkdir(parents=True, exist_ok=True)
    if with_peer:
        try:
            import botorch  # noqa: F401
        except ImportError:
            print("botorch is not installed (pip install 'edpbrl[bench]'); skipping the BoTorch peer")
            with_peer = False
    runs_path = out / "queries_runs.jsonl"
    runs = [json.loads(line) for line in runs_path.read_text().splitlines()] if runs_path.exists() else []
    runs = [r for r in runs if len(r["accuracy"]) == n_answers + 1]
    done = {(r["setting"], r["strategy"], r["seed"]) for r in runs}
    jobs = [
        (setting, name, seed, n_answers)
        for setting in settings
        for name in (strategies or strategies_for(setting, with_peer))
        for seed in range(seeds)
        if (setting, name, seed) not in done
    ]
    print(f"{len(done)} curves already done, {len(jobs)} to run")
    with runs_path.open("a") as sink:
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_job, jobs)
                for result in results:
                    sink.write(json.dumps(result) + "\n")
                    sink.flush()
                    runs.append(result)
        else:
            for job in jobs:
                result = run_curve(*job)
                sink.write(json.dumps(result) + "\n")
                sink.flush()
                runs.append(result)
    runs = [r for r in runs if r["setting"] in settings]
    summary = summarise(runs, n_answers)
    report = {
        "benchmark": "queries",
        "default_strategy": DEFAULT_STRATEGY,
        "n_answers": n_answers,
        "seeds": list(range(seeds)),
        "environment": environment(),
        "settings": summary,
    }
    write_json(out / "queries.json", report)
    plot(summary, out / "queries.png")
    print(format_table(summary))
    return report


def format_table(summary: dict) -> str:
    lines = []
    for setting, data in summary.items():
        lines.append(
            f"\n{setting}: {data['baseline']} reaches {data['baseline_accuracy_at_reference']:.3f} "
            f"with {data['reference_answers']} answers; answers each strategy needs (95% bootstrap CI)"
        )
        for name, s in data["strategies"].items():
            lo, hi = s["answers_to_match_baseline_ci"]
            acc = s["accuracy"]["mean"]
            at = {n: acc[n] for n in (10, 20, 40) if n < len(acc)}
            mark = " (default)" if s["default"] else ""
            lines.append(
                f"  {name + mark:<28} {s['answers_to_match_baseline']:>5} [{lo:g}, {hi:g}]  "
                + "  ".join(f"acc@{n}={v:.3f}" for n, v in at.items())
                + f"  select {s['select_ms']:.1f} ms"
            )
    return "\n".join(lines)
