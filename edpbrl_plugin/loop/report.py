"""A session's progress as one picture: the reward model's learning curve and its current estimate."""

from __future__ import annotations

import io

import numpy as np

from ..learning.metrics import stop_signal
from .session import PersonalizationSession


def learning_curve(session: PersonalizationSession) -> list[dict]:
    """Per answer count: the reward model refitted on the first n answers, scored on the latest pool."""
    features, answers = session._model_data()
    pool = session.latest_candidates()
    if len(pool) < 2 or not answers:
        return []
    _, pool_features = session.store.candidate_features(session.session, pool)
    curve, model = [], session.choice_model()
    model.fit(features, [])
    for n in range(1, len(answers) + 1):
        model.partial_fit(features, answers[n - 1 : n])
        signal = stop_signal(model, pool_features)
        curve.append({"answers": n, "expected_accuracy": signal.expected_accuracy, "max_pair_std": signal.max_pair_std})
    return curve


def status_image(session: PersonalizationSession, width: float = 8.0, height: float = 3.2) -> np.ndarray:
    """uint8 ``[H, W, 3]``: expected accuracy vs answers, LoRA drift per version, and θ̂ ± std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = learning_curve(session)
    model = session.model
    fig, (left, right) = plt.subplots(1, 2, figsize=(width, height))
    if curve:
        left.plot(
            [c["answers"] for c in curve],
            [c["expected_accuracy"] for c in curve],
            marker=".",
            label="expected accuracy",
        )
    versions = session.store.lora_versions(session.session)
    if versions:
        twin = left.twinx()
        twin.bar(
            [v.answers_used for v in versions],
            [v.drift or 0.0 for v in versions],
            width=0.6,
            alpha=0.3,
            color="tab:red",
        )
        twin.set_ylabel("LoRA drift", color="tab:red")
    left.set_xlabel("answers")
    left.set_ylim(0.4, 1.0)
    left.set_title(f"{session.session}: {model.n_answers_} answers")
    std = np.sqrt(np.clip(np.diag(model.covariance_), 0, None))
    order = np.argsort(-np.abs(model.theta_))[:12]
    labels = _feature_labels(session)
    right.barh(range(len(order)), model.theta_[order], xerr=std[order], color="tab:blue", alpha=0.7)
    right.set_yticks(range(len(order)), [labels[i] if labels else f"φ{i}" for i in order], fontsize=7)
    right.invert_yaxis()
    right.set_title(session.encoder.describe(model.theta_) or "reward weights θ̂ ± std", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    from PIL import Image

    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _feature_labels(session: PersonalizationSession) -> list[str] | None:
    attributes = getattr(session.encoder, "attributes", None)
    if attributes is None or session.encoder.dim != sum(map(len, attributes.values())):
        return None
    return [value for values in attributes.values() for value in values]
