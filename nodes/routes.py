"""HTTP routes under ``/edpbrl/``: the answer widget and scripts answer questions through them.

The handlers are plain functions (tested without a server); ``register`` mounts them on ComfyUI's
PromptServer (also reachable under ``/api/edpbrl/...``, where the frontend's ``api.fetchApi`` goes).
"""

from __future__ import annotations

from edpbrl_plugin import StoreError
from edpbrl_plugin.hosting import registry
from edpbrl_plugin.hosting.broker import BROKER

from . import comfy_bridge as comfy


def answer(payload: dict) -> dict:
    """``{"query": id, "answer": "0" | "1" | "A" | "B" | "tie" | "skip" | "both_bad" | ..., "latency": s?}``.

    The answer is committed to the store before this returns, then any waiting Ask node is released.
    """
    if not isinstance(payload, dict) or "query" not in payload or "answer" not in payload:
        raise ValueError(
            'send JSON {"query": <question id>, "answer": <option index | tie | skip | both_bad | like | dislike>}'
        )
    try:
        query = int(payload["query"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"query must be a question id, got {payload['query']!r}") from error
    latency = payload.get("latency")
    active = registry.session_of_query(query)
    record = active.answer(query, payload["answer"], None if latency is None else float(latency))
    released = BROKER.deliver(query, record)
    label = active.describe_answer(record)
    return {
        "ok": True,
        "query": query,
        "session": record.session,
        "answer": record.choice,
        "label": label,
        "released": released,
    }


def pending(session: str | None = None) -> dict:
    """Questions a graph is blocked on (with their preview images) and questions queued for later."""
    waiting = [dict(w.info) for w in BROKER.waiting() if session in (None, w.session)]
    blocked = {w["query"] for w in waiting}
    queued = [
        {"query": q.id, "session": q.session, "k": len(q.candidates), "candidates": list(q.candidates)}
        for q in registry.pending_questions(session)
        if q.id not in blocked
    ]
    return {"waiting": waiting, "queued": queued}


def candidate_image(session: str, candidate: int) -> bytes:
    return registry.candidate_image_file(session, int(candidate)).read_bytes()


def register() -> bool:
    """Mount the routes on ComfyUI's server; False when not running inside ComfyUI."""
    server = comfy._module("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return False
    from aiohttp import web

    routes = instance.routes

    def _error(error: Exception, status: int = 400):
        return web.json_response({"ok": False, "error": str(error)}, status=status)

    @routes.post("/edpbrl/answer")
    async def post_answer(request):
        try:
            payload = await request.json()
        except ValueError:
            return _error(ValueError("the body must be JSON"))
        try:
            return web.json_response(answer(payload))
        except (ValueError, StoreError) as error:
            return _error(error)

    @routes.get("/edpbrl/pending")
    async def get_pending(request):
        try:
            return web.json_response(pending(request.query.get("session")))
        except (ValueError, StoreError) as error:
            return _error(error)

    @routes.get("/edpbrl/candidate")
    async def get_candidate(request):
        try:
            data = candidate_image(request.query["session"], int(request.query["id"]))
        except (KeyError, ValueError, StoreError) as error:
            return _error(error, 404)
        return web.Response(body=data, content_type="image/png")

    return True
