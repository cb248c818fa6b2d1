"""`kyara live` draws in the browser by default (issue 14): --render auto resolves to browser for a
student and to server for the teacher or a premultiplied student; --render server|browser are kept."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from kyara.cli import build_parser
from kyara.cli.live import config_from_args
from kyara.errors import KyaraError
from kyara.server.runner import render_mode
from kyara.live.session import LiveConfig

STUDENT = SimpleNamespace(is_student=True, premultiplied=False)
TEACHER = SimpleNamespace(is_student=False, premultiplied=False)
THA4_STUDENT = SimpleNamespace(is_student=True, premultiplied=True)


def parse(*argv: str) -> LiveConfig:
    return config_from_args(build_parser().parse_args(["live", *argv]))


def test_default_is_auto_and_auto_means_browser_for_a_student():
    config = parse()
    assert config.render == LiveConfig().render == "auto"
    assert render_mode(config, STUDENT) == ("browser", None)


@pytest.mark.parametrize("character, why", [(TEACHER, "not a distilled student"),
                                            (THA4_STUDENT, "premultiplied")])
def test_auto_falls_back_to_server_frames_where_no_page_could_render(character, why):
    mode, reason = render_mode(parse(), character)
    assert mode == "server" and why in reason


def test_explicit_modes_are_kept():
    assert render_mode(parse("--render", "server"), STUDENT) == ("server", None)
    assert render_mode(parse("--render", "browser"), STUDENT) == ("browser", None)
    # --teacher with the default: server frames, no error; with --render browser: a clear error
    assert render_mode(parse("--teacher"), TEACHER)[0] == "server"
    with pytest.raises(KyaraError, match="--render browser needs a distilled student"):
        parse("--teacher", "--render", "browser")
    with pytest.raises(SystemExit):
        parse("--render", "gpu")


def test_help_says_browser_is_the_default():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = " ".join(sub.choices["live"].format_help().split())
    assert "{server,browser,auto}" in text and "auto (default: browser for a student" in text
