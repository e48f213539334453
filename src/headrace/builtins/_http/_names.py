"""File names from data that can never escape the output directory.

A download's name comes from a record or a URL, so it may be ``../../x``, ``/etc/passwd``,
hold a NUL, be 4096 characters long or name a Windows device. A value becomes exactly one
path segment (``safe_segment``); only the pipeline author's template adds directories
(``render_name``); and the final path is checked to stay under the root, symlinks followed
(``resolve_under``). Values are never percent-decoded, so ``%2e%2e%2f`` stays a literal name.
"""

from __future__ import annotations

import functools
import hashlib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from string import Formatter
from typing import Any

import yarl

__all__ = ["UnsafeName", "check_name_template", "name_from_url", "render_name",
           "resolve_under", "safe_segment"]

MAX_SEGMENT_BYTES = 255
_MAX_EXTENSION_BYTES = 16
_HASH_CHARS = 8
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in [*"0123456789", "¹", "²", "³"]}
)


class UnsafeName(Exception):
    """A file name from data that cannot be made safe; terminal (the record is dead-lettered)."""


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(value)} characters)"


def _unprintable(char: str) -> bool:
    """A control character (C0, DEL, C1) or a lone surrogate (no file system can store it)."""
    return unicodedata.category(char) in ("Cc", "Cs")


def _clean(value: str) -> str:
    """``value`` with path separators and unprintable characters made ``_``."""
    return "".join("_" if c in "/\\" or _unprintable(c) else c for c in value)


def safe_segment(value: str) -> str:
    """One path segment from a data value.

    Separators, control characters and lone surrogates become ``_``; trailing dots and
    spaces are dropped (Windows drops them, so ``x.`` would alias ``x`` and ``CON.`` the
    device); an empty result, ``.`` or ``..`` is ``UnsafeName``; a Windows device name
    (``CON``, ``com1.txt``) gets a ``_`` prefix; past 255 UTF-8 bytes the name is cut,
    keeping a short extension, and marked with 8 hex digits of the SHA-256 of ``value`` so
    long names stay distinct. Leading dots and spaces are kept.
    """
    name = _clean(value).rstrip(". ")
    if not name:
        raise UnsafeName(f"{_shown(value)} is not a usable file name")
    if name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED:
        name = "_" + name
    if len(name.encode()) <= MAX_SEGMENT_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    extension = dot + ext
    if not stem or len(extension.encode()) > _MAX_EXTENSION_BYTES:
        stem, extension = name, ""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    marker = "-" + digest[:_HASH_CHARS]
    room = MAX_SEGMENT_BYTES - len(marker.encode()) - len(extension.encode())
    cut = stem.encode()[:room].decode("utf-8", "ignore")
    return cut + marker + extension


@functools.lru_cache(maxsize=256)
def _parse(template: str) -> tuple[tuple[tuple[str, str | None], ...], ...]:
    """Segments of ``(literal, field)`` pairs; ``ValueError`` naming what is wrong."""
    if not template:
        raise ValueError("the name template is empty")
    if template.startswith("/"):
        raise ValueError(f"name template {template!r} is absolute; names are relative to "
                         "the output directory")
    if "\\" in template or any(_unprintable(c) for c in template):
        raise ValueError(f"name template {template!r} holds a backslash or a control "
                         "character; separate directories with '/'")
    segments: list[tuple[tuple[str, str | None], ...]] = []
    for segment in template.split("/"):
        try:
            parts = tuple(Formatter().parse(segment))
        except ValueError as exc:
            raise ValueError(f"name template {template!r}: {exc} (write {{{{ or }}}} for a "
                             "literal brace)") from exc
        pairs: list[tuple[str, str | None]] = []
        for literal, field, spec, conversion in parts:
            if field is not None:
                _check_field(template, field, spec, conversion)
            pairs.append((literal, field))
        if not any(field is not None for _, field in pairs):
            text = "".join(literal for literal, _ in pairs)
            if text in ("", ".", ".."):
                raise ValueError(f"name template {template!r} has an empty, '.' or '..' "
                                 "directory")
            try:
                safe = safe_segment(text)
            except UnsafeName as exc:
                raise ValueError(f"name template {template!r}: {exc}") from exc
            if safe != text:
                raise ValueError(f"name template {template!r}: {text!r} is not a portable "
                                 f"file name (it would be written as {safe!r})")
        segments.append(tuple(pairs))
    return tuple(segments)


def _check_field(template: str, field: str, spec: str | None, conversion: str | None) -> None:
    if not field:
        raise ValueError(f"name template {template!r}: '{{}}' must name a field")
    if conversion is not None or spec:
        raise ValueError(f"name template {template!r}: {{{field}}} may not have a conversion "
                         "or format spec")
    if "." in field or "[" in field or "]" in field:
        raise ValueError(f"name template {template!r}: {{{field}}} must be a plain field "
                         "name (no attribute access or indexing)")


def check_name_template(template: str) -> list[str]:
    """The field names ``template`` uses, in order; ``ValueError`` for a bad template.

    Literal ``/`` separates directories. Rejected: empty or absolute templates, backslashes
    and control characters, ``.``/``..``/empty directories, unbalanced braces, ``{}``,
    conversions, format specs, attribute access and indexing.
    """
    names: dict[str, None] = {}
    for segment in _parse(template):
        for _, field in segment:
            if field is not None:
                names[field] = None
    return list(names)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def render_name(template: str, record: Mapping[str, Any]) -> str:
    """The relative file name for ``record``: ``"{category}/{id}.bin"`` -> ``"books/7.bin"``.

    Values cannot add directories (separators become ``_``) and every rendered segment goes
    through ``safe_segment``. A missing or null field raises ``KeyError`` naming it.
    """
    out: list[str] = []
    for segment in _parse(template):
        text: list[str] = []
        for literal, field in segment:
            text.append(literal)
            if field is not None:
                value = record.get(field)
                if value is None:
                    raise KeyError(field)
                text.append(_clean(_text(value)))
        out.append(safe_segment("".join(text)))
    return "/".join(out)


def name_from_url(url: yarl.URL | str) -> str:
    """A file name from the URL's last path segment, decoded and made safe; ``index`` when
    the path ends with ``/``; the SHA-256 hex digest of the URL when neither is usable."""
    try:
        parsed = url if isinstance(url, yarl.URL) else yarl.URL(url)
        return safe_segment(parsed.name or "index")
    except (ValueError, UnsafeName):
        return hashlib.sha256(str(url).encode("utf-8", "surrogatepass")).hexdigest()


def resolve_under(root: Path, relative: str) -> Path:
    """``root / relative`` resolved (symlinks followed where they exist); ``UnsafeName``
    unless it names something strictly inside ``root``. Creates nothing.

    The check holds when it runs: a symlink planted later is the writer's to refuse.
    """
    if not relative or "\0" in relative:
        raise UnsafeName(f"{_shown(relative)} is not a usable file name")
    if Path(relative).is_absolute() or relative.startswith(("/", "\\")):
        raise UnsafeName(f"{_shown(relative)} is an absolute path")
    base = root.resolve()
    target = (base / relative).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafeName(f"{_shown(relative)} resolves to {target}, outside {base}")
    return target
