"""ComfyUI node pack, without ComfyUI: the node contract, each node on small inputs, the loop chained
node by node with answers through the HTTP route handler, bad input. (The real check runs the pack in
ComfyUI itself; see the README's verification section.)"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_pack, pack_fixture

ROOT = Path(__file__).resolve().parents[1]
FAST_STEPS = 4


pack = pack_fixture("edpbrl_pack")


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def run(pack, name, **inputs):
    cls = pack.NODE_CLASS_MAPPINGS[name]
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    return out["result"] if isinstance(out, dict) else out


def test_every_node_follows_the_v1_contract(pack):
    assert pack.WEB_DIRECTORY == "./nodes/web" and (ROOT / "nodes" / "web" / "edpbrl.js").is_file()
    assert set(pack.NODE_CLASS_MAPPINGS) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name.startswith("EDPBRL_") and cls.CATEGORY.startswith("EDPBRL")
        spec = cls.INPUT_TYPES()
        assert "required" in spec and set(spec) <= {"required", "optional", "hidden"}
        for section in ("required", "optional"):
            for input_name, entry in spec.get(section, {}).items():
                assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, (name, input_name)
                assert entry[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
        assert isinstance(cls.RETURN_TYPES, tuple) and len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(
            cls.OUTPUT_TOOLTIPS
        )
        assert callable(getattr(cls, cls.FUNCTION)) and cls.DESCRIPTION


@pytest.fixture(scope="module")
def loop(pack):
    """Load pipeline -> Feature encoder -> Sample candidates, shared by the tests below."""
    (pipeline,) = run(pack, "EDPBRL_LoadPipeline", model="embedded")
    (encoder,) = run(pack, "EDPBRL_FeatureEncoder", encoder="embedded")
    images, candidates = sample(pack, pipeline, encoder, "loop", "star\n", count=6, seed=3)
    return pipeline, encoder, images, candidates


def sample(pack, pipeline, encoder, session: str, prompt: str, count: int, seed: int, steps: int = FAST_STEPS):
    """Sample Candidates with few denoising steps: (images, candidates)."""
    return run(
        pack,
        "EDPBRL_SampleCandidates",
        pipeline=pipeline,
        encoder=encoder,
        session=session,
        prompt=prompt,
        count=count,
        seed=seed,
        steps=steps,
        guidance=2.0,
    )


def dpo_update(pack, pipeline, reward, steps: int, prompt: str = ""):
    """Update LoRA with a few DPO steps and no distillation pool (fast on a CPU)."""
    return run(
        pack,
        "EDPBRL_UpdateLoRA",
        pipeline=pipeline,
        reward=reward,
        method="dpo",
        steps=steps,
        learning_rate="1e-3",
        distill_samples=0,
        drift_cap=5.0,
        prompt=prompt,
    )


def ask_in_thread(pack, query, **kwargs):
    result = {}

    def target():
        try:
            result["out"] = run(pack, "EDPBRL_Ask", query=query, unique_id="7", **kwargs)
        except Exception as error:  # surfaced by the test
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, result


def wait_until_waiting(query_id, timeout=10.0):
    from edpbrl_plugin.hosting.broker import BROKER

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(w.query == query_id for w in BROKER.waiting()):
            return
        time.sleep(0.02)
    raise AssertionError("Ask never started waiting")


def test_one_round_of_the_loop_with_the_answer_posted_to_the_route(pack, loop):
    routes = sys.modules["edpbrl_pack.nodes.routes"]
    pipeline, encoder, images, candidates = loop
    assert images.shape == (6, 32, 32, 3) and images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
    options, query, gain = run(pack, "EDPBRL_SelectQuery", k=2, strategy="d_optimal", candidates=candidates)
    assert options.shape == (2, 32, 32, 3) and gain > 0
    thread, result = ask_in_thread(pack, query, mode="wait", timeout_s=0, on_timeout="leave pending")
    wait_until_waiting(query.id)
    pending = routes.pending()
    assert [w["query"] for w in pending["waiting"]] == [query.id] and len(pending["waiting"][0]["images"]) == 2
    reply = routes.answer({"query": query.id, "answer": "1", "latency": 0.5})
    thread.join(10)
    assert reply["ok"] and reply["released"] and "error" not in result
    answer, token = result["out"]
    assert answer == "1" and token.choice == "1"
    status, reward = run(pack, "EDPBRL_RecordAnswer", answer_record=token)
    assert "1 answers" in status and reward.n_answers == 1
    new_pipeline, drift, report = dpo_update(pack, pipeline, reward, steps=2, prompt="star")
    assert pipeline.version == 0 and new_pipeline.version == 1 and new_pipeline is not pipeline
    assert drift >= 0 and "dpo" in report
    (lora_name,) = run(pack, "EDPBRL_SaveLoRA", pipeline=new_pipeline, filename_prefix="test")
    assert lora_name == "edpbrl/test_loop_v1.safetensors"
    from safetensors import safe_open

    with safe_open(str(Path(os.environ["EDPBRL_LORA_DIR"]) / lora_name), framework="pt") as f:
        assert f.metadata()["edpbrl_session"] == "loop" and any(k.endswith(".alpha") for k in f.keys())
    plot, text = run(pack, "EDPBRL_SessionStatus", session="loop", reward=reward)
    assert plot.ndim == 4 and plot.shape[0] == 1 and plot.shape[-1] == 3 and "LoRA v1" in text
    # Sampling with the old handle brings the base model back: handles never change under a consumer. (A new
    # session starts at the same seeds; "loop" itself moves on to new ones.)
    base_again, next_round = (
        sample(pack, pipeline, encoder, "loop-base", "star", count=2, seed=3)[0] for _ in range(2)
    )
    torch.testing.assert_close(base_again, images[:2])
    assert not torch.allclose(next_round, base_again)


def test_a_kway_question_and_answer_later(pack, loop):
    routes = sys.modules["edpbrl_pack.nodes.routes"]
    _, _, _, candidates = loop
    options, query, _ = run(pack, "EDPBRL_SelectQuery", k=3, strategy="random", candidates=candidates)
    assert options.shape[0] == 3
    answer, token = run(pack, "EDPBRL_Ask", query=query, mode="answer later", timeout_s=0, on_timeout="leave pending")
    assert answer == "pending" and token.choice is None
    assert query.id in [q["query"] for q in routes.pending("loop")["queued"]]
    status, _ = run(pack, "EDPBRL_RecordAnswer", answer_record=token)
    assert "pending" in status
    routes.answer({"query": query.id, "answer": 2})
    with pytest.raises(ValueError, match="cannot take another answer"):
        routes.answer({"query": query.id, "answer": 0})


def test_timeouts_follow_their_stated_policy_and_cancel_ends_the_wait(pack, loop, monkeypatch):
    _, _, _, candidates = loop
    for policy, expected in (("leave pending", "pending"), ("skip", "skip")):
        _, query, _ = run(pack, "EDPBRL_SelectQuery", k=2, strategy="random", candidates=candidates)
        start = time.monotonic()
        answer, _ = run(pack, "EDPBRL_Ask", query=query, mode="wait", timeout_s=1, on_timeout=policy)
        assert answer == expected and time.monotonic() - start < 5
    bridge = sys.modules["edpbrl_pack.nodes.comfy_bridge"]

    class Interrupted(Exception):
        pass

    def cancel():
        raise Interrupted()

    monkeypatch.setattr(bridge, "check_interrupted", cancel)
    _, query, _ = run(pack, "EDPBRL_SelectQuery", k=2, strategy="random", candidates=candidates)
    with pytest.raises(Interrupted):
        run(pack, "EDPBRL_Ask", query=query, mode="wait", timeout_s=0, on_timeout="leave pending")
    from edpbrl_plugin.hosting.broker import BROKER

    assert all(w.query != query.id for w in BROKER.waiting())


def test_any_image_batch_and_an_encoder_compose_with_native_graphs(pack, loop):
    _, encoder, images, _ = loop
    options, query, gain = run(
        pack,
        "EDPBRL_SelectQuery",
        k=2,
        strategy="d_optimal",
        images=images[:4],
        encoder=encoder,
        session="native",
        prompt="from KSampler",
    )
    assert options.shape == (2, 32, 32, 3) and query.session == "native"


def test_bad_inputs_are_clear_node_errors(pack, loop):
    routes = sys.modules["edpbrl_pack.nodes.routes"]
    pipeline, encoder, images, candidates = loop
    with pytest.raises(ValueError, match="connect candidates"):
        run(pack, "EDPBRL_SelectQuery", k=2, strategy="d_optimal")
    with pytest.raises(ValueError, match="has 1 image"):
        run(pack, "EDPBRL_SelectQuery", k=2, strategy="d_optimal", images=images[:1], encoder=encoder, session="loop")
    with pytest.raises(ValueError, match="IMAGE tensor"):
        run(
            pack,
            "EDPBRL_SelectQuery",
            k=2,
            strategy="d_optimal",
            images=np.zeros((2, 4, 4, 3)),
            encoder=encoder,
            session="loop",
        )
    with pytest.raises(ValueError, match="larger than"):
        run(pack, "EDPBRL_SelectQuery", k=8, strategy="d_optimal", candidates=candidates)
    with pytest.raises(ValueError, match="pipeline must come from"):
        run(
            pack,
            "EDPBRL_SampleCandidates",
            pipeline="not a pipeline",
            encoder=encoder,
            session="loop",
            prompt="",
            count=2,
            seed=0,
            steps=1,
            guidance=1.0,
        )
    with pytest.raises(ValueError, match="invalid session id"):
        run(
            pack,
            "EDPBRL_SampleCandidates",
            pipeline=pipeline,
            encoder=encoder,
            session="../../etc",
            prompt="",
            count=2,
            seed=0,
            steps=1,
            guidance=1.0,
        )
    with pytest.raises(ValueError, match="must come from Ask"):
        run(pack, "EDPBRL_RecordAnswer", answer_record="0")
    (other,) = run(pack, "EDPBRL_FeatureEncoder", encoder="embedded-embedding")
    with pytest.raises(ValueError, match="uses encoder embedded-attributes"):
        run(pack, "EDPBRL_SelectQuery", k=2, strategy="d_optimal", images=images[:3], encoder=other, session="loop")
    with pytest.raises(ValueError, match=r"unknown question 987654; GET /edpbrl/pending lists"):
        routes.answer({"query": 987654, "answer": "0"})
    reward = sys.modules["edpbrl_pack.nodes.types"].RewardToken("loop", 1)
    with pytest.raises(ValueError, match="learning_rate must be one of"):
        run(
            pack,
            "EDPBRL_UpdateLoRA",
            pipeline=pipeline,
            reward=reward,
            method="dpo",
            steps=1,
            learning_rate="0.00000",
            distill_samples=0,
            drift_cap=1.0,
            prompt="",
        )
    with pytest.raises(ValueError, match="send JSON"):
        routes.answer({"answer": "0"})
    with pytest.raises(ValueError, match="no LoRA yet"):
        run(pack, "EDPBRL_SaveLoRA", pipeline=pipeline, filename_prefix="x")
    with pytest.raises(ValueError, match="clip_path"):
        run(pack, "EDPBRL_FeatureEncoder", encoder="clip")


@pytest.fixture
def comfy_host(tmp_path, monkeypatch):
    """The pack as a new ComfyUI user runs it: no ``EDPBRL_STORE``, a fresh HOME, ComfyUI's ``folder_paths``."""
    import types

    from edpbrl_plugin.hosting import registry

    monkeypatch.delenv("EDPBRL_STORE", raising=False)
    monkeypatch.delenv("EDPBRL_LORA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    comfy = tmp_path / "ComfyUI"
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.get_user_directory = lambda: str(comfy / "user")
    folder_paths.get_temp_directory = lambda: str(comfy / "temp")
    folder_paths.get_folder_paths = lambda kind: [str(comfy / "models" / kind)]
    folder_paths.get_filename_list = lambda kind: []
    folder_paths.get_full_path = lambda kind, name: None
    folder_paths.folder_names_and_paths = {}
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    registry.reset()
    module = load_pack("edpbrl_hosted")
    yield module, comfy
    registry.reset()


def test_the_loop_queued_again_and_again_in_comfyui_continues_from_its_store(comfy_host, monkeypatch):
    """Each queue of the loop graph loads the session's latest LoRA from ComfyUI's store and adds one version."""
    pack, comfy = comfy_host
    routes = sys.modules["edpbrl_hosted.nodes.routes"]
    from edpbrl_plugin.tuning.updater import UpdateConfig

    configure = UpdateConfig.for_pipeline.__func__  # this test is about the store: skip the reward checks' sampling
    monkeypatch.setattr(
        UpdateConfig,
        "for_pipeline",
        classmethod(lambda cls, pipe, **overrides: configure(cls, pipe, early_stopping=False, **overrides)),
    )
    for round_, answer in enumerate(("A", "B"), start=1):
        (pipeline,) = run(pack, "EDPBRL_LoadPipeline", model="embedded", resume_session="my-taste")
        assert pipeline.version == round_ - 1
        (encoder,) = run(pack, "EDPBRL_FeatureEncoder", encoder="embedded")
        _, candidates = sample(pack, pipeline, encoder, "my-taste", "", count=4, seed=0, steps=2)
        _, query, _ = run(pack, "EDPBRL_SelectQuery", k=2, strategy="d_optimal", candidates=candidates)
        thread, result = ask_in_thread(pack, query, mode="wait", timeout_s=0, on_timeout="leave pending")
        wait_until_waiting(query.id)
        reply = routes.answer({"query": query.id, "answer": answer})
        thread.join(10)
        assert reply["label"] == answer and result["out"][0] == str("AB".index(answer))
        _, reward = run(pack, "EDPBRL_RecordAnswer", answer_record=result["out"][1])
        updated, _, _ = dpo_update(pack, pipeline, reward, steps=1)
        assert updated.version == round_
        run(pack, "EDPBRL_SessionStatus", session="my-taste", reward=reward)
    from edpbrl_plugin import PreferenceStore

    with PreferenceStore(comfy / "user" / "edpbrl" / "preferences.db") as db:
        assert [v.version for v in db.lora_versions("my-taste")] == [1, 2]
        assert [a.choice for a in db.answers("my-taste")] == ["0", "1"]
    assert not (comfy.parent / "home" / ".edpbrl").exists()  # nothing read or written beside ComfyUI's store


def test_a_bad_session_name_is_refused_when_the_prompt_is_queued(pack):
    bad = "../../etc/x"
    for name, inputs in (
        ("EDPBRL_SampleCandidates", {"session": bad}),
        ("EDPBRL_DesignPrompts", {"session": bad}),
        ("EDPBRL_SelectQuery", {"session": bad}),
        ("EDPBRL_SessionStatus", {"session": bad}),
        ("EDPBRL_LoadPipeline", {"resume_session": bad}),
    ):
        message = pack.NODE_CLASS_MAPPINGS[name].VALIDATE_INPUTS(**inputs)
        assert isinstance(message, str) and message.startswith("invalid session id '../../etc/x'"), name
    assert pack.NODE_CLASS_MAPPINGS["EDPBRL_LoadPipeline"].VALIDATE_INPUTS(resume_session="") is True
    assert pack.NODE_CLASS_MAPPINGS["EDPBRL_SampleCandidates"].VALIDATE_INPUTS(session="my-taste") is True
