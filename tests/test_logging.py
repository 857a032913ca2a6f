"""Every line a Flower process prints is JSON; console output on request."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.conftest import ROOT, json_lines, run_python
from flowerdock_logging import LOG_SCHEMA_VERSION

FLOWER_AND_STRAY_OUTPUT = """
import sys, warnings
sys.argv[0] = "flower-superlink"   # the guard covers Flower's programs
from flowerdock_logging.startup import install_startup_hook
install_startup_hook()
from flwr.common.logger import log
import structlog
log(20, "flower says %s", "hi")
log(20, "")                                   # Flower's blank separator lines vanish
log(20, "\\t└──> Aggregated MetricRecord")
structlog.get_logger("app.test").info("client_round", node_id=1, loss=float("nan"))
warnings.warn("a library warning")
print("a stray print")
print("a partial line", end="")
"""


def test_flower_program_output_is_pure_json_lines():
    result = run_python(FLOWER_AND_STRAY_OUTPUT, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stdout) + json_lines(result.stderr)
    by_event = {e["event"]: e for e in events}
    assert {"flower says hi", "Aggregated MetricRecord", "client_round", "a stray print", "a partial line"} <= set(by_event)
    assert "" not in by_event
    for e in events:
        assert e["timestamp"].endswith("Z") and "T" in e["timestamp"]
        assert e["level"] in ("debug", "info", "warning", "error", "critical")
    assert by_event["flower says hi"]["logger"] == "flwr"
    assert by_event["client_round"]["loss"] is None  # NaN is not JSON
    assert any("a library warning" in e["event"] for e in events)


def test_uncaught_exception_is_one_json_line():
    result = run_python("from flowerdock_logging import configure_logging\nconfigure_logging()\nraise RuntimeError('boom')")
    assert result.returncode == 1
    [event] = json_lines(result.stdout)
    assert event["event"] == "uncaught_exception" and "RuntimeError: boom" in event["exception"]


def test_uvicorn_access_lines_are_json_with_fields():
    code = """
import logging, uvicorn.config
from flowerdock_logging import configure_logging
configure_logging()
uvicorn.config.Config(app=lambda *a: None).configure_logging()
logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "10.0.0.2:5000", "POST", "/v1/fleet/pull", "1.1", 200)
"""
    result = run_python(code)
    [event] = [e for e in json_lines(result.stdout) if e.get("logger") == "uvicorn.access"]
    assert (event["method"], event["path"], event["status"]) == ("POST", "/v1/fleet/pull", 200)


def test_console_format_is_for_people():
    result = run_python("from flowerdock_logging import configure_logging, get_logger\nconfigure_logging()\n"
                        "get_logger('app.x').info('hello', n=1)", LOG_FORMAT="console")
    assert "hello" in result.stdout
    try:
        json.loads(result.stdout.splitlines()[-1])
        raise AssertionError("console output should not be JSON")
    except ValueError:
        pass


def test_bad_setting_is_named():
    result = run_python("from flowerdock_logging import configure_logging\nconfigure_logging()", LOG_LEVEL="LOUD")
    assert result.returncode != 0 and "LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'" in result.stderr + result.stdout


def test_bad_setting_at_start_up_is_logged_and_json_goes_on():
    result = run_python("from flowerdock_logging.startup import install_startup_hook; from flowerdock_logging import get_logger\ninstall_startup_hook()\n"
                        "get_logger('app.x').info('still_json')", LOG_FORMAT="yaml")
    events = {e["event"]: e for e in json_lines(result.stdout)}
    assert "LOG_FORMAT must be 'json' or 'console', got 'yaml'" in events["logging_config_invalid"]["error"]
    assert "still_json" in events


def test_ids_are_strings_and_events_carry_the_schema_version():
    # 2^64-1 is a valid Flower node ID; as a JSON number most readers would mangle it.
    result = run_python(
        "from flowerdock_logging import configure_logging, get_logger; configure_logging('json');"
        "get_logger('app.test').info('client_round', node_id=18446744073709551615, run_id=7, server_round=2,"
        " partition_id=3)")
    [event] = json_lines(result.stdout)
    assert event["node_id"] == "18446744073709551615" and event["run_id"] == "7"
    assert event["partition_id"] == 3  # a small number stays a number
    assert event["server_round"] == 2 and event["schema_version"] == LOG_SCHEMA_VERSION == 2


def test_passed_health_probes_are_not_logged():
    # As in Flower's HTTP servers: uvicorn configures its loggers, the hook takes them over.
    result = run_python(
        "import logging, uvicorn.config; uvicorn.config.Config(app=None).configure_logging();"
        "log = logging.getLogger('uvicorn.access');"
        "line = '%s - \"%s %s HTTP/%s\" %d';"
        "log.info(line, '127.0.0.1:5555', 'GET', '/health', '1.1', 200);"
        "log.info(line, '10.0.0.7:5555', 'GET', '/health', '1.1', 200);"
        "log.info(line, '10.0.0.7:5555', 'GET', '/health', '1.1', 503);"
        "log.info(line, '127.0.0.1:5555', 'POST', '/v1/fleet/pull-messages', '1.1', 200)")
    events = json_lines(result.stdout)
    assert [(e["client"], e["path"], e["status"]) for e in events] == [
        ("10.0.0.7:5555", "/health", 503), ("127.0.0.1:5555", "/v1/fleet/pull-messages", 200)]


def test_the_gateway_writes_each_line_whole(monkeypatch):
    """nginx shares the gateway's stdout: a line and its newline must leave in one write."""
    import importlib.util

    monkeypatch.syspath_prepend(str(ROOT / "docker" / "gateway"))  # its settings.py lies beside it in the image
    spec = importlib.util.spec_from_file_location("gateway_entrypoint", ROOT / "docker" / "gateway" / "entrypoint.py")
    gateway = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gateway)
    writes = []

    class Recorder:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Recorder())
    gateway.emit("error", "gateway_log", message="connect() failed")
    [line] = writes
    assert line.endswith("\n") and json.loads(line)["message"] == "connect() failed"


def test_the_flwr_cli_is_a_users_tool_and_left_alone():
    # `flwr ls | grep`: the hook must not turn the CLI's output (piped here) into JSON lines.
    import subprocess

    flwr = str(Path(sys.executable).parent / "flwr")
    result = subprocess.run([flwr, "--version"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LOG_FORMAT": "json"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Flower version: ")


def test_submit_relays_the_runs_lines_once_as_run_log_events(tmp_path, monkeypatch, capfd):
    import importlib.util

    fake = tmp_path / "flwr"  # stands in for `flwr log --stream`
    fake.write_text("#!/bin/sh\necho '{\"event\": \"client_round\", \"node_id\": \"7\"}'\necho 'a plain CLI line'\n"
                    "[ \"$3\" = slow ] && exec sleep 30\nexit 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    spec = importlib.util.spec_from_file_location("submit", ROOT / "docker/submit.py")
    submit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(submit)
    from flowerdock_logging import configure_logging

    configure_logging("json", "INFO")
    assert submit.relay_logs("12", "deployment", deadline=20) is True
    events = [e for e in json_lines(capfd.readouterr().out) if e["event"] == "run_log"]
    assert [e["line"] for e in events] == [{"event": "client_round", "node_id": "7"}, "a plain CLI line"]
    assert all(e["run_id"] == "12" for e in events)  # and no second top-level client_round
    assert submit.relay_logs("12", "slow", deadline=1) is False  # past the deadline


def test_the_startup_hook_leaves_the_app_unimported():
    # Flower loads the submitted FAB's `app` only if no `app` is imported yet: the hook
    # that every interpreter runs is a package of its own, and imports none of it.
    result = run_python("import sys, logging; print('app' in sys.modules, 'flowerdock_logging' in sys.modules, "
                        "type(logging.getLogger().handlers[0].formatter).__name__)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "ProcessorFormatter"]
