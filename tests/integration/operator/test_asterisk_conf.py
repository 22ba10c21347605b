"""asterisk_conf/: quick checks of the files' text that need no Asterisk (they run in the default suite).

Whether Asterisk accepts the files and a call through them works is tested with a real Asterisk 22 in
tests/asterisk/ (marker `asterisk`: `tests/run.sh --asterisk`): it loads the three files unchanged, and SIP
phones call 7000 and 7001 and hear the bridge. What stays here are the facts that tie the files to the
bridge's own defaults and to the documentation, and the call-variables example command run against a
private Redis.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
import uuid

import redis

from bridge.config import BridgeConfig
from support.process import ROOT
from voice import keys
from voice.emulators.redis_server import find_binary

CONF = ROOT / "asterisk_conf"
EXTENSIONS = (CONF / "extensions.conf").read_text(encoding="utf-8")
PJSIP = (CONF / "pjsip.conf").read_text(encoding="utf-8")
README = (CONF / "README.md").read_text(encoding="utf-8")


def global_var(name: str) -> str:
    (value,) = re.findall(rf"^{name}=(.*)$", EXTENSIONS, re.M)
    return value.strip()


def extension_lines(exten: str) -> list[str]:
    """The `exten => EXTEN,...` line and the `same =>` lines that follow it."""
    lines = EXTENSIONS.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"exten => {exten},1,"))
    out = [lines[start]]
    for line in lines[start + 1:]:
        if line.startswith(" same =>"):
            out.append(line)
        elif line.startswith("exten =>"):
            break
    return out


def test_voice_bridge_is_the_bridges_default_address():
    defaults = BridgeConfig()
    assert global_var("VOICE_BRIDGE") == f"{defaults.host}:{defaults.port}"


def test_both_extensions_connect_with_the_per_call_uuid_to_the_bridge():
    app = "\n".join(extension_lines("7000"))
    dial = "\n".join(extension_lines("7001"))
    assert "AudioSocket(${CALL_UUID},${VOICE_BRIDGE})" in app
    # c(slin): without it the bridge receives mu-law labelled as slin (the phone still hears it right, so
    # the real-Asterisk tests could not tell)
    assert "Dial(AudioSocket/${VOICE_BRIDGE}/${CALL_UUID}/c(slin))" in dial


def test_an_originator_chosen_uuid_skips_the_example():
    """A CALL_UUID set by whoever originated the call is used as it is, and the example (which would
    overwrite that call's variables) is skipped."""
    for exten in ("7000", "7001"):
        lines = extension_lines(exten)
        goto = next(i for i, line in enumerate(lines) if "GotoIf($[${LEN(${CALL_UUID})} = 36]?connect)" in line)
        connect = next(i for i, line in enumerate(lines) if "n(connect)," in line)
        skipped = lines[goto + 1:connect]
        assert any("Gosub(voice-bridge-new-uuid,s,1)" in line for line in skipped)
        assert not any("System(" in line for line in lines[connect:]), exten


def test_call_variables_example_writes_what_the_bridge_reads(redis_server, redis_url):
    """extensions.conf's System() example, its variables filled in, run by /bin/sh with a real redis-cli
    against a private Redis: the key and JSON are what the bridge reads."""
    (command,) = re.findall(r"System\((\$\{REDIS_CLI\} SET call:.*)\)$", EXTENSIONS, re.M)
    amount = re.search(r"Set\(AMOUNT=(\d+)\)", EXTENSIONS).group(1)
    assert global_var("REDIS_CLI").startswith("redis-cli -h 127.0.0.1 -p 6379 ")
    call_uuid = str(uuid.uuid4())
    cli = f"{find_binary('redis-cli')} -h 127.0.0.1 -p {redis_server.port} -n 0"
    shell = (command.replace("${REDIS_CLI}", cli).replace("${CALL_UUID}", call_uuid)
             .replace("${FILTER(0-9,${AMOUNT})}", amount))
    assert "${" not in shell, shell
    subprocess.run(["/bin/sh", "-c", shell], check=True, timeout=10)
    client = redis.Redis.from_url(redis_url)
    try:
        stored = client.get(keys.call_vars_key(call_uuid))
        ttl = client.ttl(keys.call_vars_key(call_uuid))
    finally:
        client.close()
    assert stored is not None, "the dialplan wrote a key the bridge does not read"
    variables = json.loads(stored)
    assert variables == {"amount": amount}
    assert 0 < ttl <= 3600
    dialogue = tomllib.loads((ROOT / "bridge" / "data" / "dialogue.toml").read_text(encoding="utf-8"))
    assert set(variables) <= set(dialogue["vars"]), "the example sets a variable the sample dialogue does not use"
    assert "redis-cli SET call:" in README and "EX 3600" in README


def test_readme_matches_the_files():
    username = re.search(r"^username=(\S+)", PJSIP, re.M).group(1)
    password = re.search(r"^password=(\S+)", PJSIP, re.M).group(1)
    assert f"`{username}`" in README and f"`{password}`" in README
    assert "7000" in README and "7001" in README
    assert global_var("VOICE_BRIDGE") in README
    for problem in ("choppy", "static", "2 s", "will not end", "Connection refused", "Answer()", "UUID",
                    "Failed to receive frame from channel", "500 ms"):
        assert problem in README, f"README lacks {problem!r}"
