"""Templates that build requests from records: ``"{zip}"``, ``"/users/{user.id}"``.

A field reference is ``{name}`` or a dotted path into nested fields, ``{a.b}``; ``{{`` and
``}}`` are literal braces. Templates are compiled once, so a typo is a config error at
``headrace validate`` and rendering a record is a join of parts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")
WHOLE_RECORD = "*"


class TemplateError(ValueError):
    """A template that cannot be compiled; the message names what is wrong."""


class MissingField(KeyError):
    """A record lacks a field a template uses (that record goes to the dead-letter output)."""

    def __str__(self) -> str:
        return f"record has no field {self.args[0]!r}"


def lookup(record: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path``; ``MissingField`` when absent or null."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, Mapping) or value.get(part) is None:
            raise MissingField(path)
        value = value[part]
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Template:
    """A compiled string template. ``parts`` alternate literal text and field paths."""

    source: str
    literals: tuple[str, ...]
    fields: tuple[str, ...]

    @classmethod
    def compile(cls, source: str) -> Template:
        literals: list[str] = []
        fields: list[str] = []
        text: list[str] = []
        pos = 0
        for match in _TOKEN.finditer(source):
            text.append(source[pos:match.start()])
            pos = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                text.append(token[0])
            elif match.group(1) is None:
                raise TemplateError(f"unbalanced {token!r} in {source!r} (write {token * 2} "
                                    "for a literal brace)")
            else:
                name = match.group(1).strip()
                if name != WHOLE_RECORD and not _FIELD.match(name):
                    raise TemplateError(f"{{{match.group(1)}}} in {source!r} is not a field "
                                        "name (letters, digits, _ and -, dots for nesting)")
                literals.append("".join(text))
                text.clear()
                fields.append(name)
        text.append(source[pos:])
        literals.append("".join(text))
        return cls(source, tuple(literals), tuple(fields))

    @property
    def is_single_field(self) -> bool:
        """``"{name}"`` and nothing else: the value keeps its type in JSON bodies."""
        return len(self.fields) == 1 and self.literals == ("", "")

    def render(self, record: Mapping[str, Any],
               encode: Callable[[str], str] | None = None) -> str:
        if not self.fields:
            return self.literals[0]
        out = [self.literals[0]]
        for name, literal in zip(self.fields, self.literals[1:], strict=True):
            value = _text(lookup(record, name))
            out.append(encode(value) if encode is not None else value)
            out.append(literal)
        return "".join(out)


def compile_value(value: Any) -> Any:
    """Compile every string in a JSON-like value (a request body template)."""
    if isinstance(value, str):
        return Template.compile(value)
    if isinstance(value, Mapping):
        return {str(k): compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    return value


def render_value(template: Any, record: Mapping[str, Any]) -> Any:
    """A JSON body for ``record``: ``"{f}"`` keeps f's type, ``"{*}"`` is the whole record."""
    if isinstance(template, Template):
        if template.is_single_field:
            name = template.fields[0]
            return dict(record) if name == WHOLE_RECORD else lookup(record, name)
        return template.render(record)
    if isinstance(template, dict):
        return {k: render_value(v, record) for k, v in template.items()}
    if isinstance(template, list):
        return [render_value(v, record) for v in template]
    return template


def value_fields(template: Any) -> set[str]:
    """The top-level record fields a compiled value template reads (``*``: all)."""
    if isinstance(template, Template):
        return {f.split(".")[0] for f in template.fields}
    if isinstance(template, dict):
        return set().union(*(value_fields(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(value_fields(v) for v in template))
    return set()


def encode_component(value: str) -> str:
    """A value inside a URL path or query: every reserved character percent-encoded."""
    return quote(value, safe="")


@dataclass(frozen=True)
class UrlTemplate:
    """A URL template. Fields before the path (``{base}/x``, ``http://{host}/``) are inserted
    as they are, so the URL's destination comes from data and is checked as such; fields in
    the path or query are percent-encoded and cannot change the destination."""

    template: Template
    raw_fields: int  # how many leading fields are inserted unencoded

    @classmethod
    def compile(cls, source: str) -> UrlTemplate:
        template = Template.compile(source)
        first = template.literals[0]
        if not template.fields:
            return cls(template, 0)
        scheme_end = first.find("://")
        if scheme_end < 0:
            if first:
                raise TemplateError(f"{source!r} is not an absolute URL (http://... or a "
                                    "field holding one, like {url})")
            return cls(template, _fields_before_path(template))
        authority = first[scheme_end + 3:]
        if "/" in authority or "?" in authority:
            return cls(template, 0)  # the destination is fixed in the pipeline file
        return cls(template, _fields_before_path(template))

    @property
    def from_data(self) -> bool:
        """Whether records decide which host a request goes to."""
        return self.raw_fields > 0

    def render(self, record: Mapping[str, Any]) -> str:
        t = self.template
        if not t.fields:
            return t.literals[0]
        out = [t.literals[0]]
        for i, (name, literal) in enumerate(zip(t.fields, t.literals[1:], strict=True)):
            value = _text(lookup(record, name))
            out.append(value if i < self.raw_fields else encode_component(value))
            out.append(literal)
        return "".join(out)


def _fields_before_path(template: Template) -> int:
    """How many fields come before the literal text that starts the path."""
    count = 0
    for literal in template.literals[1:]:
        count += 1
        if "/" in literal or "?" in literal:
            break
    return count
