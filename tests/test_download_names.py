"""File names from data: a value becomes one safe path segment, templates only add the
directories their author wrote, and the final path never leaves the output root."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
import yarl
from hypothesis import given
from hypothesis import strategies as st

from headrace.builtins._http._names import (
    UnsafeName,
    check_name_template,
    name_from_url,
    render_name,
    resolve_under,
    safe_segment,
)

HOSTILE = ["../../x", "/etc/passwd", "%2e%2e%2f", "a\0b", "x" * 4096, "CON", "..\\..\\x",
           "~/.ssh/id_rsa", "a/../../b", "\x1b[31mred", "con.txt", "name. . ."]


def short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


@pytest.mark.parametrize(("value", "expected"), [
    pytest.param("report.csv", "report.csv", id="plain"),
    pytest.param("résumé 2024.pdf", "résumé 2024.pdf", id="unicode-and-space"),
    pytest.param("../../x", ".._.._x", id="parent-traversal"),
    pytest.param("..\\..\\x", ".._.._x", id="backslash-traversal"),
    pytest.param("/etc/passwd", "_etc_passwd", id="absolute"),
    pytest.param("%2e%2e%2f", "%2e%2e%2f", id="percent-encoded-stays-literal"),
    pytest.param("a\0b", "a_b", id="nul"),
    pytest.param("tab\there\nnew", "tab_here_new", id="c0-controls"),
    pytest.param("\x1b[31mred", "_[31mred", id="ansi-escape"),
    pytest.param("del\x7f", "del_", id="del"),
    pytest.param("c1\x85x", "c1_x", id="c1-control"),
    pytest.param("lone\ud800surrogate", "lone_surrogate", id="lone-surrogate"),
    pytest.param("name.", "name", id="trailing-dot"),
    pytest.param("name. . ", "name", id="trailing-dots-and-spaces"),
    pytest.param(".hidden", ".hidden", id="leading-dot-kept"),
    pytest.param(" lead", " lead", id="leading-space-kept"),
    pytest.param("...x", "...x", id="dots-then-name"),
    pytest.param("/", "_", id="only-separator"),
    pytest.param("CON", "_CON", id="con"),
    pytest.param("con.txt", "_con.txt", id="con-with-extension"),
    pytest.param("Con .txt", "_Con .txt", id="con-space-extension"),
    pytest.param("con.", "_con", id="con-trailing-dot"),
    pytest.param("nul.tar.gz", "_nul.tar.gz", id="nul-double-extension"),
    pytest.param("prn", "_prn", id="prn"),
    pytest.param("AUX", "_AUX", id="aux"),
    pytest.param("COM1", "_COM1", id="com1"),
    pytest.param("lpt9.log", "_lpt9.log", id="lpt9"),
    pytest.param("COM¹", "_COM¹", id="com-superscript"),
    pytest.param("CONSOLE", "CONSOLE", id="not-a-device"),
    pytest.param("xcon", "xcon", id="device-as-suffix"),
    pytest.param("COM10", "COM10", id="com10-is-a-name"),
])
def test_safe_segment(value: str, expected: str) -> None:
    """A data value becomes exactly one portable path segment."""
    assert safe_segment(value) == expected


@pytest.mark.parametrize("value", ["", ".", "..", "...", " ", ". .", " . . "])
def test_safe_segment_refuses_names_that_are_nothing(value: str) -> None:
    """Values that leave no name (empty, dots, spaces) are UnsafeName, naming the value."""
    with pytest.raises(UnsafeName) as info:
        safe_segment(value)
    assert str(info.value) == f"{value!r} is not a usable file name"


def test_unsafe_name_message_stays_short_for_huge_values() -> None:
    """A 5000-character value is named by its start and length, not in full."""
    with pytest.raises(UnsafeName) as info:
        safe_segment("." * 5000)
    assert len(str(info.value)) < 120
    assert "(5000 characters)" in str(info.value)


def test_long_name_is_cut_to_255_bytes_with_a_hash_of_the_value() -> None:
    """A 4096-character name is cut to 255 bytes, marked with 8 hex digits of its SHA-256."""
    value = "x" * 4096
    name = safe_segment(value)
    assert name == "x" * 246 + "-" + short_hash(value)
    assert len(name.encode()) == 255


def test_long_names_keep_a_short_extension() -> None:
    """The extension survives the cut, so the file type does too."""
    value = "y" * 300 + ".json"
    assert safe_segment(value) == "y" * 241 + "-" + short_hash(value) + ".json"


def test_long_extension_is_not_kept() -> None:
    """An 'extension' longer than 16 bytes is just part of the name."""
    value = "a." + "b" * 300
    name = safe_segment(value)
    assert name == value[:246] + "-" + short_hash(value)


def test_long_names_stay_distinct() -> None:
    """Two long names that differ only past the cut get different names."""
    first, second = "z" * 400 + "1", "z" * 400 + "2"
    assert safe_segment(first) != safe_segment(second)
    assert safe_segment(first)[:246] == safe_segment(second)[:246]


@pytest.mark.parametrize(("char", "kept", "size"), [
    pytest.param("é", 121, 255, id="two-byte-fills-the-room"),
    pytest.param("€", 80, 253, id="three-byte-leaves-a-gap"),
])
def test_long_multibyte_names_are_cut_on_a_character_boundary(
    char: str, kept: int, size: int
) -> None:
    """The cut never splits a UTF-8 sequence, so it may stop short of 255 bytes."""
    value = char * 200 + ".jpg"
    name = safe_segment(value)
    assert name == char * kept + "-" + short_hash(value) + ".jpg"
    assert len(name.encode()) == size


@pytest.mark.parametrize(("length", "cut"), [(255, False), (256, True)])
def test_the_limit_is_255_bytes(length: int, cut: bool) -> None:
    """Exactly 255 bytes is kept as is; one more byte is cut."""
    value = "k" * length
    assert (safe_segment(value) != value) is cut
    assert len(safe_segment(value).encode()) == 255


@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=600))
def test_safe_segment_never_yields_a_path(value: str) -> None:
    """Whatever the value, the result is one segment: no separator, control character, '.'
    or '..', at most 255 bytes, encodable; or UnsafeName."""
    try:
        name = safe_segment(value)
    except UnsafeName:
        return
    assert "/" not in name
    assert "\\" not in name
    assert name not in ("", ".", "..")
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)
    assert len(name.encode()) <= 255
    assert os.fsencode(name)


# Templates.

@pytest.mark.parametrize(("template", "fields"), [
    pytest.param("{category}/{id}.bin", ["category", "id"], id="two-levels"),
    pytest.param("{b}/{a}-{b}.txt", ["b", "a"], id="deduplicated-in-order"),
    pytest.param("out.bin", [], id="constant"),
    pytest.param("{{literal}}/{id}", ["id"], id="escaped-braces"),
    pytest.param("a/b/c/{id}", ["id"], id="literal-directories"),
    pytest.param("{user-id}_{0}", ["user-id", "0"], id="unusual-keys"),
    pytest.param(".cache/{id}", ["id"], id="hidden-directory"),
])
def test_check_name_template_returns_the_fields(template: str, fields: list[str]) -> None:
    """A good template lists the record fields it uses."""
    assert check_name_template(template) == fields


@pytest.mark.parametrize(("template", "message"), [
    pytest.param("", "the name template is empty", id="empty"),
    pytest.param("/tmp/{id}", "is absolute", id="absolute"),
    pytest.param("../{id}", "has an empty, '.' or '..' directory", id="parent"),
    pytest.param("a/../{id}", "has an empty, '.' or '..' directory", id="inner-parent"),
    pytest.param("./{id}", "has an empty, '.' or '..' directory", id="dot"),
    pytest.param("a//{id}", "has an empty, '.' or '..' directory", id="empty-segment"),
    pytest.param("{id}/", "has an empty, '.' or '..' directory", id="trailing-slash"),
    pytest.param("a\\{id}", "holds a backslash or a control character", id="backslash"),
    pytest.param("a\0/{id}", "holds a backslash or a control character", id="nul"),
    pytest.param("{id", "expected '}' before end of string", id="unclosed"),
    pytest.param("id}", "Single '}' encountered", id="unopened"),
    pytest.param("{a/b}", "expected '}' before end of string", id="brace-across-slash"),
    pytest.param("{}", "'{}' must name a field", id="positional"),
    pytest.param("{id!r}", "may not have a conversion or format spec", id="conversion"),
    pytest.param("{id:>8}", "may not have a conversion or format spec", id="format-spec"),
    pytest.param("{id:{width}}", "may not have a conversion or format spec", id="nested-spec"),
    pytest.param("{user.name}", "must be a plain field name", id="attribute"),
    pytest.param("{items[0]}", "must be a plain field name", id="index"),
    pytest.param("{__class__.__init__}", "must be a plain field name", id="dunder-attribute"),
    pytest.param("con/{id}", "'con' is not a portable file name (it would be written as '_con')",
                 id="device-directory"),
    pytest.param("out./{id}", "is not a portable file name", id="trailing-dot-directory"),
])
def test_bad_templates_are_value_errors(template: str, message: str) -> None:
    """A bad template is rejected when checked (and again when rendering)."""
    with pytest.raises(ValueError) as info:
        check_name_template(template)
    assert message in str(info.value)
    with pytest.raises(ValueError):
        render_name(template, {"id": 1, "a": 1, "user": {"name": "x"}, "items": [1]})


@pytest.mark.parametrize(("template", "record", "expected"), [
    pytest.param("{category}/{id}.bin", {"category": "books", "id": 7}, "books/7.bin",
                 id="plain"),
    pytest.param("{category}/{id}.bin", {"category": "../../etc", "id": 7}, ".._.._etc/7.bin",
                 id="traversal-value"),
    pytest.param("{category}/{id}.bin", {"category": "/etc/passwd", "id": 7},
                 "_etc_passwd/7.bin", id="absolute-value"),
    pytest.param("{id}", {"id": "a/b/c"}, "a_b_c", id="value-adds-no-directory"),
    pytest.param("{id}", {"id": "%2e%2e%2f"}, "%2e%2e%2f", id="percent-encoded-literal"),
    pytest.param("{id}", {"id": "a\0b"}, "a_b", id="nul"),
    pytest.param("{id}", {"id": "CON"}, "_CON", id="device"),
    pytest.param("{id}.txt", {"id": "con"}, "_con.txt", id="device-with-literal-extension"),
    pytest.param("{id}.bin", {"id": ".."}, "...bin", id="dotdot-with-suffix-is-a-name"),
    pytest.param("x{id}", {"id": ""}, "x", id="empty-value-with-literal"),
    pytest.param("{flag}-{n}-{f}", {"flag": True, "n": 3, "f": 1.5}, "true-3-1.5",
                 id="non-strings"),
    pytest.param("{{id}}-{id}", {"id": 1}, "{id}-1", id="escaped-braces"),
    pytest.param("out.bin", {}, "out.bin", id="constant"),
    pytest.param("{a}/{b}/{c}", {"a": "1", "b": "2", "c": "3"}, "1/2/3", id="three-levels"),
    pytest.param("{id}", {"id": "name. "}, "name", id="trailing-dot-space"),
])
def test_render_name(template: str, record: dict[str, Any], expected: str) -> None:
    """Values fill the template, each made safe; only the template's '/' make directories."""
    assert render_name(template, record) == expected


@pytest.mark.parametrize("value", ["..", ".", "", " ", "..."])
def test_render_name_refuses_a_segment_that_is_nothing(value: str) -> None:
    """A whole segment from a value that leaves no name is UnsafeName."""
    with pytest.raises(UnsafeName):
        render_name("files/{id}", {"id": value})


def test_render_name_caps_each_segment() -> None:
    """A 4096-character value yields a segment of at most 255 bytes."""
    name = render_name("{category}/{id}.bin", {"category": "c" * 4096, "id": 1})
    directory, file = name.split("/")
    assert len(directory.encode()) == 255
    assert file == "1.bin"


@pytest.mark.parametrize("record", [
    pytest.param({"category": "a"}, id="missing"),
    pytest.param({"category": "a", "id": None}, id="null"),
])
def test_missing_or_null_field_is_a_key_error_naming_it(record: dict[str, Any]) -> None:
    """A record without the field (or with null) raises KeyError('id')."""
    with pytest.raises(KeyError) as info:
        render_name("{category}/{id}.bin", record)
    assert info.value.args == ("id",)


# URLs.

@pytest.mark.parametrize(("url", "expected"), [
    pytest.param("https://example.com/files/report.pdf?x=1#top", "report.pdf", id="plain"),
    pytest.param("https://example.com/files/", "index", id="trailing-slash"),
    pytest.param("https://example.com", "index", id="no-path"),
    pytest.param("https://example.com/caf%C3%A9.txt", "café.txt", id="decoded"),
    pytest.param("https://example.com/a%2Fb", "a_b", id="encoded-slash"),
    pytest.param("https://example.com/..%2F..%2Fetc%2Fpasswd", ".._.._etc_passwd",
                 id="encoded-traversal"),
    pytest.param("https://example.com/x%00y", "x_y", id="encoded-nul"),
    pytest.param("https://example.com/CON", "_CON", id="device"),
    pytest.param(yarl.URL("https://example.com/a/b.tar.gz"), "b.tar.gz", id="yarl-url"),
])
def test_name_from_url(url: str | yarl.URL, expected: str) -> None:
    """The last path segment, decoded and made safe."""
    assert name_from_url(url) == expected


@pytest.mark.parametrize("url", [
    pytest.param("https://example.com/%2e%2e%2e", id="only-dots"),
    pytest.param("http://[::1/x", id="unparsable"),
])
def test_name_from_url_falls_back_to_the_url_hash(url: str) -> None:
    """When the segment leaves no usable name, the name is the URL's SHA-256."""
    assert name_from_url(url) == hashlib.sha256(url.encode()).hexdigest()


def test_name_from_url_long_segment_is_capped() -> None:
    """A 4096-character segment is cut like any long name."""
    name = name_from_url("https://example.com/" + "n" * 4096 + ".csv")
    assert len(name.encode()) == 255
    assert name.endswith(".csv")


# The final path.

def test_resolve_under_joins_and_creates_nothing(tmp_path: Path) -> None:
    """A relative name under the root resolves there; no directory is made."""
    assert resolve_under(tmp_path, "a/b.txt") == tmp_path.resolve() / "a" / "b.txt"
    assert not (tmp_path / "a").exists()


def test_resolve_under_allows_parents_that_stay_inside(tmp_path: Path) -> None:
    """``a/../b`` is inside the root, so it is fine."""
    assert resolve_under(tmp_path, "a/../b") == tmp_path.resolve() / "b"


@pytest.mark.parametrize(("relative", "message"), [
    pytest.param("../x", "outside", id="parent"),
    pytest.param("a/../../x", "outside", id="inner-parent"),
    pytest.param("/etc/passwd", "is an absolute path", id="absolute"),
    pytest.param("\\x", "is an absolute path", id="backslash-root"),
    pytest.param("", "is not a usable file name", id="empty"),
    pytest.param(".", "outside", id="the-root-itself"),
    pytest.param("a/..", "outside", id="back-to-the-root"),
    pytest.param("a\0b", "is not a usable file name", id="nul"),
])
def test_resolve_under_refuses(tmp_path: Path, relative: str, message: str) -> None:
    """Anything that is not strictly inside the root is UnsafeName."""
    with pytest.raises(UnsafeName) as info:
        resolve_under(tmp_path, relative)
    assert message in str(info.value)


def test_resolve_under_refuses_a_symlink_pointing_outside(tmp_path: Path) -> None:
    """A directory symlink inside the root that leads out is refused."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeName, match="outside"):
        resolve_under(root, "link/x.bin")
    with pytest.raises(UnsafeName, match="outside"):
        resolve_under(root, "passwd")


def test_resolve_under_follows_symlinks_that_stay_inside(tmp_path: Path) -> None:
    """A symlink to a directory inside the root resolves to its target."""
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    assert resolve_under(tmp_path, "alias/x") == tmp_path.resolve() / "real" / "x"


def test_resolve_under_a_root_that_is_a_symlink(tmp_path: Path) -> None:
    """The root is resolved first, so a symlinked output directory works."""
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    assert resolve_under(tmp_path / "out", "x") == tmp_path.resolve() / "real" / "x"


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_end_up_inside_the_root(tmp_path: Path, value: str) -> None:
    """Rendered and resolved, every hostile value lands one directory below the root."""
    path = resolve_under(tmp_path, render_name("{category}/{id}", {"category": value, "id": 1}))
    assert path.parent.parent == tmp_path.resolve()
    assert path.name == "1"
