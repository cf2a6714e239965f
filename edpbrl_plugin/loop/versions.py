"""LoRA versions of a session: the one path that writes a preference LoRA to disk and the one that loads one.

Each update that changes the adapter becomes version N of its session: ``<store>_loras/<session>/vN/`` holds the
diffusers file and ``edpbrl_<session>_vN.safetensors`` (kohya names, for ComfyUI's LoraLoader), and the store
records it. Exports (the mixin's ``save_personalization``, ComfyUI's Save LoRA) write through :func:`write_lora`.
"""

from __future__ import annotations

from pathlib import Path

from ..storage.store import LoraVersion, PreferenceStore, StoreError
from ..tuning.adapters import ADAPTER_NAME, has_adapter
from ..tuning.export import load_lora, save_diffusers, save_kohya


def write_lora(
    pipe, folder: str | Path, kohya_name: str, metadata: dict | None = None, diffusers: bool = True
) -> dict[str, Path]:
    """Write ``pipe``'s preference adapter into ``folder``: the kohya file ``kohya_name`` and (``diffusers``) the
    diffusers-format file. Returns ``{"kohya": path, "diffusers": path}``."""
    if not has_adapter(pipe.unet, ADAPTER_NAME):
        raise RuntimeError("nothing to save: no preference LoRA has been trained or loaded yet")
    folder = Path(folder)
    paths = {"kohya": save_kohya(pipe.unet, folder / kohya_name, metadata=metadata)}
    if diffusers:
        paths["diffusers"] = save_diffusers(pipe, folder, metadata=metadata)
    return paths


def lora_folder(store: PreferenceStore, session: str) -> Path:
    """Where ``session``'s versions live: ``<store name>_loras/<session>/`` beside the database."""
    return store.path.with_name(store.path.stem + "_loras") / session


def save_version(
    pipe,
    store: PreferenceStore,
    session: str,
    kind: str,
    answers_used: int,
    drift: float | None,
    metadata: dict | None = None,
) -> LoraVersion:
    """Write ``pipe``'s adapter as the session's next version and record it in the store."""
    version = store.next_lora_version(session)
    metadata = {"session": session, "answers": answers_used, "version": version, **(metadata or {})}
    folder = lora_folder(store, session) / f"v{version}"
    paths = write_lora(pipe, folder, f"edpbrl_{session}_v{version}.safetensors", metadata)
    return store.add_lora_version(session, str(folder), kind, answers_used, drift, str(paths["kohya"]), metadata)


def latest_version(store: PreferenceStore, session: str) -> LoraVersion | None:
    """The session's newest version (None before its first update, or for a session the store does not hold)."""
    versions = store.lora_versions(session) if store.has_session(session) else []
    return versions[-1] if versions else None


def load_version(pipe, store: PreferenceStore, session: str, version: int | None = None) -> LoraVersion | None:
    """Load version ``version`` (None: the latest, if any) of ``session`` into ``pipe``; reading never creates
    a session. Returns the loaded version (None when there is none to load)."""
    if version is None:
        record = latest_version(store, session)
    else:
        versions = {v.version: v for v in store.lora_versions(session)} if store.has_session(session) else {}
        if version not in versions:
            raise StoreError(
                f"session {session!r} has no LoRA version {version} in the store {store.path}; "
                "reload the pipeline (Load Pipeline with resume_session) to continue from the latest version"
            )
        record = versions[version]
    if record is not None:
        load_lora(pipe, record.file)
    return record
