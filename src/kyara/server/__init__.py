"""The live studio server: HTTP/WebSocket front end of a ``kyara.live.LiveEngine`` (Starlette + uvicorn).

``create_app(engine, config)`` builds the ASGI app of one session (``config``: a
``kyara.live.session.LiveConfig``); ``kyara.server.runner.run_live(config)`` is what ``kyara live``
runs. Importing this package starts nothing.
"""
from kyara.live.session import LiveConfig
from kyara.server.app import ServerSettings, create_app, uvicorn_config

__all__ = ["LiveConfig", "ServerSettings", "create_app", "uvicorn_config"]
