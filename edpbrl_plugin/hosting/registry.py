"""Process-wide registry: the store, open sessions, loaded pipelines, their loops, and versioned pipeline handles.

Hosts such as ComfyUI cache node outputs and hand the same object to every consumer, so a LoRA
update never mutates a handle it received: it returns a new :class:`PipelineHandle` naming the
adapter version. The heavy pipeline object is loaded once per source and brought to the version a
handle names (from the version's file in the store) whenever a handle is used. A host's nodes and
routes reach sessions, questions and answers only through here, never the store itself.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..features import FeatureEncoder, load_encoder
from ..loop.loop import PersonalizationLoop
from ..loop.session import PersonalizationSession
from ..loop.versions import latest_version as _latest_version
from ..loop.versions import load_version
from ..storage.store import LoraVersion, PreferenceStore, QueryRecord, StoreError, validate_session_id
from ..tuning.adapters import ADAPTER_NAME, has_adapter
from ..tuning.updater import UpdateConfig

_lock = threading.RLock()
_sessions: dict[tuple[str, str], PersonalizationSession] = {}
_stores: dict[str, PreferenceStore] = {}
_pipelines: dict[str, object] = {}
_encoders: dict[str, FeatureEncoder] = {}
_loops: dict[tuple[str, str, str], PersonalizationLoop] = {}
_host_store: Path | None = None


def use_host_store(path: str | Path | None) -> None:
    """Make ``path`` this process's default store (a host such as ComfyUI keeps it in its user folder).

    ``None`` returns to the documented default. ``$EDPBRL_STORE`` and explicit paths still win.
    """
    global _host_store
    with _lock:
        _host_store = None if path is None else Path(path)


def store_path(path: str | Path | None = None) -> Path:
    """The one rule for where answers live: ``path`` if given, else ``$EDPBRL_STORE``, else the host's store
    (:func:`use_host_store`), else ``~/.edpbrl/preferences.db``. Every code path opens its store through here."""
    if path:
        return Path(path)
    if os.environ.get("EDPBRL_STORE"):
        return Path(os.environ["EDPBRL_STORE"])
    if _host_store is not None:
        return _host_store
    return Path.home() / ".edpbrl" / "preferences.db"


def store(path: str | Path | None = None) -> PreferenceStore:
    """The open store at :func:`store_path` (``path``), one per file per process."""
    key = str(store_path(path).resolve())
    with _lock:
        if key not in _stores:
            _stores[key] = PreferenceStore(key)
        return _stores[key]


def encoder(spec: str = "embedded") -> FeatureEncoder:
    with _lock:
        if spec not in _encoders:
            _encoders[spec] = load_encoder(spec)
        return _encoders[spec]


def session(
    session_id: str,
    encoder_spec: str | FeatureEncoder | None = None,
    store_path: str | Path | None = None,
    strategy: str | None = None,
    create: bool = True,
) -> PersonalizationSession:
    """The open session ``session_id`` (created with ``encoder_spec`` on first use, unless ``create`` is False:
    then a session the store does not hold is an error, so reading never leaves an empty session behind)."""
    db = store(store_path)
    key = (str(db.path), session_id)
    if not create and key not in _sessions and not db.has_session(session_id):
        raise StoreError(f"no session {session_id!r} in the store {db.path}; answer a question in it first")
    with _lock:
        current = _sessions.get(key)
        enc = encoder(encoder_spec) if isinstance(encoder_spec, str) else encoder_spec
        if current is not None and enc is not None and enc.name != current.encoder.name:
            raise StoreError(
                f"session {session_id!r} uses encoder {current.encoder.name}, not {enc.name}; use another session id"
            )
        if current is None:
            if enc is None:  # reopen with the encoder the session was recorded with
                enc = encoder(
                    db.get_session(session_id).config.get("encoder", "embedded")
                    if db.has_session(session_id)
                    else "embedded"
                )
            kwargs = {"strategy": strategy} if strategy else {}
            current = PersonalizationSession(db, session_id, encoder=enc, **kwargs)
            _sessions[key] = current
        return current


def session_of_query(query_id: int, store_path: str | Path | None = None) -> PersonalizationSession:
    """The session a question belongs to; an unknown id names the route that lists open questions."""
    db = store(store_path)
    try:
        query = db.get_query(query_id)
    except StoreError as error:
        raise StoreError(f"unknown question {query_id}; GET /edpbrl/pending lists the open questions") from error
    return session(query.session, store_path=store_path)


def check_session_id(session_id: str) -> str:
    """``session_id`` if it is a valid session name; else the store's message saying what a name may hold."""
    return validate_session_id(session_id)


def latest_version(session_id: str) -> int:
    """The newest LoRA version of ``session_id`` (0 before its first update or when it does not exist)."""
    record = _latest_version(store(), session_id)
    return record.version if record else 0


def lora_version(session_id: str, version: int) -> LoraVersion:
    """The stored record of one LoRA version (its files, answers used, drift)."""
    versions = {v.version: v for v in store().lora_versions(session_id)}
    if version not in versions:
        raise StoreError(f"session {session_id!r} has no LoRA version {version}")
    return versions[version]


def pending_questions(session_id: str | None = None) -> list[QueryRecord]:
    """Questions queued for later (every session's, or one's)."""
    return store().pending_queries(session_id)


def candidate_image_file(session_id: str, candidate: int) -> Path:
    """The stored PNG of one candidate of ``session_id``."""
    db = store()
    [record] = db.candidates(session_id, [int(candidate)])
    path = db.image_file(record)
    if path is None or not path.exists():
        raise StoreError(f"candidate {candidate} has no stored image")
    return path


def loop(
    session_id: str, handle: PipelineHandle, config: UpdateConfig | None = None, prompts: list[str] | None = None
) -> PersonalizationLoop:
    """The loop of ``session_id`` on the pipeline ``handle`` names (brought to that version), one per session and
    pipeline source; ``config`` / ``prompts`` update its settings for the steps that follow."""
    pipe = materialize(handle)
    active = session(session_id)
    key = (str(active.store.path), session_id, _pipeline_key(handle.source, handle.config))
    with _lock:
        current = _loops.get(key)
        if current is None:
            current = PersonalizationLoop(active, pipe, config or UpdateConfig.for_pipeline(pipe), prompts or [""])
            _loops[key] = current
        if prompts is not None and prompts != current.prompts:
            current.prompts, current._updater = list(prompts), None
        return current


@dataclass(frozen=True)
class PipelineHandle:
    """A loaded pipeline at one adapter version (0 = the base model) of one session."""

    source: str
    session: str | None = None
    version: int = 0
    config: str | None = None  # the diffusers folder a single-file checkpoint is loaded with

    def describe(self) -> str:
        return f"{self.source}" + (f" + {self.session} LoRA v{self.version}" if self.version else " (base)")


def _pipeline_key(source: str, config: str | None) -> str:
    return f"{source}|{config or ''}"


#: The models that ship inside the package: the styled shapes (prompted), and PAPA's unconditional real-data
#: models, MNIST digits and Fashion-MNIST (each read by its own classifier encoder, ``digits`` / ``fashion``).
EMBEDDED_SOURCES = ("embedded", "embedded-digits", "embedded-fashion")


def load_pipeline(source: str = "embedded", config: str | None = None):
    """Load (once per process) an embedded model (:data:`EMBEDDED_SOURCES`), a diffusers folder, or a single-file
    checkpoint.

    A single-file checkpoint needs ``config``: a local diffusers folder of the same architecture
    (nothing is downloaded).
    """
    key = _pipeline_key(source, config)
    with _lock:
        if key in _pipelines:
            return _pipelines[key]
        if source == "embedded":
            from ..models.shapes import load_shapes_pipeline

            pipe = load_shapes_pipeline()
        elif source in EMBEDDED_SOURCES:
            from ..models.digits import load_pipeline as load_class_pipeline

            pipe = load_class_pipeline(source.removeprefix("embedded-"))
        else:
            pipe = _load_external(Path(source), config)
        pipe.set_progress_bar_config(disable=True)
        pipe._edpbrl_state = (None, 0)
        _pipelines[key] = pipe
        return pipe


def _load_external(path: Path, config: str | None):
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
        return DiffusionPipeline.from_pretrained(path, local_files_only=True)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not config:
        raise ValueError(
            f"loading the single-file checkpoint {path.name} needs `config`: a local diffusers folder of the same "
            "architecture (nothing can be downloaded)"
        )
    index = Path(config) / "model_index.json"
    if not index.is_file():
        raise ValueError(f"config {config} is not a diffusers folder (no model_index.json)")
    cls = StableDiffusionXLPipeline if "XL" in index.read_text() else StableDiffusionPipeline
    return cls.from_single_file(str(path), config=str(config), local_files_only=True)


def materialize(handle: PipelineHandle):
    """The pipeline of ``handle`` with exactly the adapter version it names loaded."""
    pipe = load_pipeline(handle.source, handle.config)
    with _lock:
        wanted = (handle.session, handle.version)
        if getattr(pipe, "_edpbrl_state", None) == wanted:
            return pipe
        if handle.version == 0:
            if has_adapter(pipe.unet, ADAPTER_NAME):
                pipe.unet.delete_adapters(ADAPTER_NAME)
        else:
            load_version(pipe, store(), handle.session, handle.version)  # read only: never creates a session
        pipe._edpbrl_state = wanted
        return pipe


def mark_version(pipe, session_id: str, version: int) -> None:
    """Record that ``pipe`` now carries ``version`` of ``session_id`` (after an in-place update)."""
    pipe._edpbrl_state = (session_id, version)


def reset() -> None:
    """Forget every open session and pipeline, and the host's store (tests)."""
    global _host_store
    with _lock:
        _host_store = None
        for db in _stores.values():
            db.close()
        _sessions.clear()
        _loops.clear()
        _stores.clear()
        _pipelines.clear()
        _encoders.clear()
