"""Structured logs (--log-format) and secrets from ${VAR} never printed."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from headrace.cli._logging import JsonFormatter, TextFormatter
from headrace.config import is_secret_name, redact, redact_data, register_secret
from headrace.config._interpolate import interpolate
from headrace.config._secrets import forget_secrets

from .conftest import run_cli

CANARY = "canary-Zq81x"
ESC_CSV = "x,a\x1b[2Kfake\n1,2\n"
ESC_PIPELINE = """
version: 1
name: esc
source: {use: csv, path: in.csv}
steps:
  - use: select
    columns: ["a\\e[2Kfake"]
sink: {use: jsonl, path: out.jsonl}
"""
SECRET_PIPELINES = {
    # validate passes (the file is opened at run time); run fails naming the path.
    "missing-path": """
        version: 1
        name: leak
        source: {use: csv, path: "data/${MY_API_TOKEN}.csv"}
        sink: {use: jsonl, path: out.jsonl}
        """,
    # validate and run both fail quoting the expression.
    "bad-expression": """
        version: 1
        name: leak
        source: {use: csv, path: in.csv}
        steps: [{use: filter, where: "x > '${MY_API_TOKEN}' +"}]
        sink: {use: jsonl, path: out.jsonl}
        """,
}
COMMANDS = {
    "validate": ("validate",),
    "validate-json": ("validate", "--json"),
    "run": ("run",),
    "run-json": ("run", "--json"),
    "run-debug": ("--debug", "run"),
    "run-json-logs": ("-vv", "--log-format", "json", "run"),
}


@pytest.fixture
def forget() -> Iterator[None]:
    """Secrets registered in this process are forgotten after the test."""
    yield
    forget_secrets()


@pytest.mark.parametrize("how", ["option", "env"])
def test_json_logs_are_one_object_per_line(write, tmp_path: Path, how: str) -> None:
    """--log-format json (or HEADRACE_LOG_FORMAT=json) writes parseable JSON log lines."""
    write("in.csv", ESC_CSV)
    path = write("p.yaml", ESC_PIPELINE)
    args = ("--log-format", "json") if how == "option" else ()
    env = {"HEADRACE_LOG_FORMAT": "json"} if how == "env" else {}
    result = run_cli(*args, "-v", "run", str(path), env=env)
    assert result.code == 0, result.stderr
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    engine = [entry for entry in logs if entry["logger"] == "headrace.engine"]
    assert engine, result.stderr
    entry = engine[0]
    assert list(entry)[:4] == ["ts", "level", "logger", "message"]
    assert entry["level"] == "INFO"
    assert datetime.fromisoformat(entry["ts"]).utcoffset() is not None
    assert entry["message"].endswith("a\x1b[2Kfake")
    assert "\x1b" not in result.stderr


def test_text_logs_keep_their_format_and_escape_controls(write) -> None:
    """The default text format is unchanged, with a terminal escape shown as \\x1b."""
    write("in.csv", ESC_CSV)
    path = write("p.yaml", ESC_PIPELINE)
    result = run_cli("-v", "run", str(path))
    assert result.code == 0, result.stderr
    assert ("headrace INFO headrace.engine: reading only the columns the pipeline uses: "
            "a\\x1b[2Kfake") in result.stderr.splitlines()
    assert "\x1b" not in result.stderr


def test_unknown_log_format_is_a_usage_error() -> None:
    """--log-format xml is refused with exit 2."""
    assert run_cli("--log-format", "xml", "schema").code == 2


@pytest.mark.parametrize("command", list(COMMANDS), ids=list(COMMANDS))
@pytest.mark.parametrize("case", list(SECRET_PIPELINES), ids=list(SECRET_PIPELINES))
def test_secret_variable_is_never_printed(write, tmp_path: Path, case: str, command: str) -> None:
    """A ${MY_API_TOKEN} value appears in no output, summary file or error, only as ***."""
    write("in.csv", "x\n1\n")
    path = write("p.yaml", SECRET_PIPELINES[case])
    result = run_cli(*COMMANDS[command], str(path), env={"MY_API_TOKEN": CANARY})
    output = result.stdout + result.stderr
    assert CANARY not in output
    if result.code != 0:
        assert "***" in output, output
    summary = tmp_path / ".headrace" / "runs" / "leak" / "summary.json"
    if summary.exists():
        assert CANARY not in summary.read_text()


def test_variable_not_named_like_a_secret_is_printed(write) -> None:
    """Only secret-looking names are hidden: a data path stays readable in errors."""
    path = write("p.yaml", SECRET_PIPELINES["missing-path"].replace("MY_API_TOKEN", "DAY"))
    result = run_cli("run", str(path), env={"DAY": "2024-05-01"})
    assert result.code == 1
    assert "data/2024-05-01.csv" in result.stderr


@pytest.mark.parametrize(("name", "secret"), [
    ("MY_API_TOKEN", True), ("db_password", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("PGPASSWD", True), ("GOOGLE_APPLICATION_CREDENTIALS", True), ("SENTRY_DSN", True),
    ("BASIC_AUTH", True), ("DATA_DIR", False), ("DAY", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    """A name is secret when it contains TOKEN, SECRET, PASSWORD, KEY, AUTH, DSN..."""
    assert is_secret_name(name) is secret


def test_interpolation_registers_secret_values_only(forget: None) -> None:
    """Interpolating ${X_TOKEN} registers its value; ${DATA_DIR} is left readable."""
    env = {"X_TOKEN": "tok-123456", "DATA_DIR": "/srv/data"}
    data = interpolate({"a": "${DATA_DIR}/${X_TOKEN}"}, env, lambda loc: "p.yaml")
    assert data == {"a": "/srv/data/tok-123456"}
    assert redact(data["a"]) == "/srv/data/***"


def test_redact_hides_quoted_forms_and_skips_tiny_values(forget: None) -> None:
    """A secret is hidden raw, inside repr() and JSON; values under 4 characters are not."""
    secret = 'pa"ss\\word'
    register_secret(secret)
    register_secret("ab")
    assert redact(f"raw {secret} repr {secret!r} json {json.dumps(secret)}") == \
        "raw *** repr '***' json \"***\""
    assert redact("ab") == "ab"
    assert redact_data({"k": [secret, 1]}) == {"k": ["***", 1]}


@pytest.mark.parametrize(("url", "expected"), [
    ("postgres://app:s3cret@db:5432/x", "postgres://app:***@db:5432/x"),
    ("connect redis://:pw@cache/0 failed", "connect redis://:***@cache/0 failed"),
    ("https://u:p@ss@host/a", "https://u:***@host/a"),
    ("http://host:8080/path", "http://host:8080/path"),
    ("user@example.com: x", "user@example.com: x"),
], ids=["password", "no-user", "at-in-password", "port-not-password", "not-a-url"])
def test_url_passwords_are_redacted(url: str, expected: str) -> None:
    """user:password@host in a URL becomes user:***@host; ports and e-mails are kept."""
    assert redact(url) == expected


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("headrace.test", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    return record


def test_text_format_escapes_fake_log_lines(forget: None) -> None:
    """A message holding a newline and a fake log line stays on one text line."""
    register_secret("hunter22")
    line = TextFormatter().format(_record("bad row: x\nheadrace ERROR root: hunter22"))
    assert line == "headrace WARNING headrace.test: bad row: x\\nheadrace ERROR root: ***"


def test_text_format_indents_tracebacks() -> None:
    """A traceback follows the line, indented, so no fake line reaches column 0."""
    try:
        raise ValueError("boom\nheadrace ERROR root: fake")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    lines = TextFormatter().format(record).splitlines()
    assert lines[0] == "headrace WARNING headrace.test: failed"
    assert all(line.startswith("    ") for line in lines[1:])
    assert any("headrace ERROR root: fake" in line for line in lines[1:])


def test_json_format_is_one_line_with_extras_redacted(forget: None) -> None:
    """JSON logs: one line, control characters encoded, extra fields kept and redacted."""
    register_secret("hunter22")
    text = JsonFormatter().format(_record("a\nb\x1b[31m\x85", step="derive",
                                          detail={"dsn": "pg://u:hunter22@h/db"}))
    assert "\n" not in text and "\x1b" not in text and "\x85" not in text
    entry = json.loads(text)
    assert entry["message"] == "a\nb\x1b[31m\x85"
    assert entry["step"] == "derive"
    assert entry["detail"] == {"dsn": "pg://u:***@h/db"}
