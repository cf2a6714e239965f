"""``edpbrl`` command line: the personalization demo and the benchmarks.

A bad argument value ends with status 2 and one line saying what was wrong (argparse's ``error``), before
anything is loaded or written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import __version__


def _at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


_count, _seed = _at_least(1), _at_least(0)


def _positive(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _overrides(items: list[str], parser: argparse.ArgumentParser) -> dict:
    """``KEY=VALUE`` strings -> :class:`UpdateConfig` overrides, each value read as JSON (numbers, true/false)
    and else kept as text; unknown keys and bad values are argparse errors."""
    import json
    from dataclasses import fields

    from .tuning.updater import UpdateConfig

    known = {f.name for f in fields(UpdateConfig)}
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            parser.error(f"--update {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(known))}")
        try:
            overrides[key] = json.loads(text)
        except ValueError:
            overrides[key] = text
    try:
        UpdateConfig(**overrides)
    except (TypeError, ValueError) as error:
        parser.error(f"--update: {error}")
    return overrides


def _names(text: str, known, what: str, parser: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"unknown {what} {', '.join(unknown) or repr(text)}; choose from {', '.join(known)}")
    return names


#: The embedded models ``--model`` picks: styled shapes (prompts), PAPA's unconditional MNIST / Fashion-MNIST.
EMBEDDED_MODELS = ("shapes", "digits", "fashion")


def _check_model(model: str, parser: argparse.ArgumentParser) -> None:
    """A real-data model's shipped weights are here, or a one-line error saying how to train them."""
    from .models.digits.weights import check_shipped

    try:
        check_shipped(model)
    except FileNotFoundError as error:
        parser.error(f"--model {model}: {error}")


def _add_bench(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks (JSON + plots, seeds and confidence intervals)")
    which = bench.add_subparsers(dest="bench", required=True)

    queries = which.add_parser("queries", help="learning curves per query strategy (issue: engine)")
    queries.add_argument("--settings", default="A,B,C-w10-k2,C-w50-k2,C-w10-k4,C-w50-k4,D")
    queries.add_argument("--strategies", default=None, help="comma list (default: all, with the BoTorch peer)")
    queries.add_argument("--seeds", type=_count, default=20)
    queries.add_argument("--answers", type=_count, default=60)
    queries.add_argument("--workers", type=_count, default=1)
    queries.add_argument("--no-peer", action="store_true", help="skip BoTorch's PairwiseGP + EUBO")
    queries.add_argument("--out", default="bench_results")

    select = which.add_parser("select", help="time to choose a question among N candidates")
    select.add_argument("--repeat", type=_count, default=50)
    select.add_argument("--out", default="bench_results")

    speed = which.add_parser("speed", help="seconds per stage of a loop round, before vs after the speed settings")
    speed.add_argument("--seeds", type=_count, default=5)
    speed.add_argument("--repeat", type=_count, default=3, help="timings of each SD 1.5-shaped piece")
    speed.add_argument("--no-sd", action="store_true", help="skip the SD 1.5-shaped part (minutes on a CPU)")
    speed.add_argument("--out", default="bench_results")

    embedded = which.add_parser("embedded", help="quality of the shipped generator and encoder (issue: embedded model)")
    embedded.add_argument("--samples", type=_count, default=256)
    embedded.add_argument("--seed", type=_seed, default=0)
    embedded.add_argument("--out", default="bench_results")

    digits = which.add_parser("digits", help="quality of the real-data models (MNIST digits, Fashion-MNIST)")
    digits.add_argument("--model", choices=["digits", "fashion"], default="digits")
    digits.add_argument("--samples", type=_count, default=1000)
    digits.add_argument("--seed", type=_seed, default=0)
    digits.add_argument("--out", default="bench_results")

    sampler = which.add_parser(
        "sampler", help="samplers of the real-data models, on the base and after EPAPA's first round"
    )
    sampler.add_argument("--model", choices=["digits", "fashion"], default="fashion")
    sampler.add_argument("--seeds", type=_count, default=3)
    sampler.add_argument("--samples", type=_count, default=32, help="images per seed, model and sampler")
    sampler.add_argument("--out", default="bench_results")

    judge = which.add_parser("judge", help="validate the well-formedness judge on graded damage and base samples")
    judge.add_argument("--model", choices=["shapes", "digits", "fashion"], default="shapes")
    judge.add_argument("--samples", type=_count, default=128, help="images per damage kind and severity")
    judge.add_argument("--base-samples", type=_count, default=256)
    judge.add_argument("--seed", type=_seed, default=0)
    judge.add_argument("--out", default="bench_results")

    update = which.add_parser("update", help="one update on the same answers under several update settings")
    update.add_argument("--users", default="blue-outline,mistaken-blue")
    update.add_argument("--seeds", type=_count, default=1)
    update.add_argument("--rounds", type=_count, default=3, help="rounds of 10 answers before the update")
    update.add_argument(
        "--settings",
        default="default;method=dpo;dpo_positive=30,method=dpo",
        help="';'-separated UpdateConfig overrides, each 'default' or key=value[,key=value]",
    )
    update.add_argument("--out", default="bench_results/update")

    align = which.add_parser("align", help="personalizing the embedded model per human action vs the PAPA loop")
    align.add_argument("--quick", action="store_true", help="one user, 3 seeds, ours vs PAPA at its best learning rate")
    align.add_argument(
        "--model",
        choices=EMBEDDED_MODELS,
        default="shapes",
        help="the embedded model: styled shapes, or PAPA's setting (MNIST digits / Fashion-MNIST, unconditional)",
    )
    align.add_argument(
        "--users",
        default=None,
        help="comma list (default: blue, star-not-black, blue-outline, noisy-blue, mistaken-blue on shapes; "
        "papa-digits / papa-fashion on digits / fashion)",
    )
    align.add_argument(
        "--methods",
        default=None,
        help="comma list of ours, random, ours-fresh, ours-k4, papa@<lr>; on digits / fashion also papa-full@<lr>, "
        "epapa-full@<lr>, papa-lora@<lr>, epapa-lora@<lr> and D3PO as d3po@<lr> (default: ours, random and PAPA at 3e-5, 1e-4, 3e-4, "
        "1e-3 on shapes; ours, random, papa-full@1e-5 and epapa-full@1e-5 on digits / fashion)",
    )
    align.add_argument("--seeds", type=_count, default=5)
    align.add_argument(
        "--workers", type=_count, default=os.cpu_count() or 1, help="processes, one job each (default: the cores)"
    )
    align.add_argument(
        "--budget-minutes", type=_positive, default=None, help="start no run after this long; run again to resume"
    )
    align.add_argument(
        "--update",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an UpdateConfig override for our methods, e.g. --update steps=30 (repeatable; needs its own --out)",
    )
    align.add_argument("--baseline", default=None, help="an align_runs.jsonl to print the final shares beside")
    align.add_argument("--out", default="bench_results")

    store = which.add_parser("store", help="answers survive SIGKILL; answer throughput (issue: store)")
    store.add_argument("--trials", type=_count, default=200)
    store.add_argument("--out", default="bench_results")

    design = which.add_parser("design", help="Frank-Wolfe prompt design time and objective")
    design.add_argument("--repeat", type=_count, default=3)
    design.add_argument("--out", default="bench_results")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="edpbrl", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"edpbrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the personalization loop on the embedded model (offline)")
    demo.add_argument(
        "--model",
        choices=EMBEDDED_MODELS,
        default="shapes",
        help="the embedded model: styled shapes (prompts), or PAPA's setting: unconditional MNIST digits / Fashion-MNIST",
    )
    demo.add_argument(
        "--user",
        default=None,
        help="simulated user (see --list-users; default: blue-outline, or papa-digits / papa-fashion)",
    )
    demo.add_argument("--interactive", action="store_true", help="answer yourself in the terminal")
    demo.add_argument("--rounds", type=_count, default=3)
    demo.add_argument("--questions", type=_count, default=10, help="questions per round")
    demo.add_argument("--candidates", type=_count, default=24, help="candidates sampled per round")
    demo.add_argument(
        "--k",
        type=_count,
        default=2,
        help="options per question: 2 = A/B with tie; 4 = pick the best of four "
        "(better when answers are often random or never 'tie')",
    )
    demo.add_argument("--prompt", default="", help="prompt of every sample (empty: unconditional)")
    demo.add_argument("--seed", type=_seed, default=0)
    demo.add_argument("--generator", default=None, help="pipeline folder (default: the shipped embedded model)")
    demo.add_argument("--out", default="edpbrl_demo")
    demo.add_argument("--list-users", action="store_true")
    _add_bench(sub)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .learning._validation import check_query_size
        from .simulate.people import CLASS_USER_PRESETS, USER_PRESETS

        if args.model == "shapes":
            users = list(USER_PRESETS)
        else:
            users = [n for n, (taste, _) in CLASS_USER_PRESETS.items() if taste.dataset == args.model]
            if args.prompt or args.generator:
                parser.error(
                    f"--model {args.model} is unconditional and ships its own weights: drop --prompt / --generator"
                )
        args.user = args.user or ("blue-outline" if args.model == "shapes" else users[0])
        if not args.interactive and not args.list_users:
            _names(args.user, users, "simulated user", parser)
        if args.model != "shapes" and not args.list_users:
            _check_model(args.model, parser)
        try:
            check_query_size(args.k, args.candidates, name="--k")
        except ValueError as error:
            parser.error(str(error).replace("pool of", "--candidates pool of"))
        if args.list_users:
            for name, (taste, teacher) in USER_PRESETS.items():
                print(
                    f"{name:16} likes {', '.join(taste.likes) or '-'}; dislikes {', '.join(taste.dislikes) or '-'}; {teacher}"
                )
            for name, (taste, teacher) in CLASS_USER_PRESETS.items():
                print(
                    f"{name:16} (--model {taste.dataset}) likes classes {', '.join(map(str, taste.likes))}; {teacher}"
                )
            return
        from .demo import run_demo

        run_demo(
            args.out,
            user=args.user,
            rounds=args.rounds,
            questions_per_round=args.questions,
            candidates_per_round=args.candidates,
            prompt=args.prompt,
            seed=args.seed,
            interactive=args.interactive,
            generator=args.generator,
            k=args.k,
            model=args.model,
        )
    elif args.command == "bench":
        out = Path(args.out)
        if args.bench == "queries":
            from .bench import queries
            from .querying.strategies import STRATEGIES

            queries.run(
                out,
                settings=_names(args.settings, queries.SETTINGS, "setting", parser),
                seeds=args.seeds,
                n_answers=args.answers,
                strategies=_names(args.strategies, [*sorted(STRATEGIES), queries.PEER], "strategy", parser)
                if args.strategies
                else None,
                workers=args.workers,
                with_peer=not args.no_peer,
            )
        elif args.bench == "select":
            from .bench import select

            select.run(out, repeat=args.repeat)
        elif args.bench == "speed":
            from .bench import speed

            speed.run(out, seeds=args.seeds, repeat=args.repeat, sd=not args.no_sd)
        elif args.bench == "embedded":
            from .bench import embedded

            embedded.run(out, n_samples=args.samples, seed=args.seed)
        elif args.bench == "digits":
            from .bench import digits
            from .models.digits.data import check_available

            try:
                check_available(args.model)
            except RuntimeError as error:
                parser.error(f"bench digits --model {args.model}: {error}")
            _check_model(args.model, parser)
            digits.run(out, dataset=args.model, n_samples=args.samples, seed=args.seed)
        elif args.bench == "sampler":
            from .bench import sampler

            _check_model(args.model, parser)
            sampler.run(out, dataset=args.model, seeds=args.seeds, n_samples=args.samples)
        elif args.bench == "judge":
            from .bench import judge

            judge.run(out, n=args.samples, base_samples=args.base_samples, seed=args.seed, model=args.model)
        elif args.bench == "update":
            from .bench import update
            from .simulate.people import USER_PRESETS

            users = _names(args.users, list(USER_PRESETS), "simulated user", parser)
            settings = [t.strip() for t in args.settings.split(";")]
            for text in settings:
                try:
                    update.parse_setting(text)
                except (ValueError, TypeError) as error:
                    parser.error(f"--settings: {error}")
            update.run(out, users, args.seeds, settings, rounds=args.rounds)
        elif args.bench == "align":
            from .bench import align

            if args.quick:
                align.run(
                    out / "align_quick",
                    methods=["ours", f"papa@{align.QUICK_PAPA_LR:g}"],
                    workers=args.workers,
                    **align.QUICK,
                )
            else:
                if args.baseline and not Path(args.baseline).is_file():
                    parser.error(f"--baseline {args.baseline}: no such file (give an align_runs.jsonl)")
                default_users = align.USERS if args.model == "shapes" else align.MODEL_USERS[args.model]
                users = _names(
                    args.users or ",".join(default_users), align.MODEL_USERS[args.model], "simulated user", parser
                )
                methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
                for method in methods or []:
                    try:
                        align.check_method(method)
                    except ValueError as error:
                        parser.error(str(error))
                if args.model != "shapes":
                    _check_model(args.model, parser)
                align.run(
                    out,
                    users=users,
                    seeds=args.seeds,
                    methods=methods,
                    workers=args.workers,
                    budget_minutes=args.budget_minutes,
                    update=_overrides(args.update, parser),
                    baseline=Path(args.baseline) if args.baseline else None,
                    model=args.model,
                )
        elif args.bench == "store":
            from .bench import store

            store.run(out, trials=args.trials)
        elif args.bench == "design":
            from .bench import design

            design.run(out, repeat=args.repeat)


if __name__ == "__main__":
    main()
