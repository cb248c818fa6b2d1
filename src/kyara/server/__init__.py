"""The live studio server: HTTP/WebSocket front end of a ``kyara.live.LiveEngine`` (Starlette + uvicorn).

``create_app(engine, settings)`` builds the ASGI app; ``run_live(...)`` is what ``kyara live`` calls.
Importing this package starts nothing.
"""
from kyara.server.app import ServerSettings, check_settings, create_app

__all__ = ["ServerSettings", "check_settings", "create_app"]
