"""asterisk_conf/: the files parse the way Asterisk parses them, reference each other correctly, and a
simulated call through the dialplan reaches the bridge with a fresh UUID, on old and new Asterisk.

Asterisk itself cannot run here; tests/operator/asterisk_model.py models its config format, dialplan and
the applications used (see its docstring), and the example System() command runs for real against a
private Redis.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
import redis

from bridge.config import BridgeConfig
from voice import keys
from voice.emulators.redis_server import find_binary

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "asterisk_conf"

_spec = importlib.util.spec_from_file_location("operator_asterisk_model", Path(__file__).with_name("asterisk_model.py"))
am = sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(am)

AUDIOSOCKET_MODULES = {"res_audiosocket.so", "app_audiosocket.so", "chan_audiosocket.so"}
# Modules an Asterisk 20.12+ box loads for these files; an older one lacks func_uuid.
NEW_ASTERISK = AUDIOSOCKET_MODULES | {
    "func_uuid.so", "func_md5.so", "func_rand.so", "func_module.so", "func_strings.so",
    "app_stack.so", "app_system.so", "app_dial.so",
}
OLD_ASTERISK = NEW_ASTERISK - {"func_uuid.so"}

# Applications used in extensions.conf and the module providing each (None: built into the PBX core).
APP_MODULES = {
    "noop": None, "verbose": None, "answer": None, "set": None, "gotoif": None, "hangup": None,
    "gosub": "app_stack.so", "return": "app_stack.so", "system": "app_system.so",
    "audiosocket": "app_audiosocket.so", "dial": "app_dial.so",
}
FUNCTION_MODULES = {
    "UUID": "func_uuid.so", "MD5": "func_md5.so", "RAND": "func_rand.so", "IFMODULE": "func_module.so",
    "LEN": "func_strings.so", "FILTER": "func_strings.so",
}
# Option names used per pjsip object type, each checked against Asterisk's configs/samples/pjsip.conf.sample.
PJSIP_OPTIONS = {
    "transport": {"type", "protocol", "bind"},
    "auth": {"type", "auth_type", "username", "password"},
    "aor": {"type", "max_contacts", "remove_existing", "qualify_frequency"},
    "endpoint": {
        "type", "transport", "context", "disallow", "allow", "dtmf_mode", "direct_media", "rtp_symmetric",
        "force_rport", "rewrite_contact", "auth", "aors", "callerid",
    },
}
CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def read_conf(name: str) -> list:
    return am.parse_config((CONF / name).read_text(encoding="utf-8"), name)


@pytest.fixture(scope="module")
def ext_sections():
    return read_conf("extensions.conf")


@pytest.fixture(scope="module")
def plan(ext_sections):
    return am.parse_dialplan(ext_sections)


@pytest.fixture(scope="module")
def global_vars(ext_sections):
    (globals_section,) = [s for s in ext_sections if s.name == "globals"]
    return {e.key: e.value for e in globals_section.entries}


@pytest.fixture(scope="module")
def pjsip():
    return am.objects(read_conf("pjsip.conf"))


@pytest.fixture(scope="module")
def modules():
    return read_conf("modules.conf")


def interpreter(plan, global_vars, modules=NEW_ASTERISK, **kw):
    return am.Interpreter(plan, global_vars, modules, **kw)


def bridge_default_service() -> tuple[str, int]:
    defaults = BridgeConfig()
    return defaults.host, defaults.port


# --- the model itself: it must reject what Asterisk rejects, or the checks below prove nothing -------


def test_model_reads_the_config_format():
    sections = am.parse_config(
        "[t](!)\ntype = endpoint ; comment\nallow=ulaw\n[e](t)\nallow => alaw\nnote=a\\;b\n;-- block\n"
        "[hidden]\n--;\n",
        "x.conf",
    )
    assert [(s.name, s.template, s.inherits) for s in sections] == [("t", True, ()), ("e", False, ("t",))]
    assert sections[1].values("allow") == ["ulaw", "alaw"]
    assert sections[1].get("type") == "endpoint" and sections[1].get("note") == "a;b"
    assert am.objects(sections) == [sections[1]]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("key=value\n", "before any [section]"),
        ("[a\nk=v\n", "malformed section header"),
        ("[a](missing)\n", "not a template above it"),
        ("[a]\njust words\n", "neither a section header"),
        ("[a]\n;-- never closed\n", "unterminated"),
    ],
)
def test_model_rejects_bad_config(text, problem):
    with pytest.raises(am.ConfError, match=re.escape(problem)):
        am.parse_config(text, "x.conf")


@pytest.mark.parametrize(
    "lines, problem",
    [
        ("same => n,NoOp()", "before any `exten`"),
        ("exten => 1,n,NoOp()", "'n' priority on the first line"),
        ("exten => 1,1,NoOp()\nexten => 1,1,Hangup()", "defined twice"),
        ("exten => 1,1,NoOp(x", "no closing parenthesis"),
        ("exten => 1,1(a),NoOp()\nsame => n(a),Hangup()", "label 'a' used twice"),
        ("exten => 1,0,NoOp()", "invalid priority"),
        ("extn => 1,1,NoOp()", "unknown dialplan keyword"),
    ],
)
def test_model_rejects_bad_dialplan(lines, problem):
    with pytest.raises(am.ConfError, match=re.escape(problem)):
        am.parse_dialplan(am.parse_config(f"[ctx]\n{lines}\n"))


def test_model_numbers_priorities_like_pbx_config():
    plan = am.parse_dialplan(am.parse_config("[c]\nexten => 5,1,NoOp(a,b)\n same => n(x),Set(v=1)\n same => n,Hangup()\n"))
    steps = plan["c"]["5"].ordered()
    assert [(s.priority, s.label, s.app, s.data) for s in steps] == [
        (1, None, "NoOp", "a,b"), (2, "x", "Set", "v=1"), (3, None, "Hangup", ""),
    ]


def test_model_refuses_what_it_cannot_run():
    plan = am.parse_dialplan(am.parse_config("[c]\nexten => 5,1,Playback(hello)\n"))
    with pytest.raises(am.Unsupported):
        am.Interpreter(plan, {}, NEW_ASTERISK).run("c", "5")


# --- extensions.conf ------------------------------------------------------------------------------------


def test_dialplan_has_the_extensions(plan):
    assert {"7000", "7001", "h"} <= set(plan["voice-bridge"])
    assert "s" in plan["voice-bridge-new-uuid"]


def test_priorities_run_from_one_without_gaps(plan):
    """A gap ends the call there (autofallthrough): every step after it would be dead."""
    for context, extensions in plan.items():
        for name, ext in extensions.items():
            assert sorted(ext.steps) == list(range(1, len(ext.steps) + 1)), f"{name}@{context}"


def test_goto_and_gosub_targets_exist(plan):
    checked = 0
    for context, extensions in plan.items():
        for ext in extensions.values():
            for step in ext.ordered():
                if step.app == "GotoIf":
                    targets = step.data.partition("?")[2].split(":")
                    for label in filter(None, targets):
                        assert label in ext.labels, f"GotoIf to {label!r} in {ext.name}@{context}"
                        checked += 1
                elif step.app == "Gosub":
                    target_ctx, target_ext, target_pri = am.split_args(step.data)
                    assert int(target_pri) in plan[target_ctx][target_ext].steps
                    checked += 1
    assert checked >= 4


def test_answer_comes_before_audiosocket(plan):
    steps = plan["voice-bridge"]["7000"].ordered()
    apps = [s.app for s in steps]
    assert apps.count("AudioSocket") == 1 and apps.count("Answer") == 1
    answer, audiosocket = apps.index("Answer"), apps.index("AudioSocket")
    assert answer < audiosocket
    assert "Hangup" not in apps[answer:audiosocket]
    assert not any(s.label for s in steps[answer + 1 : audiosocket + 1]), "a jump could skip Answer()"


def test_audiosocket_uses_a_uuid_variable_and_the_bridge_address(plan, global_vars):
    (step,) = plan["voice-bridge"]["7000"].apps("AudioSocket")
    uuid_arg, service_arg = am.split_args(step.data)
    assert re.fullmatch(r"\$\{\w+\}", uuid_arg), "the UUID must be a per-call expression, never a constant"
    assert service_arg == "${VOICE_BRIDGE}"
    assert am.parse_host_port(global_vars["VOICE_BRIDGE"]) == bridge_default_service()


@pytest.mark.parametrize("modules", [NEW_ASTERISK, OLD_ASTERISK], ids=["asterisk-20.12+", "older"])
def test_a_call_reaches_the_bridge_answered_with_a_fresh_uuid(plan, global_vars, modules):
    machine = interpreter(plan, global_vars, modules)
    record = machine.run("voice-bridge", "7000")
    (audiosocket,) = record.apps("AudioSocket")
    call_uuid, service = am.split_args(audiosocket)
    assert record.errors == []  # no "Function UUID not registered" on old Asterisk: IFMODULE guards it
    assert CANONICAL_UUID.match(call_uuid) and uuid.UUID(call_uuid).version == 4
    assert am.parse_host_port(service) == bridge_default_service()
    order = record.order()
    assert order.index("Answer") < order.index("AudioSocket")
    if "func_uuid.so" in modules:
        assert machine.uuids_issued == [call_uuid]
    else:
        assert machine.uuids_issued == []
        assert "Return" in order and any(data == call_uuid for data in record.apps("Return"))


@pytest.mark.parametrize("modules", [NEW_ASTERISK, OLD_ASTERISK], ids=["asterisk-20.12+", "older"])
def test_every_call_gets_its_own_uuid(plan, global_vars, modules):
    machine = interpreter(plan, global_vars, modules)
    seen = {am.split_args(machine.run("voice-bridge", "7000").apps("AudioSocket")[0])[0] for _ in range(200)}
    assert len(seen) == 200


def test_the_fallback_uuid_is_canonical_for_any_digest(plan, global_vars):
    """The Return() that cuts an MD5 into a UUID, evaluated over many digests."""
    (cut,) = [s for s in plan["voice-bridge-new-uuid"]["s"].apps("Return") if "hex" in s.data]
    machine = interpreter(plan, global_vars)
    for n in range(500):
        digest = uuid.uuid4().hex if n else "0" * 32
        record = am.CallRecord(variables={"hex": digest})
        value = machine.substitute(cut.data, record)
        parsed = uuid.UUID(value)
        assert str(parsed) == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert keys.call_vars_key(value) == f"call:{value}"  # already the bridge's canonical form


def test_an_originator_chosen_uuid_is_kept(plan, global_vars):
    chosen = str(uuid.uuid4())
    machine = interpreter(plan, global_vars)
    for exten in ("7000", "7001"):
        record = machine.run("voice-bridge", exten, {"CALL_UUID": chosen})
        sent = record.apps("AudioSocket") or record.apps("Dial")
        assert chosen in sent[0]
        assert record.apps("System") == [], "the example must not overwrite the originator's call variables"
    assert machine.uuids_issued == []


def test_bridge_hangup_continues_to_hangup_and_h(plan, global_vars):
    record = interpreter(plan, global_vars, audiosocket_returns=0).run("voice-bridge", "7000")
    order = record.order()
    assert order[order.index("AudioSocket") + 1] == "Hangup"
    assert record.executed[-1][0].startswith("voice-bridge/h/")


def test_caller_hangup_or_old_asterisk_goes_to_h(plan, global_vars):
    record = interpreter(plan, global_vars, audiosocket_returns=-1).run("voice-bridge", "7000")
    order = record.order()
    assert "Hangup" not in order[order.index("AudioSocket") :]
    call_uuid = am.split_args(record.apps("AudioSocket")[0])[0]
    assert call_uuid in record.executed[-1][2]  # the h extension logs which call ended


def test_dial_form_uses_the_channel_driver_with_slin(plan, global_vars):
    (static,) = plan["voice-bridge"]["7001"].apps("Dial")
    assert static.data.endswith("/c(slin)"), "without c(slin) the bridge gets μ-law labelled as slin"
    record = interpreter(plan, global_vars).run("voice-bridge", "7001")
    (dial,) = record.apps("Dial")
    resource = am.split_args(dial)[0]
    tech, service, call_uuid, options = resource.split("/")
    assert tech == "AudioSocket"
    assert am.parse_host_port(service) == bridge_default_service()
    assert CANONICAL_UUID.match(call_uuid)
    assert options == "c(slin)"
    assert record.executed[-1][0].startswith("voice-bridge/h/")


def test_call_variables_example_writes_what_the_bridge_reads(plan, global_vars, redis_server, redis_url):
    """The example System() line, run by /bin/sh with a real redis-cli against a private Redis."""
    cli = f"{find_binary('redis-cli')} -h 127.0.0.1 -p {redis_server.port} -n 0"
    assert global_vars["REDIS_CLI"].startswith("redis-cli ")
    machine = interpreter(plan, {**global_vars, "REDIS_CLI": cli}, run_system=True)
    record = machine.run("voice-bridge", "7000")
    assert record.system_results == [0]
    order = record.order()
    assert order.index("System") < order.index("AudioSocket"), "variables must be stored before the call connects"
    call_uuid = am.split_args(record.apps("AudioSocket")[0])[0]
    client = redis.Redis.from_url(redis_url)
    try:
        stored = client.get(keys.call_vars_key(call_uuid))
        ttl = client.ttl(keys.call_vars_key(call_uuid))
    finally:
        client.close()
    assert stored is not None, "the dialplan wrote a key the bridge does not read"
    variables = json.loads(stored)
    assert variables == {"amount": "4200"}
    assert 0 < ttl <= 3600
    dialogue = tomllib.loads((ROOT / "bridge" / "data" / "dialogue.toml").read_text(encoding="utf-8"))
    assert set(variables) <= set(dialogue["vars"]), "the example sets a variable the sample dialogue does not use"


def test_dialplan_apps_and_functions_come_from_listed_modules(plan, modules):
    listed = {e.value for s in modules for e in s.entries if e.key in ("load", "require")}
    for extensions in plan.values():
        for ext in extensions.values():
            for step in ext.ordered():
                module = APP_MODULES.get(step.app.lower(), "unknown")
                assert module != "unknown", f"{step.app}() has no known module in this test"
                assert module is None or module in listed, f"{step.app}() needs {module}"
                for function in re.findall(r"\$\{(\w+)\(", step.data):
                    assert FUNCTION_MODULES[function] in listed, f"{function}() needs {FUNCTION_MODULES[function]}"
    dial_resources = [s.data for e in plan["voice-bridge"].values() for s in e.apps("Dial")]
    assert all(r.startswith("AudioSocket/") for r in dial_resources) and "chan_audiosocket.so" in listed


def test_general_section_keys_are_real_options(ext_sections):
    (general,) = [s for s in ext_sections if s.name == "general"]
    assert set(general.keys()) <= {"static", "writeprotect", "clearglobalvars", "autofallthrough"}


# --- pjsip.conf -----------------------------------------------------------------------------------------


def by_type(objs, kind):
    return [s for s in objs if s.get("type") == kind]


def test_pjsip_objects_have_known_types_and_options(pjsip):
    for obj in pjsip:
        kind = obj.get("type")
        assert kind in PJSIP_OPTIONS, f"[{obj.name}] type={kind}"
        assert set(obj.keys()) <= PJSIP_OPTIONS[kind], f"[{obj.name}]: {set(obj.keys()) - PJSIP_OPTIONS[kind]}"


def test_pjsip_udp_transport(pjsip):
    (transport,) = by_type(pjsip, "transport")
    assert transport.get("protocol") == "udp"
    assert am.parse_host_port(transport.get("bind")) == ("0.0.0.0", 5060)


def test_pjsip_endpoint_references_resolve(pjsip, plan):
    (endpoint,) = by_type(pjsip, "endpoint")
    names = {kind: {s.name for s in by_type(pjsip, kind)} for kind in ("transport", "auth", "aor")}
    assert endpoint.get("transport") in names["transport"]
    assert endpoint.get("auth") in names["auth"]
    aors = endpoint.get("aors").split(",")
    assert aors and set(aors) <= names["aor"]
    assert {"7000", "7001"} <= set(plan[endpoint.get("context")]), "the endpoint's context has no bridge extensions"


def test_pjsip_registration_identity(pjsip):
    """A softphone registers as user X: the AOR named X takes the REGISTER and the endpoint named X is
    identified by that user; the auth section checks X's password."""
    (endpoint,) = by_type(pjsip, "endpoint")
    (auth,) = [s for s in by_type(pjsip, "auth") if s.name == endpoint.get("auth")]
    assert auth.get("auth_type") in ("userpass", "digest")
    assert auth.get("password")
    assert auth.get("username") == endpoint.name == endpoint.get("aors")


def test_pjsip_codecs(pjsip):
    (endpoint,) = by_type(pjsip, "endpoint")
    keys_in_order = [e.key for e in endpoint.entries if e.key in ("allow", "disallow")]
    assert keys_in_order[0] == "disallow" and endpoint.values("disallow") == ["all"]
    assert "allow" in keys_in_order and keys_in_order.index("allow") > keys_in_order.index("disallow")
    codecs = {c.strip() for value in endpoint.values("allow") for c in value.split(",")}
    assert codecs == {"ulaw", "alaw"}
    assert endpoint.get("direct_media") == "no"


# --- modules.conf ---------------------------------------------------------------------------------------


def test_modules_conf_keys(modules):
    assert [s.name for s in modules] == ["modules"]
    allowed = {"autoload", "load", "require", "noload", "preload", "preload-require"}
    assert set(modules[0].keys()) <= allowed
    assert all(e.value.endswith(".so") for e in modules[0].entries if e.key != "autoload")


def test_modules_conf_loads_audiosocket(modules):
    (section,) = modules
    loaded = set(section.values("load")) | set(section.values("require"))
    assert AUDIOSOCKET_MODULES <= loaded
    assert not (loaded & set(section.values("noload"))), "a module both loaded and noloaded stops Asterisk"
    assert {"res_pjsip.so", "chan_pjsip.so", "codec_ulaw.so", "codec_alaw.so"} <= loaded


# --- README ---------------------------------------------------------------------------------------------


def test_readme_matches_the_files(pjsip, global_vars):
    readme = (CONF / "README.md").read_text(encoding="utf-8")
    (auth,) = by_type(pjsip, "auth")
    assert f"`{auth.get('username')}`" in readme and f"`{auth.get('password')}`" in readme
    assert "7000" in readme and "7001" in readme
    assert global_vars["VOICE_BRIDGE"] in readme
    for problem in ("choppy", "static", "2 s", "will not end", "Connection refused", "Answer()", "UUID"):
        assert problem in readme, f"troubleshooting lacks {problem!r}"
