"""A JSON Schema from the pipeline (``schema:``) or a file (``schema_file:``), compiled by
jsonschema-rs; a schema that is not valid is a config error naming ``file:line``.

Remote ``$ref`` are never fetched (``offline``): a schema resolves only within itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headrace.errors import ConfigValueError

from ._values import FieldError, format_path

Where = Callable[[tuple[str | int, ...]], str]  # a path in the schema -> "file:line"


def read_schema_file(path: Path, where_option: str) -> tuple[dict[str, Any], Where]:
    """The schema in ``path`` and a locator of its keys' lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigValueError(f"{where_option}: cannot read schema_file {path}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigValueError(f"{path}:{exc.lineno}: not valid JSON (column {exc.colno}): "
                               f"{exc.msg}") from None
    if not isinstance(schema, dict | bool):
        raise ConfigValueError(f"{path}:1: a JSON Schema is an object or a boolean, "
                               f"not {type(schema).__name__}")
    lines: dict[tuple[str | int, ...], int] | None = None

    def where(key: tuple[str | int, ...]) -> str:
        nonlocal lines
        if lines is None:
            lines = json_key_lines(text)
        for end in range(len(key), -1, -1):
            line = lines.get(key[:end])
            if line is not None:
                return f"{path}:{line}"
        return str(path)

    return schema if isinstance(schema, dict) else {"not": {}} if not schema else {}, where


def compile_schema(schema: dict[str, Any], where: Where, *, formats: bool) -> Any:
    """A jsonschema-rs validator for ``schema`` (draft from ``$schema``, 2020-12 by default)."""
    import jsonschema_rs

    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        path = tuple(exc.instance_path)
        raise ConfigValueError(f"{where(path)}: invalid JSON Schema at "
                               f"{format_path(path)}: {exc.message}") from None
    except jsonschema_rs.ReferencingError:
        pass  # an unknown $schema URI: the validator below names it
    try:
        if "$schema" not in schema:
            return jsonschema_rs.Draft202012Validator(
                schema, validate_formats=formats, offline=True)
        return jsonschema_rs.validator_for(schema, validate_formats=formats, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as exc:
        path = tuple(getattr(exc, "schema_path", ()) or ())
        message = getattr(exc, "message", None) or str(exc).splitlines()[0]
        raise ConfigValueError(f"{where(path)}: invalid JSON Schema: {message}") from None
    except ValueError as exc:  # e.g. an unknown $schema draft
        raise ConfigValueError(f"{where(())}: invalid JSON Schema: "
                               f"{str(exc).splitlines()[0]}") from None


def schema_errors(validator: Any, record: Any) -> list[FieldError]:
    """Every error of ``record``, with its field's path (a missing required property is
    named by its own path: ``$.email: "email" is a required property``)."""
    errors: list[FieldError] = []
    for error in validator.iter_errors(record):
        path = list(error.instance_path)
        missing = getattr(error.kind, "property", None)
        if type(error.kind).__name__ == "Required" and isinstance(missing, str):
            path.append(missing)
        errors.append((format_path(path), error.message))
    return errors


def json_key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """The 1-based line of every key and array item of the JSON document ``text``."""
    decoder = json.JSONDecoder()
    lines: dict[tuple[str | int, ...], int] = {}
    from json.decoder import scanstring  # type: ignore[attr-defined]

    def skip_ws(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    def value(i: int, path: tuple[str | int, ...]) -> int:
        i = skip_ws(i)
        lines.setdefault(path, line_at(i))
        if text[i] == "{":
            i = skip_ws(i + 1)
            if text[i] == "}":
                return i + 1
            while True:
                i = skip_ws(i)
                key, end = scanstring(text, i + 1)
                lines[(*path, key)] = line_at(i)
                i = skip_ws(end)  # at ':'
                i = skip_ws(value(i + 1, (*path, key)))
                if text[i] == "}":
                    return i + 1
                i += 1  # ','
        if text[i] == "[":
            i = skip_ws(i + 1)
            if text[i] == "]":
                return i + 1
            index = 0
            while True:
                i = skip_ws(value(i, (*path, index)))
                index += 1
                if text[i] == "]":
                    return i + 1
                i += 1
        _, end = decoder.raw_decode(text, i)
        return int(end)

    value(0, ())
    return lines
