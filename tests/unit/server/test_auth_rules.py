"""The signed-URL rules of API.md at their edges, on ``server.auth`` and through the app:
expiry at ``exp == now``, repeated parameter names sorted by value, and the comparison being
``hmac.compare_digest`` (constant-time) for signatures and viewer tokens."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from wsi_streamer.config import Config
from wsi_streamer.errors import InvalidSignature, SignatureExpired
from wsi_streamer.server import auth

SECRET = "unit-secret"
PATH = "/tiles/a.svs/0/0/0.jpg"
EXP = 1_900_000_000


def reference_sig(message: str) -> str:
    """HMAC-SHA256 of the message, written again from API.md."""
    return hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()


def check(params: list[tuple[str, str]], now: float, viewer_slide: str | None = None) -> None:
    """``verify`` as the app calls it: every (name, value) pair, the request path."""
    auth.verify(SECRET, params, path=PATH, viewer_slide=viewer_slide, now=lambda: now)


def signed(extra: Sequence[tuple[str, str]] = (), exp: int = EXP) -> list[tuple[str, str]]:
    query = [*extra, ("exp", str(exp))]
    return [*query, ("sig", auth.sign(SECRET, PATH, query))]


@pytest.mark.parametrize(("now", "expired"), [
    (EXP - 1, False), (EXP - 0.001, False), (EXP, False),  # exp is the last valid instant
    (EXP + 0.001, True), (EXP + 1, True)])
def test_expiry_at_the_boundary(now: float, expired: bool) -> None:
    params = signed()
    vt = [("exp", str(EXP)), ("vt", auth.viewer_token(SECRET, "a.svs", EXP))]
    for query, slide in ((params, None), (vt, "a.svs")):
        if expired:
            with pytest.raises(SignatureExpired):
                check(query, now, viewer_slide=slide)
        else:
            check(query, now, viewer_slide=slide)


def test_repeated_names_sort_by_value() -> None:
    pairs = [("b", "2"), ("a", "2"), ("exp", str(EXP)), ("a", "10"), ("a", "1")]
    message = f"{PATH}?a=1&a=10&a=2&b=2&exp={EXP}"  # by name, then value (as strings)
    assert auth.canonical_message(PATH, pairs + [("sig", "ignored")]) == message
    check([*pairs, ("sig", reference_sig(message))], EXP - 10)
    wrong_order = f"{PATH}?a=2&a=10&a=1&b=2&exp={EXP}"  # as sent, not sorted
    with pytest.raises(InvalidSignature):
        check([*pairs, ("sig", reference_sig(wrong_order))], EXP - 10)


class Spy:
    """Stands in for ``hmac.compare_digest``: records the calls, answers ``answer`` (or the
    real comparison when None)."""

    def __init__(self, real: Any, answer: bool | None = None) -> None:
        self.real, self.answer = real, answer
        self.calls: list[tuple[str, str]] = []

    def __call__(self, a: str, b: str) -> bool:
        self.calls.append((a, b))
        return bool(self.real(a, b)) if self.answer is None else self.answer


@pytest.mark.parametrize("kind", ["sig", "vt"])
def test_signature_check_is_compare_digest(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    if kind == "sig":
        query, slide = signed(), None
        expected = reference_sig(f"{PATH}?exp={EXP}")
    else:
        expected = auth.viewer_token(SECRET, "a.svs", EXP)
        query, slide = [("exp", str(EXP)), ("vt", expected)], "a.svs"
    spy = Spy(hmac.compare_digest)
    monkeypatch.setattr(hmac, "compare_digest", spy)
    check(query, EXP - 10, viewer_slide=slide)
    assert (expected, expected) in spy.calls  # the valid one was accepted by compare_digest
    # The decision is compare_digest's: told "different", a valid URL is refused ...
    monkeypatch.setattr(hmac, "compare_digest", Spy(hmac.compare_digest, answer=False))
    with pytest.raises(InvalidSignature):
        check(query, EXP - 10, viewer_slide=slide)
    # ... and told "equal", a wrong one passes: no other comparison is made.
    forged = [(k, "0" * 64 if k in ("sig", "vt") else v) for k, v in query]
    monkeypatch.setattr(hmac, "compare_digest", Spy(hmac.compare_digest, answer=True))
    check(forged, EXP - 10, viewer_slide=slide)


@pytest.fixture
def app_config(tmp_path: Path) -> Config:
    """The shared ``client`` fixture's app, with auth on."""
    return Config(slides_dir=str(tmp_path), tile_cache_dir=str(tmp_path / "tc"),
                  auth_enabled=True, auth_secret=SECRET)


def test_app_signs_repeated_parameters_sorted_by_value(client: Any) -> None:
    import time

    exp = str(int(time.time()) + 600)
    sent = [("search", "b"), ("search", "a"), ("exp", exp)]  # not in canonical order
    sig = reference_sig(f"/slides?exp={exp}&search=a&search=b")
    assert client.get("/slides?" + urlencode([*sent, ("sig", sig)])).status_code == 200
    first_only = reference_sig(f"/slides?exp={exp}&search=b")  # one value per name: wrong
    assert client.get("/slides?" + urlencode([*sent, ("sig", first_only)])).status_code == 401


# --- canonical queries, repeated parameters, viewer-token scope (issues 11.6, 15.4) --------


def test_separators_inside_decoded_names_or_values_are_refused() -> None:
    from wsi_streamer.errors import InvalidRequest

    honest = [("a", "1"), ("b", "2"), ("exp", str(EXP))]
    check([*honest, ("sig", auth.sign(SECRET, PATH, honest))], EXP - 10)
    # "?a=1%26b%3D2" decodes to one pair whose canonical text is that of "?a=1&b=2".
    folded = [("a", "1&b=2"), ("exp", str(EXP))]
    assert auth.canonical_message(PATH, folded) == auth.canonical_message(PATH, honest)
    for pairs in (folded, [("a=b", "1"), ("exp", str(EXP))], [("a", "x=y"), ("exp", str(EXP))]):
        with pytest.raises(InvalidRequest):
            check([*pairs, ("sig", auth.sign(SECRET, PATH, pairs))], EXP - 10)


@pytest.mark.parametrize("extra", [[("sig", "ab")], [("vt", "ab")], [("exp", str(EXP))]])
def test_auth_parameters_appear_once(extra: list[tuple[str, str]]) -> None:
    from wsi_streamer.errors import InvalidExpiryFormat, InvalidSignatureFormat

    params = [*signed(), *extra]
    expected = InvalidExpiryFormat if extra[0][0] == "exp" else InvalidSignatureFormat
    with pytest.raises(expected):
        check(params, EXP - 10, viewer_slide="a.svs")


def test_viewer_tokens_authorise_exp_and_vt_only() -> None:
    from wsi_streamer.errors import InvalidParameter

    vt = [("exp", str(EXP)), ("vt", auth.viewer_token(SECRET, "a.svs", EXP))]
    check(vt, EXP - 10, viewer_slide="a.svs")
    for junk in (("quality", "50"), ("cb", "1"), ("x", "")):
        with pytest.raises(InvalidParameter):
            check([*vt, junk], EXP - 10, viewer_slide="a.svs")


def test_signed_urls_sign_the_wire_spelling() -> None:
    url = auth.signed_url(SECRET, "/tiles/caf\u00e9 1.svs/0/0/0.jpg", 60, now=lambda: EXP - 60)
    path, _, query = url.partition("?")
    assert path == "/tiles/caf%C3%A9%201.svs/0/0/0.jpg"
    assert f"sig={reference_sig(f'{path}?exp={EXP}')}" in query
    assert auth.wire_path("/tiles/a%2Fb.svs/0/0/0.jpg") == "/tiles/a%2Fb.svs/0/0/0.jpg"
