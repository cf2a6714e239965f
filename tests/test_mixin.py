"""The diffusers mixin on tiny random SD / SDXL pipelines built from configs: the whole loop, save and load."""

import warnings

import numpy as np
import pytest
import torch
from tiny_pipelines import tiny_sd, tiny_sdxl

from edpbrl_plugin import PersonalizationMixin, PreferenceStore, personalize
from edpbrl_plugin.loop.training import training_data
from edpbrl_plugin.tuning.adapters import ADAPTER_NAME, adapters_disabled
from edpbrl_plugin.tuning.denoiser import Denoiser
from edpbrl_plugin.tuning.updater import UpdateConfig

FAST = UpdateConfig(
    steps=3,
    eval_every=3,
    batch_size=2,
    distill_samples=4,
    eval_samples=2,
    num_inference_steps=2,
    guidance_scale=1.0,
    drift_cap=10.0,
)


@pytest.mark.parametrize("factory", [tiny_sd, tiny_sdxl])
def test_full_loop_on_a_tiny_pipeline_then_save_resume_and_load(tmp_path, factory):
    base = factory()
    base.set_progress_bar_config(disable=True)
    pipe = personalize(base)
    assert isinstance(pipe, PersonalizationMixin) and pipe.unet is base.unet  # components shared, not copied
    pipe.start_personalization(tmp_path / "prefs.db", "s1", user="ana", prompts=["a castle"], update_config=FAST)
    candidates = pipe.sample_candidates(6, seed=0, num_inference_steps=2, guidance_scale=1.0)
    assert len(candidates.ids) == 6 and candidates.features.shape[0] == 6
    for answer in (0, 1, "tie"):
        query = pipe.next_query(k=2)
        assert len(query.candidates) == 2 and query.information_gain > 0
        pipe.submit_answer(query.id, answer)
    kset = pipe.next_query(k=3)
    pipe.submit_answer(kset.id, 2)
    model = pipe.update_reward()
    assert model.n_answers_ == 4
    report = pipe.update_lora(progress=False)
    assert report.changed and report.n_pairs == 2 + 2
    status = pipe.personalization_status()
    assert status["answers"] == 4 and status["lora_version"] == 1 and status["drift"] is not None
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([300])
    cond = Denoiser(pipe).condition(["a castle"])
    with torch.no_grad():
        version_1 = pipe.unet(x, t, **cond).sample
    # Resume in a fresh pipeline: the store restores the answers and the latest LoRA version.
    again = personalize(factory())
    again.start_personalization(tmp_path / "prefs.db", "s1", update_config=FAST)
    np.testing.assert_allclose(again.update_reward().theta_, model.theta_)
    with torch.no_grad():
        torch.testing.assert_close(again.unet(x, t, **cond).sample, version_1, atol=1e-5, rtol=1e-4)
    # A strongly trained adapter (every LoRA weight moved) exports and loads back at the trained strength.
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_" in name:
                p.add_(torch.randn_like(p) * 0.3)
        tuned = pipe.unet(x, t, **cond).sample
        with adapters_disabled(pipe.unet):
            base = pipe.unet(x, t, **cond).sample
    paths = pipe.save_personalization(tmp_path / "export")
    for fmt in ("kohya", "diffusers"):
        fresh = personalize(factory())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any "target modules not in the state dict" warning fails the test
            fresh.load_personalization(paths[fmt])
        with torch.no_grad():
            torch.testing.assert_close(fresh.unet(x, t, **cond).sample, tuned, atol=1e-4, rtol=1e-4)
        assert ADAPTER_NAME in fresh.unet.peft_config
    assert not torch.allclose(tuned, base, atol=1e-3)


def test_base_share_samples_the_first_candidates_with_the_adapter_off(tmp_path):
    """Questions keep showing what the base model makes: with base_share=0.5 the first half of the batch is
    exactly the base model's samples at those seeds and the rest the tuned model's; the store records both."""
    from edpbrl_plugin.tuning.adapters import add_adapter

    pipe = personalize(tiny_sd())
    pipe.set_progress_bar_config(disable=True)
    pipe.start_personalization(tmp_path / "p.db", "s4", prompts=["x"], update_config=FAST)
    loop = pipe.personalization_loop
    settings = {"num_inference_steps": 2, "guidance_scale": 1.0}
    base = loop.sample(4, seed=5, **settings)[1]
    add_adapter(pipe.unet, rank=4, alpha=4.0)
    with torch.no_grad():
        for name, p in pipe.unet.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p) * 0.3)
    tuned = loop.sample(4, seed=5, **settings)[1]
    steps = []
    candidates, mixed = loop.sample(4, seed=5, base_share=0.5, on_step=lambda *a: steps.append(a), **settings)
    np.testing.assert_allclose(mixed[:2], base[:2], atol=1e-5)
    np.testing.assert_allclose(mixed[2:], tuned[2:], atol=1e-5)
    assert np.abs(tuned - base).max() > 1e-2
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one progress bar over both halves
    assert candidates.seeds == [5, 6, 7, 8]
    with pytest.raises(ValueError, match="base_share must be a fraction"):
        loop.sample(4, base_share=1.5)


def test_like_dislike_and_skip_answers_flow_into_the_update(tmp_path):
    pipe = personalize(tiny_sd())
    pipe.set_progress_bar_config(disable=True)
    session = pipe.start_personalization(tmp_path / "p.db", "s2", prompts=["x"], update_config=FAST)
    candidates = pipe.sample_candidates(3, num_inference_steps=2, guidance_scale=1.0)
    for cid, answer in zip(candidates.ids, ("like", "dislike", "skip")):
        pipe.submit_answer(session.rating_query(cid).id if answer != "skip" else pipe.next_query().id, answer)
    pairs, ratings = training_data(session.store, session.session)
    assert pairs == [] and [r.label for r in ratings] == [1, -1]
    report = pipe.update_lora(progress=False, method="papa")
    assert report.changed and report.n_ratings == 2


def test_a_sessions_lapse_is_stored_and_used_by_its_reward_model_after_reopening(tmp_path):
    from edpbrl_plugin import PersonalizationSession

    PersonalizationSession(tmp_path / "p.db", "slips", lapse=0.2)
    reopened = PersonalizationSession(tmp_path / "p.db", "slips")  # the stored setting wins over the default
    assert reopened.config["lapse"] == 0.2 and reopened.model.lapse == 0.2
    assert PersonalizationSession(tmp_path / "p.db", "careful").model.lapse == 0.0


def test_mismatched_encoder_dims_between_sessions_is_a_clear_error(tmp_path):
    from edpbrl_plugin import PersonalizationSession, StoreError

    PersonalizationSession(tmp_path / "p.db", "s3", encoder="embedded")
    with pytest.raises(StoreError, match="recorded with encoder embedded-attributes"):
        PersonalizationSession(tmp_path / "p.db", "s3", encoder="embedded-embedding")
    with PreferenceStore(tmp_path / "p.db") as store:
        assert store.get_session("s3").config["feature_dim"] == 20


def test_starting_without_a_unet_is_refused():
    class NoUnet(PersonalizationMixin):
        pass

    with pytest.raises(ValueError, match="no `unet`"):
        NoUnet().start_personalization("unused.db", "s")


def test_papas_like_dislike_loop_is_a_setting_of_the_one_loop(tmp_path):
    """k = 1: every sampled image gets a like / dislike question; the PAPA update learns from the ratings and the
    LoRA is saved as the session's first version, through the same loop as pair questions."""
    from edpbrl_plugin import PersonalizationLoop, PersonalizationSession

    pipe = tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    session = PersonalizationSession(tmp_path / "p.db", "papa")
    config = UpdateConfig(**{**vars(FAST), "method": "papa", "early_stopping": False})
    loop = PersonalizationLoop(session, pipe, config, ["x"], k=1, num_inference_steps=2, guidance_scale=1.0)
    labels = iter(["like", "dislike", "like"])
    done = loop.run_round(lambda images: next(labels) if len(images) == 1 else "wrong", 3, 3, seed=0)
    assert [len(q.candidates) for q in done.questions] == [1, 1, 1]
    assert [a.choice for a in done.answers] == ["like", "dislike", "like"]
    assert done.report.changed and done.report.n_ratings == 3 and done.version.version == 1
    assert set(done.seconds) == {"sample", "select", "answer", "update"}
    # The same seeds give the same images whether sampled as candidates or for evaluation.
    np.testing.assert_allclose(loop.images(3, seed=0), loop.sample(3, seed=0)[1], atol=1e-6)


@pytest.mark.parametrize("verdict", ["base", "tuned"])
def test_a_checked_update_the_person_does_not_prefer_is_rolled_back(tmp_path, verdict):
    """checks = 1: after the update the person compares the tuned and the base sample of one seed; losing rolls the
    adapter back (and saves that as a version), winning keeps it. The check never trains the reward model."""
    from edpbrl_plugin import PersonalizationLoop, PersonalizationSession
    from edpbrl_plugin.tuning.adapters import adapter_state

    pipe = tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    session = PersonalizationSession(tmp_path / "c.db", "check")
    loop = PersonalizationLoop(session, pipe, FAST, ["x"], num_inference_steps=2, guidance_scale=1.0, checks=1)
    checks = []
    make_check = session.check_query
    session.check_query = lambda t, b, first: checks.append(first) or make_check(t, b, first)

    def answer(images):
        if not checks:
            return 0  # the designed questions
        tuned_first = checks[-1]
        return int(tuned_first) if verdict == "base" else int(not tuned_first)

    before = {k: v.clone() for k, v in adapter_state(loop.updater.unet).items()}
    done = loop.run_round(answer, 4, 3, seed=0)
    assert len(done.answers) == 3 and done.report.changed and done.check.win_rate == (verdict == "tuned")
    after = adapter_state(pipe.unet)
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert done.check.rolled_back == (verdict == "base") == unchanged
    assert (done.check.version is not None) == (verdict == "base")
    assert session.model.n_answers_ == 2  # the two designed answers; the check is not a reward-model answer
    assert "check" in done.seconds
