"""Train the digits / fashion classifier and unconditional DDPM on the real datasets (see :mod:`.data`).

    python -m edpbrl_plugin.models.digits.train classifier --dataset digits
    python -m edpbrl_plugin.models.digits.train form --dataset digits
    python -m edpbrl_plugin.models.digits.train generator --dataset digits --work runs/digits-generator

Reproducible from ``--seed``, resumable from the checkpoint in ``--work`` (rerun the same command; raise
``--steps`` to train longer), EMA weights, a progress bar and a sample grid every ``--sample-every`` steps.
The final weights go to ``--out`` (by default the shipped location). Runs outside CI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from ...imaging import save_grid
from ..training import EMA, load_checkpoint, lr_factor, save_checkpoint
from .classifier import DigitClassifier
from .damage import DAMAGES, damaged_images, gaussian_blur
from .data import CLASS_NAMES, load_split
from .pipeline import DigitsPipeline, build_scheduler, build_unet
from .weights import classifier_dir, form_dir, generator_dir

#: Damage kinds the form judge learns to fail. Blur is not one (see :mod:`.form`), nor flood: Fashion-MNIST holds
#: frame-filling bright bags and tops, and a fashion judge trained with flood still passed 73% of the fully washed
#: out slabs (and fewer of the milder ones), so it stays a validation kind that measures that blind spot.
FORM_DAMAGES = tuple(kind for kind in DAMAGES if kind not in ("blur", "flood"))


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` -> float ``[N, 1, 28, 28]`` in 0..1."""
    return torch.from_numpy(images).float().div(255.0).unsqueeze(1)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small shifts (±2 px) and noise, so the classifier also reads slightly imperfect generated images."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2, n), generator=generator)
    out = torch.stack([padded[i, :, dy[i] : dy[i] + 28, dx[i] : dx[i] + 28] for i in range(n)])
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * 0.08
    return (out + sigma * torch.randn(out.shape, generator=generator)).clamp(0, 1)


def classifier_accuracy(model: DigitClassifier, images: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        predictions = torch.cat([model(chunk)[1].argmax(1) for chunk in _to_tensor(images).split(1024)])
    return float((predictions.numpy() == labels).mean())


def train_classifier(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    images, labels = load_split(args.dataset, "train")
    test_images, test_labels = load_split(args.dataset, "test")
    model = DigitClassifier(num_classes=len(CLASS_NAMES[args.dataset]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    ema = EMA([model], decay=0.995)
    rng = np.random.default_rng(args.seed)
    model.train()
    bar = tqdm(range(args.steps), desc=f"{args.dataset} classifier")
    for step in bar:
        index = rng.integers(0, len(labels), args.batch)
        x = _augment(_to_tensor(images[index]), torch.Generator().manual_seed(args.seed * 1_000_003 + step))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, 100)
        loss = F.cross_entropy(model(x)[1], torch.from_numpy(labels[index]), label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(step)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    ema.copy_to()
    model.train()  # BatchNorm statistics were tracked on the raw weights: recompute them for the EMA weights
    with torch.no_grad():
        for chunk in _to_tensor(images).split(512):
            model(chunk)
    model.eval()
    accuracy = classifier_accuracy(model, test_images, test_labels)
    print(f"{args.dataset} classifier held-out accuracy: {accuracy:.4f} on {len(test_labels)} images")
    model.save_pretrained(args.out or classifier_dir(args.dataset))
    print(f"wrote {args.out or classifier_dir(args.dataset)}")


def _soften(images: torch.Tensor, rng: np.random.Generator, groups: int = 4) -> torch.Tensor:
    """Blur ``[N, 28, 28]`` in ``groups`` slices by random sigmas in [0, 0.9] px (the generator's softness)."""
    return torch.cat([gaussian_blur(part, float(rng.uniform(0.0, 0.9))) for part in images.chunk(groups)])


def train_form(args: argparse.Namespace) -> None:
    """The form judge (:mod:`.form`): each step half training images, half training images with one damage kind
    (cycled) at a severity drawn from [0.4, 1]; both halves softened alike."""
    torch.manual_seed(args.seed)
    images, _ = load_split(args.dataset, "train")
    images = images.astype(np.float32) / 255.0
    test_images, _ = load_split(args.dataset, "test")
    model = DigitClassifier(num_classes=2, embedding_dim=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    half = args.batch // 2
    labels = torch.cat([torch.ones(half), torch.zeros(half)]).long()
    model.train()
    bar = tqdm(range(args.steps), desc=f"{args.dataset} form judge")
    for step in bar:
        clean = torch.from_numpy(images[rng.integers(0, len(images), half)])
        source, others = images[rng.integers(0, len(images), half)], images[rng.integers(0, len(images), half)]
        kind, severity = FORM_DAMAGES[step % len(FORM_DAMAGES)], float(rng.uniform(0.4, 1.0))
        damaged = torch.from_numpy(damaged_images(source, kind, severity, int(rng.integers(2**31)), others))
        x = torch.cat([_soften(clean, rng), _soften(damaged, rng)])[:, None]
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, 100)
        loss = F.cross_entropy(model(x)[1], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        passed = torch.cat([model(chunk)[1].argmax(1) for chunk in _to_tensor(test_images).split(1024)])
    print(f"{args.dataset} form judge: {float(passed.float().mean()):.4f} of {len(test_images)} held-out images pass")
    model.save_pretrained(args.out or form_dir(args.dataset))
    print(f"wrote {args.out or form_dir(args.dataset)}")


def train_generator(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    images, _ = load_split(args.dataset, "train")
    data = _to_tensor(images) * 2 - 1
    unet, scheduler = build_unet(), build_scheduler()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMA([unet], decay=args.ema)
    start = 0
    checkpoint = load_checkpoint(work / "checkpoint.pt")
    if checkpoint is not None:
        unet.load_state_dict(checkpoint["unet"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        ema.load_state_dict(checkpoint["ema"])
        start = checkpoint["step"]
        print(f"resumed generator training at step {start}", file=sys.stderr)
    alphas = scheduler.alphas_cumprod
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=f"{args.dataset} generator")
    for step in bar:
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        x0 = data[torch.randint(0, len(data), (args.batch,), generator=gen)]
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, 200)
        loss = F.mse_loss(unet(a * x0 + s * noise, t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        ema.update(step)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % args.checkpoint_every == 0 or done == args.steps:
            state = {"unet": unet.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema.state_dict()}
            save_checkpoint(work / "checkpoint.pt", {**state, "step": done})
        if done % args.sample_every == 0 or done == args.steps:
            _write_samples(unet, ema, work / f"samples_{done:06d}.png", args.seed)
    _export(unet, ema, args.out or generator_dir(args.dataset))


def _export(unet, ema: EMA, out: str | Path) -> None:
    ema.copy_to()
    DigitsPipeline(unet=unet, scheduler=build_scheduler()).to(torch.float16).save_pretrained(out)
    print(f"wrote {out}")


def export_generator(args: argparse.Namespace) -> None:
    """Write the EMA weights of the checkpoint in ``--work`` as a pipeline folder (e.g. mid-training)."""
    checkpoint = load_checkpoint(Path(args.work) / "checkpoint.pt")
    if checkpoint is None:
        raise SystemExit(f"no checkpoint in {args.work}")
    unet = build_unet()
    ema = EMA([unet], decay=0.0)
    ema.load_state_dict(checkpoint["ema"])
    _export(unet, ema, args.out or generator_dir(args.dataset))
    print(f"(EMA at step {checkpoint['step']})")


def _write_samples(unet, ema: EMA, path: Path, seed: int) -> None:
    """Sample 64 images from the EMA weights without disturbing the training weights."""
    backup = [p.detach().clone() for p in ema.params]
    ema.copy_to()
    pipe = DigitsPipeline(unet=unet, scheduler=build_scheduler())
    pipe.set_progress_bar_config(disable=True)
    unet.eval()
    images = pipe(batch_size=64, generator=torch.Generator().manual_seed(seed), output_type="np").images
    unet.train()
    with torch.no_grad():
        for p, b in zip(ema.params, backup):
            p.copy_(b)
    save_grid(images, path, columns=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m edpbrl_plugin.models.digits.train", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    cls = sub.add_parser("classifier", help="train the classifier (judge and feature encoder)")
    cls.add_argument("--steps", type=int, default=3000)
    cls.add_argument("--batch", type=int, default=128)
    cls.add_argument("--lr", type=float, default=2e-3)
    form = sub.add_parser("form", help="train the form judge (real vs damaged images; evaluation only)")
    form.add_argument("--steps", type=int, default=3000)
    form.add_argument("--batch", type=int, default=128)
    form.add_argument("--lr", type=float, default=1e-3)
    gen = sub.add_parser("generator", help="train the unconditional DDPM")
    gen.add_argument("--steps", type=int, default=6000)
    gen.add_argument("--batch", type=int, default=32)
    gen.add_argument("--lr", type=float, default=1e-3)
    gen.add_argument("--ema", type=float, default=0.999)
    gen.add_argument("--sample-every", type=int, default=500)
    gen.add_argument("--checkpoint-every", type=int, default=250)
    gen.add_argument("--work", default="runs/digits-generator")
    export = sub.add_parser("export", help="export the generator checkpoint's EMA weights now")
    export.add_argument("--work", default="runs/digits-generator")
    for p in (cls, form, gen, export):
        p.add_argument("--dataset", choices=sorted(CLASS_NAMES), default="digits")
        p.add_argument("--out", default=None, help="output folder (default: the shipped location)")
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    commands = {"classifier": train_classifier, "form": train_form, "generator": train_generator}
    {**commands, "export": export_generator}[args.what](args)


if __name__ == "__main__":
    main()
