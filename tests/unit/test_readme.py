"""The README is the operators' reference: every setting the code reads is documented there."""


import pytest

from bridge.config import PARTS
from support.process import ROOT
from voice.config import env_names

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", [n for part in PARTS for n in env_names(part)])
def test_every_setting_is_documented(name):
    assert f"`{name}`" in README, f"{name} is read by the code but not described in README.md"


@pytest.mark.parametrize("command", ["serve", "load-audio", "call", "emulator", "demo", "bench"])
def test_every_public_command_is_documented(command):
    assert f"`{command}" in README
