"""Our base85 codec is base64.b85encode/b85decode, byte for byte, errors included."""
from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microtvm_registry.project_api.server import b85decode, b85encode

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"

SPEC_VECTORS = [
    (b"", ""),
    (b"\x00", "00"),
    (b"\x00\x00\x00\x00", "00000"),
    (b"hello", "Xk~0{Zv"),
    (b"foo\x1b", "W^ZpB"),
    (b"\xff\xff\xff\xff", "|NsC0"),
    (bytes(range(8)), "009C61O)~M"),
]


@pytest.mark.parametrize("data, text", SPEC_VECTORS)
def test_spec_vectors(data, text):
    assert b85encode(data) == text
    assert b85decode(text) == data
    assert b85decode(text.encode()) == data


@pytest.mark.parametrize("size", [1, 2, 3, 5, 4 * 65536 - 1, 4 * 65536, 4 * 65536 + 3, 3 * 4 * 65536 + 1, 1 << 20])
def test_sizes_around_chunk_boundaries(size):
    data = os.urandom(size)
    expected = base64.b85encode(data)
    assert b85encode(data) == expected.decode()
    assert b85encode(bytearray(data)) == expected.decode()
    assert b85encode(memoryview(data)) == expected.decode()
    assert b85decode(expected) == data
    assert b85decode(expected.decode()) == data
    assert b85decode(memoryview(expected)) == data


def test_extreme_words():
    for word in [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x00\x00\x00\x01", b"\xff\xff\xff\xfe",
                 b"\x80\x00\x00\x00", b"\x7f\xff\xff\xff"]:
        data = word * 1000
        assert b85encode(data) == base64.b85encode(data).decode()
        assert b85decode(b85encode(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_encode_matches_stdlib(data):
    assert b85encode(data) == base64.b85encode(data).decode()
    assert b85decode(b85encode(data)) == data


def _outcome(fn, arg):
    try:
        return ("ok", fn(arg))
    except Exception as exc:  # the type and message must match too
        return (type(exc).__name__, str(exc))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(ALPHABET[-12:] + ALPHABET[:4] + " ,\x7f\u00e9"), max_size=30))
def test_decode_matches_stdlib_including_errors(text):
    assert _outcome(b85decode, text) == _outcome(base64.b85decode, text)
    raw = text.encode("utf-8")
    assert _outcome(b85decode, raw) == _outcome(base64.b85decode, raw)


@pytest.mark.parametrize("text", ["|NsC1", "~~~~~", "00000|NsC1", "0000" + "|" * 2, "ab cd", "abc,d", "\\\\"])
def test_decode_error_messages(text):
    assert _outcome(b85decode, text) == _outcome(base64.b85decode, text)
    assert _outcome(b85decode, text)[0] == "ValueError"


def test_overflow_before_a_later_bad_character_is_reported_first():
    big = bytearray(base64.b85encode(os.urandom(4 * 65536 * 2)))
    big[5 * 70000:5 * 70000 + 5] = b"~~~~~"
    big[-3] = ord(" ")
    assert _outcome(b85decode, bytes(big)) == _outcome(base64.b85decode, bytes(big))
    assert "overflow" in _outcome(b85decode, bytes(big))[1]
