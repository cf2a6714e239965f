"""``edpbrl bench align``: personalizing the embedded generator per human action, ours vs the PAPA loop.

Simulated users with hidden attribute tastes judge what they see (encoder + pixels). Methods:

* ``ours``: designed pair questions (θ-aware D-optimal on freshly sampled candidates) -> reward model
  -> the default update (learned-reward distillation from the base pool, a fresh start each update, drift cap);
* ``random``: random pairs + the same updates;
* ``ours-fresh``: ``ours`` with half of each round's candidates from the base model (``base_share=0.5``), so
  what a first update fitted on few noisy answers makes is not all that later questions can show (it also
  started every update from the base model before that became the default);
* ``ours-k4``: ``ours`` asking 4-way questions ("which of these four do you like best?", one click = one
  action, as in ED-PBRL's K-way queries): a pick among four carries more than a pair, and four random base
  samples hold a liked one far more often than two, so a teacher without a "tie" answer flips fewer coins;
* ``papa@<lr>``: the PAPA loop: like/dislike on every sample shown, their signed ELBO-weighted loss with
  the base pull, learning rate from a small grid (every grid point is run and reported);
* ``papa-full@<lr>``, ``epapa-full@<lr>``, ``papa-lora@<lr>``, ``epapa-lora@<lr>``: PAPA and EPAPA as their code
  runs them (:mod:`~edpbrl_plugin.bench.peers.papa`: full fine-tuning or a LoRA, raw ELBO weights), on the
  real-data models (``--model digits|fashion``), PAPA's own setting;
* ``d3po@<lr>``: D3PO as its code runs it (:mod:`~edpbrl_plugin.bench.peers.d3po`: pair answers, a LoRA trained
  on the denoising chain against the frozen base), the baseline PAPA compares against, on the real-data models.

One pair answer = one like/dislike label = one action. "Share preferred" = the fraction of fresh
samples (fixed evaluation seeds) that are well formed and carry every liked value and no disliked one,
judged by the encoder, pixels and the form judge, never by the learned reward. After the last round each
run's model is also measured against the base model (:mod:`~edpbrl_plugin.simulate.evaluation`): win rate
on paired samples, well-formed rate, prompt adherence, variety of what the user is indifferent to, and
fidelity. Runs are resumable (``align_runs.jsonl``).

``model``: ``shapes`` (the styled-shapes model, attribute tastes, prompts) or ``digits`` / ``fashion`` (the
unconditional MNIST / Fashion-MNIST models, PAPA's class tastes judged by the classifier, no prompts).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch

from ..imaging import save_grid
from ..loop.loop import PersonalizationLoop
from ..loop.session import PersonalizationSession
from ..models.digits import DigitsEncoder
from ..models.digits import load_pipeline as load_class_pipeline
from ..models.digits.judge import ClassJudge
from ..models.shapes import AttributeJudge, EmbeddedEncoder
from ..models.shapes.weights import load_pipeline
from ..simulate.evaluation import PROMPT_SEED, Reference, compare, random_prompts
from ..simulate.people import CLASS_USER_PRESETS, USER_PRESETS, make_user
from ..tuning.updater import UpdateConfig
from .common import environment, markdown_table, mean_ci, write_json
from .peers.d3po import D3poPeer
from .peers.papa import PapaPeer

USERS = ("blue", "star-not-black", "blue-outline", "noisy-blue", "mistaken-blue")
MODELS = ("shapes", "digits", "fashion")
#: The simulated people of each model (``--users`` must be among them).
MODEL_USERS = {
    "shapes": tuple(USER_PRESETS),
    **{
        model: tuple(n for n, (taste, _) in CLASS_USER_PRESETS.items() if taste.dataset == model)
        for model in MODELS[1:]
    },
}
#: The faithful PAPA peer's variants: (trainable weights, EPAPA's first tuned timestep).
PEER_METHODS = {
    "papa-full": ("full", 0),
    "epapa-full": ("full", 400),
    "papa-lora": ("lora", 0),
    "epapa-lora": ("lora", 400),
}
#: D3PO's family name (``d3po@<lr>``): pair answers, one action each.
D3PO = "d3po"

#: The faithful peer's curve: a point after each of its first three rounds (our loop's whole budget), then every
#: third round (sampling the evaluation set after each of 30 rounds was most of a run's hour on a CPU).
PEER_EVAL_EVERY = 3
#: Labels the PAPA methods get: on the real-data models PAPA's own 30 rounds x 10 like/dislike labels.
PAPA_BUDGET = {"shapes": 60, "digits": 300, "fashion": 300}
EASY_USERS = ("blue",)
PAPA_LRS = (3e-5, 1e-4, 3e-4, 1e-3)
QUICK_PAPA_LR = 3e-5  # best of the grid on the quick user (blue): the highest final share, 5 seeds at 3e-5 vs seed 0 at the others (align_runs.jsonl)
#: ``--quick``: one easy user, 3 seeds, ours vs PAPA at its best learning rate, shorter budgets (<= 20 min on 2 cores)
QUICK = {"users": ["blue"], "seeds": 3, "budget": 20, "papa_budget": 30, "eval_samples": 32}
EVAL_SEED = 50_000
#: Our loop's variants: :func:`run_loop` settings, "update" holding :class:`UpdateConfig` overrides
#: (every other method is papa@<learning rate>).
OURS_METHODS: dict[str, dict] = {
    "ours": {},
    "random": {"strategy": "random"},
    "ours-fresh": {"base_share": 0.5},
    "ours-k4": {"k": 4},
    "ours-check": {"checks": 2},
}


class Bench:
    """Shared state of one benchmark process: encoder, judge and evaluation settings."""

    def __init__(
        self,
        eval_samples: int = 64,
        prompt: str = "",
        prompted_samples: int = 64,
        model: str = "shapes",
        reference_samples: int = 1024,
    ):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
        self.model = model
        if model == "shapes":
            self.encoder = EmbeddedEncoder()
            self.judge = AttributeJudge(self.encoder)
            self.prompts, self.wanted = random_prompts(prompted_samples, PROMPT_SEED)
        else:  # unconditional: no prompts to follow
            self.encoder = DigitsEncoder(model)
            self.judge = ClassJudge(model, encoder=self.encoder)
            self.prompts, self.wanted = [], []
        self.eval_samples = eval_samples
        self.reference_samples = reference_samples
        self.prompt = prompt
        self._base: dict[int, tuple[dict, np.ndarray]] = {}  # judged base samples, by EPAPA's min timestep
        self._base_prompted: dict[int, dict] = {}
        self._reference: Reference | None = None

    def pipeline(self):
        """A fresh copy of this benchmark's base model."""
        return load_pipeline() if self.model == "shapes" else load_class_pipeline(self.model)

    def quality(self, loop, user, images: np.ndarray) -> tuple[dict, dict]:
        """The tuned model (whose evaluation samples are ``images``) and the base model, side by side. ``loop``: a
        :class:`PersonalizationLoop` or the PAPA peer (``pipe``, ``min_timestep``, ``images``)."""
        if self._reference is None:
            self._reference = Reference.sample(loop.pipe, self.judge, self.reference_samples)
        base_labels, base_images = self._base[loop.min_timestep]
        if loop.min_timestep not in self._base_prompted:
            raise RuntimeError("Bench.quality needs the base model's prompted samples: call it with base=True first")
        prompted = self.judge(loop.images(len(self.prompts), PROMPT_SEED, self.prompts)) if self.prompts else None
        base = (base_images, base_labels)
        tuned = compare(user.taste, (images, self.judge(images)), base, prompted, self.wanted, self._reference)
        base_side = compare(
            user.taste, base, base, self._base_prompted[loop.min_timestep], self.wanted, self._reference
        )
        return tuned, base_side

    def evaluate(self, loop, user, base: bool = False) -> tuple[dict, np.ndarray]:
        """Share preferred and mean utility of the loop's model on the fixed evaluation seeds (the same sampler
        and seeds before and after every update, so the base point is the model the first update starts from).

        ``base``: the loop's model is still the base model; its samples are the same in every run, so they are
        sampled and judged once per process.
        """
        if base and self._reference is None:  # before any training: a fully fine-tuned peer has no adapter to turn off
            self._reference = Reference.sample(loop.pipe, self.judge, self.reference_samples)
        if base and loop.min_timestep in self._base:
            labels, images = self._base[loop.min_timestep]
        else:
            images = loop.images(self.eval_samples, EVAL_SEED)
            labels = self.judge(images)
            if base:
                self._base[loop.min_timestep] = labels, images
                prompted = loop.images(len(self.prompts), PROMPT_SEED, self.prompts) if self.prompts else None
                self._base_prompted[loop.min_timestep] = None if prompted is None else self.judge(prompted)
        taste = user.taste
        broken = -taste.weight * (len(taste.likes) + len(getattr(taste, "dislikes", ())) + 1)  # below any formed image
        return {
            "share": float(taste.preferred(labels).mean()),
            "utility": float(np.maximum(taste.utility(labels), broken).mean()),
        }, images


def run_loop(
    bench: Bench,
    user_name: str,
    seed: int,
    budget: int,
    per_round: int,
    candidates: int,
    config: UpdateConfig,
    k: int = 2,
    strategy: str = "d_optimal",
    base_share: float = 0.0,
    checks: int = 0,
    quality: bool = True,
) -> dict:
    """One run of the loop until ``budget`` human actions: our variants (K-way questions on ``candidates``
    fresh samples a round) and PAPA's (k = 1: like / dislike each of ``per_round`` fresh samples). ``quality``:
    measure the final model against the base (:meth:`Bench.quality`)."""
    user = make_user(user_name, seed=seed, judge=bench.judge)
    answer = user.answer if k > 1 else (lambda images: user.rate(images)[0])
    with tempfile.TemporaryDirectory() as tmp:
        session = PersonalizationSession(Path(tmp) / "store.db", "bench", encoder=bench.encoder, strategy=strategy)
        loop = PersonalizationLoop(
            session,
            bench.pipeline(),
            config,
            [bench.prompt],
            k=k,
            strategy=strategy,
            base_share=base_share,
            checks=checks,
        )
        point, images = bench.evaluate(loop, user, base=True)
        curve, updates, first_images = [{"actions": 0, **point, "drift": 0.0}], [], images
        actions, round_ = 0, 0
        while actions < budget:
            round_ += 1
            n = min(per_round, budget - actions)
            pool = candidates if k > 1 else n
            done = loop.run_round(answer, pool, n, seed=seed * 1_000_003 + round_ * pool, question_seed=seed + round_)
            actions += len(done.answers)
            report = done.report
            updates.append(
                {
                    "actions": actions,
                    "steps": report.steps,
                    "seconds": report.seconds,
                    "drift": report.drift,
                    "stopped": report.stopped,
                    "check_win_rate": None if done.check is None else done.check.win_rate,
                    "rolled_back": done.check is not None and done.check.rolled_back,
                }
            )
            point, images = bench.evaluate(loop, user)
            curve.append({"actions": actions, **point, "drift": report.drift})
        quality, base_quality = bench.quality(loop, user, images) if quality else (None, None)
    return {
        "curve": curve,
        "updates": updates,
        "before": first_images,
        "after": images,
        "quality": quality,
        "base_quality": base_quality,
    }


class _PeerRun:
    """A faithful peer (PAPA or D3PO) seen by :class:`Bench` as a loop: its pipeline, EPAPA's gate and its
    samples."""

    def __init__(self, peer: PapaPeer | D3poPeer):
        self.peer, self.pipe, self.min_timestep = peer, peer.pipe, peer.k

    def images(self, n: int, seed: int, prompts=None) -> np.ndarray:
        return self.peer.images(n, seed)


def run_peer(bench: Bench, user_name: str, seed: int, budget: int, per_round: int, method: str, quality: bool = True):
    """One run of a faithful peer (``<PAPA variant>@<learning rate>`` or ``d3po@<learning rate>``) until
    ``budget`` actions: like/dislike labels for PAPA, pair answers for D3PO."""
    variant, rate = method.split("@")
    user = make_user(user_name, seed=seed, judge=bench.judge)
    if variant == D3PO:
        peer, feedback = D3poPeer(bench.pipeline(), learning_rate=float(rate), seed=seed), user.answer
    else:
        trainable, k = PEER_METHODS[variant]
        peer = PapaPeer(bench.pipeline(), trainable=trainable, learning_rate=float(rate), epapa_k=k, seed=seed)
        feedback = user.rate
    run = _PeerRun(peer)
    point, images = bench.evaluate(run, user, base=True)
    curve, updates, first_images = [{"actions": 0, **point, "drift": 0.0}], [], images
    actions, round_ = 0, 0
    while actions < budget:
        round_ += 1
        n = min(per_round, budget - actions)
        started = time.perf_counter()
        peer.round(feedback, n, seed * 1_000_003 + round_ * n)
        actions += n
        drift = peer.drift()
        updates.append({"actions": actions, "steps": n, "seconds": time.perf_counter() - started, "drift": drift})
        if round_ <= 3 or round_ % PEER_EVAL_EVERY == 0 or actions >= budget:
            point, images = bench.evaluate(run, user)
            curve.append({"actions": actions, **point, "drift": drift})
    quality_, base_quality = bench.quality(run, user, images) if quality else (None, None)
    return {
        "curve": curve,
        "updates": updates,
        "before": first_images,
        "after": images,
        "quality": quality_,
        "base_quality": base_quality,
    }


def papa_config(seed: int, learning_rate: float) -> UpdateConfig:
    """PAPA as its paper runs it: its loss and base pull only, no early stopping, no drift cap."""
    return UpdateConfig(
        method="papa", learning_rate=learning_rate, early_stopping=False, seed=seed, drift_cap=float("inf")
    )


_BENCH: Bench | None = None


def _run_job(job: tuple) -> dict:
    """One (user, method, seed) run; worker processes keep one :class:`Bench` each."""
    global _BENCH
    user, method, seed, settings = job
    torch.set_num_threads(settings["threads"])
    if _BENCH is None:
        _BENCH = Bench(eval_samples=settings["eval_samples"], model=settings["model"])
    start = time.perf_counter()
    if method in OURS_METHODS:
        variant = dict(OURS_METHODS[method])
        config = UpdateConfig(seed=seed, **{**variant.pop("update", {}), **settings["update"]})
        result = run_loop(
            _BENCH,
            user,
            seed,
            settings["budget"],
            settings["per_round"],
            settings["candidates"],
            config=config,
            **variant,
        )
    elif method.split("@")[0] in (*PEER_METHODS, D3PO):
        result = run_peer(_BENCH, user, seed, settings["papa_budget"], settings["papa_per_round"], method)
    else:
        config = papa_config(seed, float(method.split("@")[1]))
        result = run_loop(
            _BENCH, user, seed, settings["papa_budget"], settings["papa_per_round"], 0, config=config, k=1
        )
    return {
        "key": f"{user}|{method}|{seed}",
        "user": user,
        "method": method,
        "seed": seed,
        "curve": result["curve"],
        "updates": result["updates"],
        "seconds": time.perf_counter() - start,
        "update": settings["update"],
        "model": settings["model"],
        "quality": result["quality"],
        "base_quality": result["base_quality"],
        "before": result["before"][:32],
        "after": result["after"][:32],
    }


def run(
    out: Path,
    users: list[str],
    seeds: int,
    methods: list[str] | None = None,
    budget: int = 30,
    papa_budget: int | None = None,
    per_round: int = 10,
    papa_per_round: int = 10,
    candidates: int = 24,
    eval_samples: int = 64,
    workers: int = 1,
    budget_minutes: float | None = None,
    update: dict | None = None,
    baseline: Path | None = None,
    model: str = "shapes",
) -> dict:
    """Run every (user, method, seed) of ``methods`` not yet in ``align_runs.jsonl``, then summarise, plot and print.

    The summary covers every run in ``align_runs.jsonl`` (all users, methods and seeds there, each method's
    seed count reported), so running one more user or seed adds to ``align.json`` instead of replacing it.
    ``workers`` processes run one job each on one thread. ``budget_minutes``: start no job after that many
    minutes (running ones finish; run again to resume). ``update``: :class:`UpdateConfig` overrides for our
    methods (a study of the loop's settings; such runs need their own ``out``). ``baseline``: another
    ``align_runs.jsonl`` whose final shares are printed beside these, with whether each mean lies inside the
    baseline's 95% interval. ``model``: which embedded model (``MODELS``); ``users`` must be its people.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    default = [f"papa@{lr:g}" for lr in PAPA_LRS] if model == "shapes" else ["papa-full@1e-05", "epapa-full@1e-05"]
    methods = sorted(methods or ["ours", "random"] + default, key=check_method)
    if unknown := [u for u in users if u not in MODEL_USERS[model]]:
        raise ValueError(
            f"unknown simulated user(s) {unknown} for model {model}; choose from {list(MODEL_USERS[model])}"
        )
    papa_budget = papa_budget or PAPA_BUDGET[model]
    update = dict(update or {})
    UpdateConfig(**update)  # bad overrides fail before any run
    out.mkdir(parents=True, exist_ok=True)
    runs_path = out / "align_runs.jsonl"
    runs = _read_runs(runs_path)
    if mixed := {r["key"] for r in runs.values() if r.get("update", {}) != update or r.get("model", "shapes") != model}:
        raise ValueError(
            f"{runs_path} holds runs with other update settings or another model ({sorted(mixed)[0]}, ...); "
            "use another --out"
        )
    settings = {
        "budget": budget,
        "papa_budget": papa_budget,
        "per_round": per_round,
        "papa_per_round": papa_per_round,
        "candidates": candidates,
        "eval_samples": eval_samples,
        "update": update,
        "threads": max(1, (os.cpu_count() or 1) // workers),
        "model": model,
    }
    jobs = [(u, m, s, settings) for u in users for s in range(seeds) for m in methods if f"{u}|{m}|{s}" not in runs]
    print(f"{len(runs)} runs already done, {len(jobs)} to run on {workers} worker(s)", flush=True)
    started = time.perf_counter()
    deadline = None if budget_minutes is None else started + 60 * budget_minutes
    with runs_path.open("a") as sink, ProcessPoolExecutor(workers) as pool:
        pending, queued = set(), iter(jobs)
        while True:
            while len(pending) < workers and (deadline is None or time.perf_counter() < deadline):
                job = next(queued, None)
                if job is None:
                    break
                pending.add(pool.submit(_run_job, job))
            if not pending:
                break
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                record = future.result()
                _keep(record, out)
                runs[record["key"]] = record
                sink.write(json.dumps(record) + "\n")
                sink.flush()
    left = len(jobs) - sum(1 for u, m, s, _ in jobs if f"{u}|{m}|{s}" in runs)
    if left:
        print(f"stopped at the {budget_minutes:g}-minute budget with {left} runs left; run again to resume", flush=True)
    summarised = sorted({r["method"] for r in runs.values()}, key=check_method)
    summary = summarise(list(runs.values()), summarised)
    report = {
        "benchmark": "align",
        "users": list(summary),
        "ran_now": {"users": users, "seeds": list(range(seeds)), "methods": methods, "runs_left": left},
        "methods": summarised,
        **settings,
        "workers": workers,
        "environment": environment(),
        "wall_seconds": time.perf_counter() - started,
        "summary": summary,
    }
    if baseline is not None:
        old = list(_read_runs(baseline).values())
        report["baseline"] = {
            "runs": str(baseline),
            "summary": summarise(old, sorted({r["method"] for r in old}, key=check_method)),
        }
    write_json(out / "align.json", report)
    if summary:
        plot(summary, out / "align.png")
    print(format_table(summary))
    print(format_markdown(summary))
    if baseline is not None:
        print(format_comparison(summary, report["baseline"]["summary"]))
    print(f"wall time {report['wall_seconds'] / 60:.1f} min on {workers} worker(s)")
    return report


def _read_runs(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    return {(r := json.loads(line))["key"]: r for line in path.read_text().splitlines() if line.strip()}


def _keep(record: dict, out: Path) -> None:
    """Print one finished run and save seed 0's before / after grids (the images leave the record)."""
    before, after = record.pop("before"), record.pop("after")
    if record["seed"] == 0:
        save_grid(before, out / f"align_{record['user']}_before.png", columns=8)
        save_grid(after, out / f"align_{record['user']}_{record['method'].replace('@', '_')}_after.png", columns=8)
    first, last = record["curve"][0], record["curve"][-1]
    print(
        f"{record['user']:16} {record['method']:12} seed {record['seed']}: share {first['share']:.2f} -> "
        f"{last['share']:.2f} after {last['actions']} actions ({record['seconds']:.0f} s)",
        flush=True,
    )


def format_quality(quality: dict) -> str:
    """One block per method: each final model number, tuned vs base (mean [95% interval] over seeds)."""

    def cell(entry: dict, key: str | None = None) -> str:
        value = entry if key is None else {k: entry[k] for k in ("mean", "lo", "hi")}
        return f"{value['mean']:.2f} [{value['lo']:.2f}, {value['hi']:.2f}]"

    lines = []
    for key, label in (
        ("win_rate", "win rate vs base"),
        ("share_as_papa_counts", "liked by the classifier's argmax (PAPA's measure)"),
        ("well_formed", "well formed"),
        ("well_formed_prompted", "well formed (prompted)"),
        ("fidelity", "fidelity (Fréchet)"),
    ):
        entry = quality.get(key)
        if entry:
            lines.append(f"{label} {cell(entry['quality'])} (base {entry['base_quality']['mean']:.2f})")
    floor = quality.get("fidelity_floor")
    if floor:
        lines[-1] += f", floor {floor['quality']['mean']:.2f}"
    if entry := quality.get("liked_class_min"):
        lines.append(f"rarest liked class (fraction of preferred) {cell(entry['quality'])}")
    for key, label in (("adherence", "adherence"), ("variety", "variety TV")):
        entry = quality.get(key)
        if entry:
            parts = [
                f"{name} {cell(value)}"
                + (f" (base {entry['base_quality'][name]['mean']:.2f})" if key == "adherence" else "")
                for name, value in entry["quality"].items()
            ]
            lines.append(f"{label}: " + ", ".join(parts))
    lines.append(f"runs with win rate < 0.5: {quality['win_rate_below_half']}")
    return "\n".join("               " + line for line in lines)


def format_comparison(summary: dict, baseline: dict) -> str:
    """Final share per user and method beside the baseline's, and whether the new mean is inside (or above)
    the baseline's 95% interval."""
    lines = ["\nfinal share, this run vs baseline (95% intervals):"]
    for user, methods in summary.items():
        for method, data in methods.items():
            old = baseline.get(user, {}).get(method)
            if not isinstance(data, dict) or not isinstance(old, dict):
                continue
            new_share, old_share = data["share"], old["share"]
            mean, lo, hi = new_share["mean"][-1], old_share["lo"][-1], old_share["hi"][-1]
            verdict = "inside" if lo <= mean <= hi else "above" if mean > hi else "BELOW"
            lines.append(
                f"  {user:16} {method:12} {mean:.2f} [{new_share['lo'][-1]:.2f}, {new_share['hi'][-1]:.2f}] "
                f"({data['n_seeds']} seeds) vs {old_share['mean'][-1]:.2f} [{lo:.2f}, {hi:.2f}] ({old['n_seeds']} seeds): "
                f"{verdict}; {data['seconds_per_update']:.1f} vs {old['seconds_per_update']:.1f} s/update"
            )
    return "\n".join(lines)


def check_method(method: str) -> tuple:
    """A method's sort key, which also checks its name: our variants in ``OURS_METHODS`` order, then each PAPA
    family (``papa``, then the faithful peer's ``PEER_METHODS``) by learning rate."""
    if method in OURS_METHODS:
        return list(OURS_METHODS).index(method), 0, 0.0
    family, _, rate = method.partition("@")
    families = ["papa", *PEER_METHODS, D3PO]
    try:
        value = float(rate)
    except ValueError:
        value = 0.0
    if family not in families or not value > 0:
        raise ValueError(
            f"unknown align method {method!r}: use {', '.join(OURS_METHODS)} or <papa family>@<learning rate> "
            f"with a family among {', '.join(families)}, e.g. papa@3e-5 or epapa-full@1e-5"
        )
    return len(OURS_METHODS), families.index(family), value


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
            per_method[method] = {
                "n_seeds": len(rows),
                "actions": actions,
                "share": mean_ci(share, bounds=(0.0, 1.0)),
                "utility": mean_ci(utility),
                "drift": mean_ci(drift),
                "seconds_per_update": float(np.mean(update_seconds)),
                "below_base": int(sum(r["curve"][-1]["share"] < r["curve"][0]["share"] for r in rows)),
                "final_share_per_seed": {r["seed"]: r["curve"][-1]["share"] for r in rows},
            }
            if all("quality" in r for r in rows):
                per_method[method]["quality"] = summarise_quality(rows)
        papa = {m: v for m, v in per_method.items() if m.split("@")[0] in ("papa", *PEER_METHODS)}
        if papa:
            best = max(papa, key=lambda m: papa[m]["share"]["mean"][-1])
            per_method["papa_best"] = best
            final = papa[best]["share"]["mean"][-1]
            budget = papa[best]["actions"][-1]
            peak = max(max(v["share"]["mean"][1:]) for v in papa.values())  # PAPA's best point after any feedback
            if "ours" in per_method:
                ours = per_method["ours"]

                def first(target: float, ours: dict = ours) -> int | None:
                    return next((a for a, s in zip(ours["actions"], ours["share"]["mean"]) if a and s >= target), None)

                per_method.update(
                    ours_actions_to_papa_final=first(final),
                    papa_final_share=final,
                    papa_budget=budget,
                    papa_peak_share=peak,
                    ours_actions_to_papa_peak=first(peak),
                )
        summary[user] = per_method
    return summary


def summarise_quality(rows: list[dict]) -> dict:
    """Mean and 95% interval over seeds of each final model number, the base model's beside it."""

    def scalars(key: str) -> dict:
        out = {}
        for side in ("quality", "base_quality"):
            values = [r[side].get(key) for r in rows]
            if any(v is None for v in values):
                return {}
            bounds = (0.0, np.inf) if key.startswith("fidelity") else (0.0, 1.0)  # the rest are rates and distances
            if isinstance(values[0], dict):
                out[side] = {k: mean_ci([v[k] for v in values], bounds=bounds) for k in values[0]}
            else:
                out[side] = mean_ci(values, bounds=bounds)
        return out

    keys = (
        "share",
        "share_as_papa_counts",
        "well_formed",
        "well_formed_prompted",
        "win_rate",
        "fidelity",
        "fidelity_floor",
        "liked_class_min",
    )
    summary = {key: scalars(key) for key in keys + ("adherence", "variety")}
    summary["win_rate_below_half"] = int(sum(r["quality"]["win_rate"] < 0.5 for r in rows))
    return summary


def plot(summary: dict, path: Path):
    """Share preferred per action, a panel per user; writes ``path`` and returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = list(summary)
    methods = sorted({m for u in users for m, v in summary[u].items() if isinstance(v, dict)}, key=check_method)
    colors = {
        m: "black" if m == "ours" else f"C{i}" for i, m in enumerate(methods)
    }  # one colour per method in every panel
    fig, axes = plt.subplots(1, len(users), figsize=(4.2 * len(users), 3.4), squeeze=False)
    for ax, user in zip(axes[0], users):
        for method, data in summary[user].items():
            if not isinstance(data, dict):
                continue
            share = data["share"]
            ax.plot(
                data["actions"],
                share["mean"],
                marker="o",
                ms=3,
                label=method,
                color=colors[method],
                lw=2.4 if method == "ours" else 1.2,
            )
            ax.fill_between(data["actions"], share["lo"], share["hi"], alpha=0.15, color=colors[method])
            finals = list(data.get("final_share_per_seed", {}).values())  # one dot per seed: a runaway shows
            ax.scatter([data["actions"][-1]] * len(finals), finals, s=9, color=colors[method], alpha=0.6, zorder=3)
        ax.set_title(user)
        finals = [data["actions"][-1] for data in summary[user].values() if isinstance(data, dict)]
        if max(finals) >= 5 * min(finals):  # e.g. ours at 30 answers beside a peer at 300 labels: spread both out
            ax.set_xscale("symlog", linthresh=10, linscale=0.5)
            ticks = [t for t in (0, 10, 30, 100, 300, 1000) if t <= max(finals)]
            ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("human actions")
        ax.set_ylabel("share preferred")
        ax.set_ylim(0, 1)
    handles = {line.get_label(): line for ax in axes[0] for line in ax.get_lines()}
    axes[0][0].legend([handles[m] for m in methods], methods, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return fig


def format_markdown(summary: dict) -> str:
    """One markdown table per user, a row per method: the final share (mean [95% interval] and each seed's) and
    the final model's numbers beside the base's; what ``docs/benchmarks.md`` copies."""

    def cell(entry: dict | None, base: bool = False) -> str:
        if not entry:
            return "–"
        value = f"{entry['quality']['mean']:.2f} [{entry['quality']['lo']:.2f}, {entry['quality']['hi']:.2f}]"
        return value + (f" (base {entry['base_quality']['mean']:.2f})" if base else "")

    header = ["method", "seeds", "actions", "share", "each seed", "win rate vs base", "well formed", "fidelity",
              "rarest liked class"]  # fmt: skip
    tables = []
    for user, methods in summary.items():
        rows = []
        for method, data in methods.items():
            if not isinstance(data, dict):
                continue
            share, quality = data["share"], data.get("quality", {})
            rows.append(
                [
                    f"`{method}`",
                    data["n_seeds"],
                    data["actions"][-1],
                    f"{share['mean'][0]:.2f} → **{share['mean'][-1]:.2f}** [{share['lo'][-1]:.2f}, {share['hi'][-1]:.2f}]",
                    ", ".join(f"{v:.2f}" for v in data.get("final_share_per_seed", {}).values()),
                    cell(quality.get("win_rate")),
                    cell(quality.get("well_formed"), base=True),
                    cell(quality.get("fidelity"), base=True),
                    cell(quality.get("liked_class_min")),
                ]
            )
        tables.append(f"{user}:\n\n" + markdown_table(header, rows))
    return "\n\n".join(tables)


def format_table(summary: dict) -> str:
    lines = []
    for user, methods in summary.items():
        lines.append(f"\n{user}:")
        for method, data in methods.items():
            if not isinstance(data, dict):
                continue
            share = data["share"]
            points = ", ".join(
                f"{a}: {m:.2f} [{lo:.2f}, {hi:.2f}]"
                for a, m, lo, hi in zip(data["actions"], share["mean"], share["lo"], share["hi"])
            )
            lines.append(
                f"  {method:12} share by actions  {points}  (drift {data['drift']['mean'][-1]:.3f}, "
                f"{data['seconds_per_update']:.1f} s/update, {data['n_seeds']} seeds, "
                f"{data['below_base']} ending below the base share)"
            )
            if seeds := data.get("final_share_per_seed"):
                lines.append("    final share per seed: " + ", ".join(f"{k}: {v:.2f}" for k, v in seeds.items()))
            if "quality" in data:
                lines.append(format_quality(data["quality"]))
        if "papa_final_share" in methods:
            lines.append(
                f"  PAPA best ({methods['papa_best']}) reaches {methods['papa_final_share']:.2f} at {methods['papa_budget']} actions; "
                f"ours reaches it at {methods['ours_actions_to_papa_final']} actions; PAPA's peak over all its "
                f"learning rates and budgets is {methods['papa_peak_share']:.2f}, ours reaches it at "
                f"{methods['ours_actions_to_papa_peak']} actions"
            )
    return "\n".join(lines)
