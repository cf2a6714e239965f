"""Train the embedded feature encoder and generator on procedural styled shapes.

    python -m edpbrl_plugin.models.shapes.train encoder
    python -m edpbrl_plugin.models.shapes.train generator --work runs/generator

Both are reproducible from ``--seed`` (every batch is rendered from (seed, step)), resumable from
the checkpoint in ``--work`` (rerun the same command), keep an EMA of the weights, show a progress
bar, and write a sample grid. The final weights go to ``--out`` (by default the shipped location).
This runs outside CI; CI only loads the shipped weights.
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
from .encoder import AttributeEncoder
from .pipeline import ShapesPipeline, build_scheduler, build_unet
from .shapes import ATTRIBUTES, render_batch
from .text_encoder import AttributeTextEncoder
from .weights import ENCODER_DIR, GENERATOR_DIR

_WORD_DROP = 0.35
_PROMPT_DROP = 0.1


def _batch_seed(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise and blur, so the encoder also reads slightly imperfect generated images."""
    n = images.shape[0]
    blur = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    use_blur = (torch.rand(n, 1, 1, 1, generator=generator) < 0.3).float()
    images = use_blur * (0.5 * images + 0.5 * blur) + (1 - use_blur) * images
    sigma = torch.rand(n, 1, 1, 1, generator=generator) * 0.06
    return (images + sigma * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def train_encoder(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = AttributeEncoder()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    ema = EMA([model], decay=0.998)
    start = 0
    checkpoint = load_checkpoint(work / "checkpoint.pt")
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        ema.load_state_dict(checkpoint["ema"])
        start = checkpoint["step"]
        print(f"resumed encoder training at step {start}", file=sys.stderr)
    model.train()
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="encoder")
    for step in bar:
        images, labels = render_batch(args.batch, _batch_seed(args.seed, step))
        gen = torch.Generator().manual_seed(_batch_seed(args.seed, step))
        x = augment(_to_tensor(images), gen)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, 100)
        _, logits = model(x)
        loss = sum(F.cross_entropy(logits[k], torch.from_numpy(labels[k])) for k in ATTRIBUTES)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(step)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % args.checkpoint_every == 0 or step + 1 == args.steps:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema.state_dict()}
            save_checkpoint(work / "checkpoint.pt", {**state, "step": step + 1})
    # BatchNorm statistics were tracked on the raw weights; recompute them for the EMA weights.
    ema.copy_to()
    model.train()
    with torch.no_grad():
        for k in range(20):
            images, _ = render_batch(512, _batch_seed(args.seed + 7919, k))
            model(augment(_to_tensor(images), torch.Generator().manual_seed(k)))
    model.eval()
    images, labels = render_batch(4000, seed=10_000 + args.seed)
    with torch.no_grad():
        _, logits = model(_to_tensor(images))
    for name in ATTRIBUTES:
        accuracy = (logits[name].argmax(1).numpy() == labels[name]).mean()
        print(f"held-out {name}: {accuracy:.4f}")
    model.save_pretrained(args.out)
    print(f"wrote {args.out}")


def _random_prompt_ids(text_encoder: AttributeTextEncoder, labels: dict[str, np.ndarray], rng: np.random.Generator):
    """Token ids for each image's attributes, each word dropped with p=0.35 and the prompt with p=0.1."""
    ids = np.stack([labels[name] + 1 for name in text_encoder.attribute_names], axis=1)
    keep = rng.random(ids.shape) >= _WORD_DROP
    keep &= rng.random((ids.shape[0], 1)) >= _PROMPT_DROP
    return torch.from_numpy(np.where(keep, ids, 0))


def sample_grid_prompts() -> list[str]:
    """64 prompts covering every hue, background, shape and fill."""
    hues, shapes, fills, backgrounds = (ATTRIBUTES[k] for k in ("hue", "shape", "fill", "background"))
    return [f"{hues[c]} {shapes[(r + c) % 4]} {fills[r % 2]} {backgrounds[r // 2]}" for r in range(8) for c in range(8)]


def train_generator(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    unet, text_encoder, scheduler = build_unet(), AttributeTextEncoder(), build_scheduler()
    modules = [unet, text_encoder]
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    ema = EMA(modules, decay=args.ema)
    start = 0
    checkpoint = load_checkpoint(work / "checkpoint.pt")
    if checkpoint is not None:
        unet.load_state_dict(checkpoint["unet"])
        text_encoder.load_state_dict(checkpoint["text_encoder"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        ema.load_state_dict(checkpoint["ema"])
        start = checkpoint["step"]
        print(f"resumed generator training at step {start}", file=sys.stderr)
    alphas = scheduler.alphas_cumprod
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="generator")
    for step in bar:
        seed = _batch_seed(args.seed, step)
        images, labels = render_batch(args.batch, seed)
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        x0 = _to_tensor(images) * 2 - 1
        ids = _random_prompt_ids(text_encoder, labels, rng)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
        target = a * noise - s * x0
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, 200)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(a * x0 + s * noise, t, encoder_hidden_states=text_encoder(ids)).sample
        loss = F.mse_loss(pred.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update(step)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        if done % args.checkpoint_every == 0 or done == args.steps:
            state = {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict()}
            state.update(optimizer=optimizer.state_dict(), ema=ema.state_dict(), step=done)
            save_checkpoint(work / "checkpoint.pt", state)
        if done % args.sample_every == 0 or done == args.steps:
            _write_samples(unet, text_encoder, ema, work / f"samples_{done:06d}.png", args.seed)
    ema.copy_to()
    pipe = ShapesPipeline(unet=unet, text_encoder=text_encoder, scheduler=scheduler)
    pipe.to(torch.float16).save_pretrained(args.out)
    print(f"wrote {args.out}")


def export_generator(args: argparse.Namespace) -> None:
    """Write the EMA weights of the checkpoint in ``--work`` as a pipeline folder (e.g. mid-training)."""
    checkpoint = load_checkpoint(Path(args.work) / "checkpoint.pt")
    if checkpoint is None:
        raise SystemExit(f"no checkpoint in {args.work}")
    unet, text_encoder = build_unet(), AttributeTextEncoder()
    ema = EMA([unet, text_encoder], decay=0.0)
    ema.load_state_dict(checkpoint["ema"])
    ema.copy_to()
    ShapesPipeline(unet=unet, text_encoder=text_encoder, scheduler=build_scheduler()).to(torch.float16).save_pretrained(
        args.out
    )
    print(f"wrote {args.out} (EMA at step {checkpoint['step']})")


def _write_samples(unet, text_encoder, ema: EMA, path: Path, seed: int) -> None:
    """Sample the EMA weights on the grid prompts without disturbing the training weights."""
    backup = [p.detach().clone() for p in ema.params]
    ema.copy_to()
    pipe = ShapesPipeline(unet=unet, text_encoder=text_encoder, scheduler=build_scheduler())
    pipe.set_progress_bar_config(disable=True)
    unet.eval()
    images = pipe(sample_grid_prompts(), generator=torch.Generator().manual_seed(seed), output_type="np").images
    unet.train()
    with torch.no_grad():
        for p, b in zip(ema.params, backup):
            p.copy_(b)
    save_grid(images, path, columns=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m edpbrl_plugin.models.shapes.train", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    enc = sub.add_parser("encoder", help="train the attribute CNN feature encoder")
    enc.add_argument("--steps", type=int, default=3000)
    enc.add_argument("--batch", type=int, default=256)
    enc.add_argument("--lr", type=float, default=2e-3)
    enc.add_argument("--out", default=str(ENCODER_DIR))
    enc.add_argument("--work", default="runs/encoder")
    gen = sub.add_parser("generator", help="train the text-to-image UNet and text encoder")
    gen.add_argument("--steps", type=int, default=8000)
    gen.add_argument("--batch", type=int, default=64)
    gen.add_argument("--lr", type=float, default=6e-4)
    gen.add_argument("--ema", type=float, default=0.999)
    gen.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast (CPU)")
    gen.add_argument("--sample-every", type=int, default=500)
    gen.add_argument("--out", default=str(GENERATOR_DIR))
    gen.add_argument("--work", default="runs/generator")
    for p in (enc, gen):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--checkpoint-every", type=int, default=250)
    export = sub.add_parser("export", help="export the generator checkpoint's EMA weights now")
    export.add_argument("--work", default="runs/generator")
    export.add_argument("--out", default=str(GENERATOR_DIR))
    args = parser.parse_args(argv)
    {"encoder": train_encoder, "generator": train_generator, "export": export_generator}[args.what](args)


if __name__ == "__main__":
    main()
