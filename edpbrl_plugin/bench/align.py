"""``edpbrl bench align``: personalizing the embedded generator per human action, ours vs the PAPA loop.

Simulated users with hidden attribute tastes judge what they see (encoder + pixels). Methods:

* ``ours``: designed pair questions (θ-aware D-optimal on freshly sampled candidates) -> reward model
  -> the default update (DPO on the answers + learned-reward distillation, early stopping, drift cap);
* ``random``: random pairs + the same updates;
* ``ours-fresh``: ``ours`` with half of each round's candidates from the base model (``base_share=0.5``) and
  every update started again from the base model (``warm_start=False``), so a first update fitted on
  few noisy answers is neither where later updates start nor all that later questions can show;
* ``ours-k4``: ``ours`` asking 4-way questions ("which of these four do you like best?", one click = one
  action, as in ED-PBRL's K-way queries): a pick among four carries more than a pair, and four random base
  samples hold a liked one far more often than two, so a teacher without a "tie" answer flips fewer coins;
* ``papa@<lr>``: the PAPA loop: like/dislike on every sample shown, their signed ELBO-weighted loss with
  the base pull, learning rate from a small grid (every grid point is run and reported).

One pair answer = one like/dislike label = one action. "Share preferred" = the fraction of fresh
samples (fixed evaluation seeds) carrying every liked value and no disliked one, judged by the
encoder and pixels, never by the learned reward. Runs are resumable (``align_runs.jsonl``).
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..embedded.judge import USER_PRESETS, AttributeJudge, make_user
from ..embedded.weights import load_pipeline
from ..features import EmbeddedEncoder
from ..imaging import save_grid
from ..personalize.updater import LoraUpdater, Rating, UpdateConfig
from ..session import PersonalizationSession
from .common import environment, mean_ci, write_json

USERS = ("blue", "star-not-black", "blue-outline", "noisy-blue", "mistaken-blue")
EASY_USERS = ("blue",)
PAPA_LRS = (3e-5, 1e-4, 3e-4, 1e-3)
QUICK_PAPA_LR = 3e-5  # best of the grid on the quick user (blue): the highest final share, 5 seeds at 3e-5 vs seed 0 at the others (align_runs.jsonl)
#: ``--quick``: one easy user, 3 seeds, ours vs PAPA at its best learning rate, shorter budgets (<= 20 min on 2 cores)
QUICK = {"users": ["blue"], "seeds": 3, "budget": 20, "papa_budget": 30, "eval_samples": 32}
EVAL_SEED = 50_000
#: Our loop's variants: :func:`run_ours` settings, "update" holding :class:`UpdateConfig` overrides
#: (every other method is papa@<learning rate>).
OURS_METHODS: dict[str, dict] = {
    "ours": {},
    "random": {"strategy": "random"},
    "ours-fresh": {"base_share": 0.5, "update": {"warm_start": False}},
    "ours-k4": {"k": 4},
}


class Bench:
    """Shared state of one benchmark process: encoder, judge and evaluation settings."""

    def __init__(self, eval_samples: int = 64, prompt: str = ""):
        self.encoder = EmbeddedEncoder()
        self.judge = AttributeJudge(self.encoder)
        self.eval_samples = eval_samples
        self.prompt = prompt
        self._base_images: np.ndarray | None = None

    def evaluate_base(self, pipe, user) -> tuple[dict, np.ndarray]:
        """The base model's evaluation samples are the same for every run: sample them once."""
        if self._base_images is None:
            self._base_images = self.sample(pipe, self.eval_samples, EVAL_SEED)
        labels = self.judge(self._base_images)
        return {"share": float(user.taste.preferred(labels).mean()), "utility": float(user.taste.utility(labels).mean())}, self._base_images

    def sample(self, pipe, n: int, seed: int) -> np.ndarray:
        generators = [torch.Generator().manual_seed(seed + i) for i in range(n)]
        return np.asarray(pipe(prompt=[self.prompt] * n, generator=generators, output_type="np").images, dtype=np.float32)

    def evaluate(self, pipe, user, updater: LoraUpdater | None = None) -> tuple[dict, np.ndarray]:
        images = updater.sample(self.eval_samples, EVAL_SEED)[0] if updater is not None else self.sample(pipe, self.eval_samples, EVAL_SEED)
        labels = self.judge(images)
        return {"share": float(user.taste.preferred(labels).mean()), "utility": float(user.taste.utility(labels).mean())}, images


def run_ours(bench: Bench, user_name: str, seed: int, budget: int, per_round: int, candidates: int,
             strategy: str = "d_optimal", config: UpdateConfig | None = None, base_share: float = 0.0, k: int = 2) -> dict:
    pipe = load_pipeline()
    user = make_user(user_name, seed=seed, judge=bench.judge)
    with tempfile.TemporaryDirectory() as tmp:
        session = PersonalizationSession(Path(tmp) / "store.db", "bench", encoder=bench.encoder, strategy=strategy)
        config = config or UpdateConfig(seed=seed)
        updater = session.updater(pipe, config, [bench.prompt])
        point, images = bench.evaluate_base(pipe, user)
        curve, updates, first_images = [{"actions": 0, **point, "drift": 0.0}], [], images
        actions, round_ = 0, 0
        while actions < budget:
            round_ += 1
            batch = session.sample_candidates(pipe, candidates, [bench.prompt], seed=seed * 1_000_003 + round_ * candidates,
                                             base_share=base_share)[0]
            n = min(per_round, budget - actions)
            for query in session.next_queries(k=k, batch=n, candidate_ids=batch.ids, strategy=strategy, seed=seed + round_):
                options = np.stack([session.store.load_image(c) for c in session.store.candidates("bench", query.candidates)])
                session.answer(query.id, user.answer(options / 255.0))
                actions += 1
            report, _ = session.update_lora(pipe, config, [bench.prompt])
            updates.append({"actions": actions, "steps": report.steps, "seconds": report.seconds, "drift": report.drift,
                            "stopped": report.stopped})
            point, images = bench.evaluate(pipe, user, updater)
            curve.append({"actions": actions, **point, "drift": report.drift})
    return {"curve": curve, "updates": updates, "before": first_images, "after": images}


def run_papa(bench: Bench, user_name: str, seed: int, budget: int, per_round: int, learning_rate: float) -> dict:
    pipe = load_pipeline()
    user = make_user(user_name, seed=seed, judge=bench.judge)
    config = UpdateConfig(method="papa", learning_rate=learning_rate, early_stopping=False, seed=seed, drift_cap=float("inf"))
    updater = LoraUpdater(pipe, config, prompts=[bench.prompt])
    point, images = bench.evaluate_base(pipe, user)
    curve, updates, first_images = [{"actions": 0, **point, "drift": 0.0}], [], images
    ratings: list[Rating] = []
    actions, round_ = 0, 0
    while actions < budget:
        round_ += 1
        n = min(per_round, budget - actions)
        shown, _ = updater.sample(n, seed * 1_000_003 + round_ * per_round)
        for image, label in zip(shown, user.rate(shown)):
            ratings.append(Rating(image, 1 if label == "like" else -1, bench.prompt))
        actions += n
        report = updater.update(ratings=ratings)
        updates.append({"actions": actions, "steps": report.steps, "seconds": report.seconds, "drift": report.drift,
                        "stopped": report.stopped})
        point, images = bench.evaluate(pipe, user, updater)
        curve.append({"actions": actions, **point, "drift": report.drift})
    return {"curve": curve, "updates": updates, "before": first_images, "after": images}


_BENCH: Bench | None = None


def _run_job(job: tuple) -> dict:
    """One (user, method, seed) run; worker processes keep one :class:`Bench` each."""
    global _BENCH
    user, method, seed, settings = job
    torch.set_num_threads(1)
    if _BENCH is None:
        _BENCH = Bench(eval_samples=settings["eval_samples"])
    start = time.perf_counter()
    if method in OURS_METHODS:
        variant = dict(OURS_METHODS[method])
        config = UpdateConfig(seed=seed, **variant.pop("update", {}))
        result = run_ours(_BENCH, user, seed, settings["budget"], settings["per_round"], settings["candidates"],
                          config=config, **variant)
    else:
        result = run_papa(_BENCH, user, seed, settings["papa_budget"], settings["papa_per_round"], float(method.split("@")[1]))
    return {"key": f"{user}|{method}|{seed}", "user": user, "method": method, "seed": seed, "curve": result["curve"],
            "updates": result["updates"], "seconds": time.perf_counter() - start,
            "before": result["before"][:32], "after": result["after"][:32]}


def run(out: Path, users: list[str], seeds: int, methods: list[str] | None = None, budget: int = 30, papa_budget: int = 60,
        per_round: int = 10, papa_per_round: int = 10, candidates: int = 24, eval_samples: int = 64, workers: int = 1) -> dict:
    """Run every (user, method, seed) of ``methods`` not yet in ``align_runs.jsonl``, then summarise, plot and print.

    The summary covers every run in ``align_runs.jsonl`` (all users, methods and seeds there, each method's
    seed count reported), so running one more user or seed adds to ``align.json`` instead of replacing it.
    """
    methods = sorted(methods or ["ours", "random"] + [f"papa@{lr:g}" for lr in PAPA_LRS], key=_method_order)
    if unknown := [u for u in users if u not in USER_PRESETS]:
        raise ValueError(f"unknown simulated user(s) {unknown}; choose from {sorted(USER_PRESETS)}")
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "align_runs.jsonl"
    runs = {json.loads(line)["key"]: json.loads(line) for line in runs_path.read_text().splitlines()} if runs_path.exists() else {}
    settings = {"budget": budget, "papa_budget": papa_budget, "per_round": per_round, "papa_per_round": papa_per_round,
                "candidates": candidates, "eval_samples": eval_samples}
    jobs = [(u, m, s, settings) for u in users for s in range(seeds) for m in methods if f"{u}|{m}|{s}" not in runs]
    print(f"{len(runs)} runs already done, {len(jobs)} to run on {workers} worker(s)", flush=True)
    started = time.perf_counter()
    with runs_path.open("a") as sink:
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        results = pool.map(_run_job, jobs) if pool else map(_run_job, jobs)
        for record in results:
            before, after = record.pop("before"), record.pop("after")
            if record["seed"] == 0:
                save_grid(before, out / f"align_{record['user']}_before.png", columns=8)
                save_grid(after, out / f"align_{record['user']}_{record['method'].replace('@', '_')}_after.png", columns=8)
            runs[record["key"]] = record
            sink.write(json.dumps(record) + "\n")
            sink.flush()
            first, last = record["curve"][0], record["curve"][-1]
            print(f"{record['user']:16} {record['method']:12} seed {record['seed']}: share {first['share']:.2f} -> "
                  f"{last['share']:.2f} after {last['actions']} actions ({record['seconds']:.0f} s)", flush=True)
        if pool:
            pool.shutdown()
    summarised = sorted({r["method"] for r in runs.values()}, key=_method_order)
    summary = summarise(list(runs.values()), summarised)
    report = {"benchmark": "align", "users": list(summary), "ran_now": {"users": users, "seeds": list(range(seeds)), "methods": methods},
              "methods": summarised, **settings,
              "environment": environment(), "wall_seconds": time.perf_counter() - started, "summary": summary}
    write_json(out / "align.json", report)
    plot(summary, out / "align.png")
    print(format_table(summary))
    return report


def _method_order(method: str) -> tuple:
    """Sort key that also checks the name: our variants in ``OURS_METHODS`` order, then the PAPA grid by learning rate."""
    try:
        rank, rate = ((len(OURS_METHODS), float(method.removeprefix("papa@"))) if method.startswith("papa@")
                      else (list(OURS_METHODS).index(method), 0.0))
    except ValueError:
        rank, rate = None, 0.0
    if rank is None or (rank == len(OURS_METHODS) and not rate > 0):
        raise ValueError(f"unknown align method {method!r}: use {', '.join(OURS_METHODS)} or papa@<learning rate>, e.g. papa@3e-5")
    return rank, rate


def summarise(runs: list[dict], methods: list[str]) -> dict:
    summary = {}
    for user in dict.fromkeys(r["user"] for r in runs):
        per_method = {}
        for method in methods:
            rows = sorted((r for r in runs if r["user"] == user and r["method"] == method), key=lambda r: r["seed"])
            if not rows:
                continue
            actions = [p["actions"] for p in rows[0]["curve"]]
            share = np.array([[p["share"] for p in r["curve"]] for r in rows])
            utility = np.array([[p["utility"] for p in r["curve"]] for r in rows])
            drift = np.array([[p["drift"] for p in r["curve"]] for r in rows])
            update_seconds = [u["seconds"] for r in rows for u in r["updates"]]
            per_method[method] = {"n_seeds": len(rows), "actions": actions, "share": mean_ci(share, bounds=(0.0, 1.0)), "utility": mean_ci(utility),
                                  "drift": mean_ci(drift), "seconds_per_update": float(np.mean(update_seconds))}
        papa = {m: v for m, v in per_method.items() if m.startswith("papa")}
        if papa:
            best = max(papa, key=lambda m: papa[m]["share"]["mean"][-1])
            per_method["papa_best"] = best
            final = papa[best]["share"]["mean"][-1]
            budget = papa[best]["actions"][-1]
            peak = max(max(v["share"]["mean"][1:]) for v in papa.values())  # PAPA's best point after any feedback
            if "ours" in per_method:
                ours = per_method["ours"]
                first = lambda target: next((a for a, s in zip(ours["actions"], ours["share"]["mean"]) if a and s >= target), None)  # noqa: E731
                per_method.update(ours_actions_to_papa_final=first(final), papa_final_share=final, papa_budget=budget,
                                  papa_peak_share=peak, ours_actions_to_papa_peak=first(peak))
        summary[user] = per_method
    return summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = list(summary)
    methods = sorted({m for u in users for m, v in summary[u].items() if isinstance(v, dict)}, key=_method_order)
    colors = {m: "black" if m == "ours" else f"C{i}" for i, m in enumerate(methods)}  # one colour per method in every panel
    fig, axes = plt.subplots(1, len(users), figsize=(4.2 * len(users), 3.4), squeeze=False)
    for ax, user in zip(axes[0], users):
        for method, data in summary[user].items():
            if not isinstance(data, dict):
                continue
            share = data["share"]
            ax.plot(data["actions"], share["mean"], marker="o", ms=3, label=method, color=colors[method],
                    lw=2.4 if method == "ours" else 1.2)
            ax.fill_between(data["actions"], share["lo"], share["hi"], alpha=0.15, color=colors[method])
        ax.set_title(user)
        ax.set_xlabel("human actions")
        ax.set_ylabel("share preferred")
        ax.set_ylim(0, 1)
    handles = {line.get_label(): line for ax in axes[0] for line in ax.get_lines()}
    axes[0][0].legend([handles[m] for m in methods], methods, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(summary: dict) -> str:
    lines = []
    for user, methods in summary.items():
        lines.append(f"\n{user}:")
        for method, data in methods.items():
            if not isinstance(data, dict):
                continue
            share = data["share"]
            points = ", ".join(f"{a}: {m:.2f} [{lo:.2f}, {hi:.2f}]" for a, m, lo, hi in zip(data["actions"], share["mean"], share["lo"], share["hi"]))
            lines.append(f"  {method:12} share by actions  {points}  (drift {data['drift']['mean'][-1]:.3f}, "
                         f"{data['seconds_per_update']:.1f} s/update, {data['n_seeds']} seeds)")
        if "papa_final_share" in methods:
            lines.append(f"  PAPA best ({methods['papa_best']}) reaches {methods['papa_final_share']:.2f} at {methods['papa_budget']} actions; "
                         f"ours reaches it at {methods['ours_actions_to_papa_final']} actions; PAPA's peak over all its "
                         f"learning rates and budgets is {methods['papa_peak_share']:.2f}, ours reaches it at "
                         f"{methods['ours_actions_to_papa_peak']} actions")
    return "\n".join(lines)
