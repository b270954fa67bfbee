"""Access control, the parts that need no server: policy parsing and matching, tokens and signed URLs, the capped
view and the mapping of its requests back to the image (access/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tileserver.access.policy import DENIED, FULL, Access, Policy, Tier, glob_regex, normalise, parse_tier
from tileserver.access.tokens import Keys
from tileserver.access.view import to_real, view_of, within
from tileserver.errors import Forbidden, TileNotFound
from tileserver.models import Box, ImageMeta, Level, Tile, TileRequest
from tileserver.web.access import split_signed

KEY = "0123456789abcdef-key"


def meta(width: int = 1003, height: int = 701, levels: int = 3) -> ImageMeta:
    lv = tuple(Level(-(-width // 2**i), -(-height // 2**i), 256, 256, float(2**i)) for i in range(levels))
    return ImageMeta("a.tif", width, height, lv, 3, 8, "uint", "srgb", False, False, 0.0, 1, (0.0,), (255.0,),
                     dpi=(300.0, 300.0), properties=(("openslide.mpp-x", "0.25"), ("openslide.mpp-y", "0.25")))


# -- policy ------------------------------------------------------------------------------------------------
def test_glob() -> None:
    assert glob_regex("maps/**/*.tif").fullmatch("maps/a/b/c.tif")
    assert glob_regex("maps/**/*.tif").fullmatch("maps/c.tif")
    assert not glob_regex("maps/*.tif").fullmatch("maps/a/c.tif")
    assert glob_regex("a?.jp2").fullmatch("ab.jp2") and not glob_regex("a?.jp2").fullmatch("a/.jp2")
    assert not glob_regex("a.tif").fullmatch("aXtif")  # literal dot
    assert normalise("/x//y/./z.tif") == "x/y/z.tif"


def test_policy_rules_first_match_and_default() -> None:
    policy = Policy({"tiers": {"preview": {"max_width": 500}},
                     "default": {"anonymous": "preview"},
                     "rules": [{"folder": "private", "anonymous": "denied", "authorised": "preview"},
                               {"match": "open/**", "anonymous": "full"},
                               {"match": "**/*.tif", "authorised": "denied"}]})
    assert policy.by_rules("private/x/y.tif") == Access(DENIED, policy.named["preview"])
    assert policy.by_rules("//private/../private/y.tif").anonymous is DENIED  # normalised
    assert policy.by_rules("open/a/b.tif") == Access(FULL, FULL)  # first match; the other side from the default
    assert policy.by_rules("z/b.tif") == Access(policy.named["preview"], DENIED)
    assert policy.by_rules("b.jpg") == Access(policy.named["preview"], FULL)
    assert policy.by_rules("privateer.tif").anonymous is not DENIED  # a folder is a folder, not a prefix


def test_policy_matches_the_real_path_too(tmp_path: Path) -> None:
    """An alias of a file (another identifier naming it) cannot escape the rule on its path under the root."""
    policy = Policy({"rules": [{"folder": "private", "anonymous": "denied"}]}, root=str(tmp_path))
    assert policy.by_rules("alias.tif", str(tmp_path / "private" / "a.tif")).anonymous is DENIED
    assert policy.by_rules("alias.tif", str(tmp_path / "public" / "a.tif")).anonymous is FULL


@pytest.mark.parametrize("spec", [
    {"max_width": 0}, {"max_width": "9"}, {"max_width": 1.5}, {"bogus": 1}, {"watermark": {"opacity": 0.5}},
    {"watermark": {"location": "w.png", "opacity": 2}}, {"redactions": [[0, 0, 10]]}, {"redactions": "x"},
    {"text": {"text": "x", "colour": [0, 0, 300]}}, {"denied": "yes"}, "nope",
])
def test_bad_tiers_are_refused(spec: object) -> None:
    with pytest.raises(ValueError):
        parse_tier(spec, {"full": FULL})


def test_tier_kinds_and_keys() -> None:
    named = {"full": FULL, "denied": DENIED}
    capped = parse_tier({"max_area": 10000}, named)
    marked = parse_tier({"max_width": 400, "watermark": {"location": "w.png", "opacity": 0.3}}, named)
    redacted = parse_tier({"redactions": [[1, 2, 3, 4], {"x": 5, "y": 6, "width": 7, "height": 8}]}, named)
    assert [t.kind for t in (FULL, capped, marked, redacted, DENIED)] == [
        "full", "capped", "watermarked", "redacted", "denied"]
    assert marked.overlays is not None and marked.overlays.watermark is not None
    assert marked.overlays.watermark.opacity == 0.3
    assert redacted.overlays is not None and [r.x for r in redacted.overlays.redactions] == [1, 5]
    assert len({t.key for t in (FULL, capped, marked, redacted, DENIED)}) == 5
    assert FULL.full and not capped.full and not marked.full


def test_policy_from_settings_forms(tmp_path: Path) -> None:
    assert Policy.from_settings(None, None, False, None, 1.0) is None  # nothing configured: no policy at all
    doc = {"rules": [{"match": "*.tif", "anonymous": "denied"}]}
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    for form in (json.dumps(doc), str(path)):
        policy = Policy.from_settings(form, None, False, None, 1.0)
        assert policy is not None and policy.lookup("a.tif", "").anonymous is DENIED
    with pytest.raises(ValueError):
        Policy.from_settings("{not json", None, False, None, 1.0)
    with pytest.raises(ValueError):
        Policy.from_settings(str(tmp_path / "missing.json"), None, False, None, 1.0)
    with pytest.raises(ValueError):
        Policy.from_settings(None, None, False, "no_such_module_xyz:fn", 1.0)


def test_sidecar_overrides_rules_and_fails_closed(tmp_path: Path) -> None:
    image = tmp_path / "a.tif"
    image.write_bytes(b"x")
    policy = Policy({"tiers": {"small": {"max_width": 10}}}, root=str(tmp_path), sidecars=True, ttl=0)
    assert policy.lookup("a.tif", str(image)) == Access(FULL, FULL)
    sidecar = tmp_path / "a.tif.access.json"
    sidecar.write_text('{"anonymous": "small"}')
    assert policy.lookup("a.tif", str(image)).anonymous is policy.named["small"]
    for broken in ("{", '{"anonymous": "no-such-tier"}', '{"other": 1}', "[]"):
        sidecar.write_text(broken)
        assert policy.lookup("a.tif", str(image)) == Access(DENIED, DENIED)


def hook(ident: str, location: str) -> object:
    return {"anonymous": "denied"} if ident.startswith("hooked") else None


def test_hook_overrides() -> None:
    policy = Policy({}, hook=hook)
    assert policy.lookup("hooked/a.tif", "").anonymous is DENIED
    assert policy.lookup("other.tif", "") == Access(FULL, FULL)


# -- tokens and signed URLs ---------------------------------------------------------------------------------
def test_tokens_verify_expire_and_rotate() -> None:
    keys = Keys.parse(KEY)
    token = keys.issue_token("alice", "authorised", 2_000_000_000)
    claims = keys.verify_token(token, now=1_900_000_000)
    assert claims is not None and (claims.subject, claims.tier) == ("alice", "authorised")
    assert keys.verify_token(token, now=2_000_000_000) is None  # expired
    assert Keys.parse("another-key-of-16-chars").verify_token(token, now=0) is None  # another key
    head, _payload, mac = token.split(".")
    forged = keys.issue_token("alice", "anonymous", 2_000_000_000).split(".")[1]
    assert keys.verify_token(f"{head}.{forged}.{mac}", now=0) is None  # payload swapped
    assert keys.verify_token("v1.%%%.%%%", now=0) is None and keys.verify_token("", now=0) is None
    rotated = Keys.parse(f"new-key-0123456789,{KEY}")
    assert rotated.verify_token(token, now=0) is not None  # the old key still verifies
    assert keys.verify_token(rotated.issue_token("bob", "authorised", 2e9), now=0) is None  # new signs
    assert KEY not in repr(keys)
    with pytest.raises(ValueError):
        keys.issue_token("alice", "full", 2e9)  # a tier is an access class
    with pytest.raises(ValueError):
        Keys.parse("short")


def test_signed_urls() -> None:
    keys = Keys.parse(KEY)
    query = keys.sign_url("/iip", "FIF=a.tif&JTL=2,0", "authorised", 2_000_000_000)
    kept, signed = split_signed(query.encode())
    assert kept == b"FIF=a.tif&JTL=2,0" and set(signed) == {"sig", "exp", "tier"}
    ok = keys.verify_url("/iip", kept.decode(), signed["sig"], signed["exp"], signed["tier"], now=0)
    assert ok
    assert not keys.verify_url("/iip", "FIF=b.tif&JTL=2,0", signed["sig"], signed["exp"], signed["tier"], now=0)
    assert not keys.verify_url("/other", kept.decode(), signed["sig"], signed["exp"], signed["tier"], now=0)
    assert not keys.verify_url("/iip", kept.decode(), signed["sig"], "2000000001", signed["tier"], now=0)
    assert not keys.verify_url("/iip", kept.decode(), signed["sig"], signed["exp"], "anonymous", now=0)
    assert not keys.verify_url("/iip", kept.decode(), signed["sig"], signed["exp"], signed["tier"], now=2e9)
    assert not keys.verify_url("/iip", kept.decode(), "!!", signed["exp"], signed["tier"], now=0)


# -- the capped view --------------------------------------------------------------------------------------
def test_view_of_a_capped_tier() -> None:
    real = meta()
    view = view_of(real, Tier("t", max_width=600, max_height=600))
    assert (view.meta.width, view.meta.height, view.shift) == (502, 351, 1)
    assert [lv.width for lv in view.meta.levels] == [502, 251]
    assert [lv.factor for lv in view.meta.levels] == [1.0, 2.0]
    assert view.meta.dpi == (150.0, 150.0) and dict(view.meta.properties)["openslide.mpp-x"] == "0.5"
    assert view_of(real, Tier("t", max_area=251 * 176)).shift == 2
    assert view_of(real, Tier("t", max_width=5000)).identity  # within the cap already
    with pytest.raises(Forbidden):
        view_of(real, Tier("t", max_width=100))  # no level is small enough


def test_to_real_maps_tiles_and_regions() -> None:
    view = view_of(meta(), Tier("t", max_width=600))
    assert to_real(TileRequest("a.tif", tile=Tile(0, 1, 1)), view).tile == Tile(1, 1, 1)
    with pytest.raises(TileNotFound):
        to_real(TileRequest("a.tif", tile=Tile(2, 0, 0)), view)
    whole = to_real(TileRequest("a.tif", region=Box(0, 0, 502, 351), size=(502, 351)), view)
    assert whole.region == Box(0, 0, 1003, 701) and whole.size == (502, 351)
    part = to_real(TileRequest("a.tif", region=Box(100, 50, 200, 100), size=(100, 50)), view)
    assert part.region is not None and abs(part.region.x - 200) <= 1 and abs(part.region.w - 400) <= 1
    upscaled = to_real(TileRequest("a.tif", region=Box(0, 0, 502, 351), size=(2008, 1404)), view)
    assert upscaled.size == (502, 351)  # never more pixels than the view holds
    with pytest.raises(TileNotFound):
        to_real(TileRequest("a.tif", region=Box(600, 0, 10, 10), size=(10, 10)), view)
    assert within((1000, 10), (100, 100)) == (100, 1)


def test_cli_token_and_signed_url(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from tileserver.cli import main

    monkeypatch.setenv("TILESERVER_ACCESS_KEY", KEY)
    assert main(["token", "--subject", "alice", "--ttl", "60"]) == 0
    claims = Keys.parse(KEY).verify_token(capsys.readouterr().out.strip())
    assert claims is not None and claims.subject == "alice" and claims.tier == "authorised"
    assert main(["token", "--sign-url", "/iip?FIF=a.tif&CVT=jpeg"]) == 0
    url = capsys.readouterr().out.strip()
    path, _, query = url.partition("?")
    kept, signed = split_signed(query.encode())
    assert path == "/iip" and kept == b"FIF=a.tif&CVT=jpeg"
    assert Keys.parse(KEY).verify_url(path, kept.decode(), signed["sig"], signed["exp"], signed["tier"])
    monkeypatch.delenv("TILESERVER_ACCESS_KEY")
    assert main(["token"]) == 2
