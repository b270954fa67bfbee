"""models.py: the hand-made `__init__` (`fast_init`) and reprs behave as the dataclass's own would."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from tileserver.models import (
    Box,
    OutputFormat,
    Overlays,
    Processing,
    Quality,
    Rendered,
    Tile,
    TileRequest,
    fast_init,
)


def dataclass_repr(obj: Any) -> str:
    """What `dataclasses` would write for `obj`: its own repr, field by field."""
    shown = ", ".join(f"{f.name}={getattr(obj, f.name)!r}" for f in dataclasses.fields(obj) if f.repr)
    return f"{type(obj).__qualname__}({shown})"


REQUESTS = [
    TileRequest(ident="a.tif", fmt=OutputFormat.JPEG, tile=Tile(3, 1, 2)),
    TileRequest(ident="dir/b c.tif", fmt=OutputFormat.PNG, region=Box(10, 20, 300, 400), size=(150, 200),
                rotation=90.0, mirror=True, quality=Quality.GRAY, processing=Processing(contrast=1.5),
                encoder_quality=80, page=2, layers=3, overlays=Overlays()),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=["tile", "region"])
def test_a_request_is_the_dataclass_it_was(request_: TileRequest) -> None:
    assert repr(request_) == dataclass_repr(request_)
    assert repr(request_.tile or request_.region) == dataclass_repr(request_.tile or request_.region)
    again = pickle.loads(pickle.dumps(request_))
    assert again == request_ and repr(again) == repr(request_) and hash(again) == hash(request_)
    assert dataclasses.replace(request_, page=7) == TileRequest(**{**vars_of(request_), "page": 7})
    with pytest.raises(dataclasses.FrozenInstanceError):
        request_.page = 3  # type: ignore[misc]


def vars_of(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def test_defaults_and_post_init_are_kept() -> None:
    made = Rendered(b"x", "image/jpeg", 1, 2)
    assert (made.etag, made.provisional, made.source, made.timing) == ("", False, "", "")
    with pytest.raises(ValueError):
        TileRequest(ident="a")  # neither a tile nor a region: __post_init__ refuses
    assert TileRequest(ident="a", tile=Tile(0, 0, 0)).processing == Processing()

    @fast_init
    @dataclasses.dataclass(frozen=True)
    class Made:
        a: int
        b: list[int] = dataclasses.field(default_factory=list)
        c: str = "c"

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a")

    one, two = Made(1), Made(2, [3], "d")
    assert (one.a, one.b, one.c, two.b, two.c) == (1, [], "c", [3], "d")
    assert one.b is not Made(1).b  # the factory is called for each instance
    with pytest.raises(ValueError):
        Made(-1)
    with pytest.raises(TypeError):
        Made()  # type: ignore[call-arg]


def test_keyword_only_fields_keep_the_dataclass_init() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Keyed:
        a: int

    init = Keyed.__init__
    assert fast_init(Keyed).__init__ is init


@pytest.mark.parametrize("member", [*OutputFormat, *Quality])
def test_enum_reprs_are_the_enums(member: Any) -> None:
    assert repr(member) == f"<{type(member).__name__}.{member.name}: {member.value!r}>"


def test_equal_requests_hash_alike_and_others_apart() -> None:
    one, same = (TileRequest(ident="a.tif", region=Box(0, 0, 512, 512), size=(256, 256)) for _ in range(2))
    other = TileRequest(ident="a.tif", region=Box(0, 0, 512, 512), size=(256, 255))
    assert one == same and hash(one) == hash(same) and {one: 1}[same] == 1
    assert one != other and other not in {one: 1}
