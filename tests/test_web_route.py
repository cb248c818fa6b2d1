"""GET /api/character: the live server hands the browser renderer its weights (.kyw)."""
from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.applications import Starlette  # noqa: E402
from starlette.routing import Route  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from kyara.character import SAMPLE_CHARACTER, load_character  # noqa: E402
from kyara.web.routes import web_character_route  # noqa: E402
from kyara.web.weights import parse_web_bytes  # noqa: E402


class Engine:
    def __init__(self, character) -> None:
        self.character = character


def client_for(character) -> TestClient:
    return TestClient(Starlette(routes=[Route("/api/character", web_character_route(Engine(character)))]))


def test_student_weights_are_served_and_parse():
    character = load_character(SAMPLE_CHARACTER)
    response = client_for(character).get("/api/character")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.kyara.kyw"
    assert response.headers["cache-control"] == "no-store"
    weights = parse_web_bytes(response.content)
    assert weights.header["name"] == character.name
    assert weights.tensors["body_morpher.last_linear.weight"].shape == (7, 90)


def test_teacher_character_gets_a_clear_409():
    class Teacherish:
        name = "teacher"
        is_student = False

    response = client_for(Teacherish()).get("/api/character")
    assert response.status_code == 409 and "not a distilled student" in response.json()["error"]


def test_live_app_mounts_the_route():
    from e2e.fakes import FakeCharacter, FakeMixer
    from kyara.live import LiveEngine
    from kyara.server import create_app

    app = create_app(LiveEngine(FakeCharacter(), FakeMixer(), fps=30))
    response = TestClient(app).get("/api/character", headers={"host": "127.0.0.1"})
    assert response.status_code == 409, response.text     # the fake character is not a student
