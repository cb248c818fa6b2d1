"""HTTP endpoint for the browser renderer: ``GET /api/character`` serves the live character's .kyw
weights (kyara.web.weights) so a page can render it locally. Mounted by kyara.server.app."""
from __future__ import annotations

import asyncio
import threading

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kyara.web.weights import WebWeightsError, student_to_web_bytes

MEDIA_TYPE = "application/vnd.kyara.kyw"


def web_character_route(engine):
    """An async Starlette endpoint: the .kyw bytes of ``engine.character`` (built once per character
    object, in a worker thread), or 409 with a JSON error for a teacher-backed character."""
    cache: dict[int, bytes] = {}
    lock = threading.Lock()

    def build(character) -> bytes:
        with lock:
            key = id(character)
            if key not in cache:
                cache.clear()
                cache[key] = student_to_web_bytes(character)
            return cache[key]

    async def character_weights(request: Request) -> Response:
        character = engine.character
        if not getattr(character, "is_student", False):
            return JSONResponse({"error": "this character is not a distilled student; only students render in "
                                          "the browser"}, status_code=409)
        try:
            data = await asyncio.to_thread(build, character)
        except WebWeightsError as e:
            return JSONResponse({"error": str(e)}, status_code=409)
        return Response(data, media_type=MEDIA_TYPE, headers={"Cache-Control": "no-store"})

    return character_weights
