"""OBJ replies side by side with iipsrv 1.3 itself (built from ../shared/vendor, behind lighttpd on
loopback; fixture `iipsrv13`), on the same generated images: body bytes, media type and the `IIP`
header, for every object 1.3 knows, with and without the value in the image.

1.3 bugs whose wire format we keep but whose mistake we do not copy (each asserted below):
- IIP errors come back as HTTP 200 with a `Content-Disposition:` line inside the body (its status
  line is empty, which ends the header block early); we answer 400 with that header and the body
  `Error/<len>:<code> <arg>` that 1.3 means, and compare that line.
- `OBJ=IIP,1.0` without FIF sends `Content-Type` inside the body for the same reason.
- error arguments are cut at 31 bytes while the length prefix counts them whole.
- `OBJ=metadata` of a JPEG writes its binary EXIF block into a JSON string, and the reply stops at the
  block's first NUL byte (the reply is a C string); we leave EXIF out: `{\n}` for a JPEG without other
  fields, then the objects that follow.

One deliberate difference: a tiled TIFF with a single level gets zoom-out levels from us (halvings
down to one tile, rounded down as 1.3 does for JPEG), where 1.3 offers only the full size; see
`test_single_level_tiff_has_zoom_out_levels`.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import GREY16_TIF, META_CM_TIF, META_TIF, PLAIN_JPG, RGB_TIF, SUBIFD_TIF

IMAGES = [RGB_TIF, GREY16_TIF, PLAIN_JPG, SUBIFD_TIF, META_TIF, META_CM_TIF]
PREFIX = "/fcgi-bin/iipsrv.fcgi"

# every object iipsrv 1.3's OBJ.cc answers (names as clients spell them)
OBJECTS = [
    "IIP,1.0", "basic-info", "IIP-server", "IIP-opt-comm", "IIP-opt-obj", "Resolution-number", "Max-size",
    "Tile-size", "Bits-per-channel", "Vertical-views", "Horizontal-views", "Min-Max-sample-values",
    "Resolutions", "dpi", "stack", "Colorspace,*,*", "summary-info", "rights", "title", "description",
    "creator", "keywords", "comment", "last-author", "rev-number", "edit-time", "last-printed", "date",
    "last-save-dtm", "software", "make", "model", "xmp", "scale", "metadata",
]


def media(r: httpx.Response) -> str:
    return r.headers.get("content-type", "").split(";")[0].strip()


def error_line(r: httpx.Response) -> tuple[bytes, bytes]:
    """The `Error/<len>:` prefix and text of an IIP error, wherever 1.3 put it (see the module docstring)."""
    lines = [ln for ln in r.content.split(b"\r\n") if ln.startswith(b"Error/")]
    assert len(lines) == 1, r.content
    prefix, _, text = lines[0].partition(b":")
    return prefix, text


async def compare(iipsrv13: httpx.Client, client: httpx.AsyncClient, query: str) -> httpx.Response:
    theirs = iipsrv13.get(f"?{query}")
    mine = await client.get(f"{PREFIX}?{query}")
    if b"Error/" in theirs.content:
        assert mine.status_code == 400, query  # 1.3 sends 200 (its bug)
        assert media(mine) == "application/vnd.netfpx"
        (my_len, my_text), (their_len, their_text) = error_line(mine), error_line(theirs)
        assert my_len == their_len and my_text.startswith(their_text), (mine.content, theirs.content)
        return mine
    assert mine.status_code == theirs.status_code == 200, query
    assert media(mine) == media(theirs), query
    assert mine.headers.get("iip") == theirs.headers.get("iip"), query
    if b'{ \n\t"exif": "' in theirs.content:  # cut at the EXIF block's first NUL (see the module docstring)
        head = theirs.content.split(b'{ \n\t"exif": "')[0]
        assert mine.content.startswith(head + b"{\n}\r\n"), query
    else:
        assert mine.content == theirs.content, query
    return mine


LEVEL_OBJECTS = {"basic-info", "Resolution-number", "Resolutions", "Colorspace,*,*"}
CASES = [(i, o) for i in IMAGES for o in OBJECTS if not (i == META_CM_TIF and o in LEVEL_OBJECTS)]


@pytest.mark.parametrize(("ident", "obj"), CASES)
async def test_each_object_is_identical(iipsrv13: httpx.Client, client: httpx.AsyncClient, ident: str,
                                        obj: str) -> None:
    await compare(iipsrv13, client, f"FIF={ident}&OBJ={obj}")


async def test_single_level_tiff_has_zoom_out_levels(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    query = f"?FIF={META_CM_TIF}&OBJ=Resolution-number&OBJ=Resolutions"
    assert iipsrv13.get(query).content == b"Resolution-number:1\r\nResolutions:300 211\r\n"
    assert (await client.get(PREFIX + query)).content == b"Resolution-number:2\r\nResolutions:150 105,300 211\r\n"


@pytest.mark.parametrize("ident", [i for i in IMAGES if i != META_CM_TIF])
@pytest.mark.parametrize(
    "objs",
    [
        pytest.param(["IIP,1.0", "Max-size", "Tile-size", "Resolution-number", "Resolutions", "dpi"],
                     id="iipmooviewer"),
        pytest.param(["IIP,1.0", "IIP-server", "Bits-per-channel", "Horizontal-views", "Vertical-views",
                      "Min-Max-sample-values"], id="extra"),
        pytest.param(["title", "Max-size", "keywords", "creator"], id="metadata-then-size"),
        pytest.param(["IIP,1.0", "metadata", "dpi"], id="json-and-lines"),
        pytest.param(["Max-size", "nonsense", "Tile-size"], id="unknown-object"),
    ],
)
async def test_object_lists_are_identical(iipsrv13: httpx.Client, client: httpx.AsyncClient, ident: str,
                                          objs: list[str]) -> None:
    await compare(iipsrv13, client, f"FIF={ident}&" + "&".join(f"OBJ={o}" for o in objs))


async def test_the_metadata_image_answers_every_field(iipsrv13: httpx.Client, client: httpx.AsyncClient) -> None:
    """Not a vacuous comparison: the fixture really carries the fields, and 1.3 and we both report them."""
    mine = await compare(iipsrv13, client, f"FIF={META_TIF}&OBJ=metadata")
    fields = json.loads(mine.content)
    assert fields["creator"] == "Jane Doe" and fields["scale"] == "0.25" and fields["pagename"] == "recto"
    assert (await compare(iipsrv13, client, f"FIF={META_TIF}&OBJ=dpi")).content == b"DPI:11811.023438 11811.023438\r\n"


@pytest.mark.parametrize("query", ["OBJ=IIP,1.0", "OBJ=IIP-server&OBJ=iip-opt-comm"])
async def test_objects_without_an_image(iipsrv13: httpx.Client, client: httpx.AsyncClient, query: str) -> None:
    theirs = iipsrv13.get(f"?{query}")
    mine = await client.get(f"{PREFIX}?{query}")
    assert mine.status_code == theirs.status_code == 200
    assert mine.headers.get("iip", "") == theirs.headers.get("iip", "") or b"IIP:1.3" in theirs.content
    body = theirs.content.split(b"\r\n\r\n", 1)[-1] if b"Content-Type:" in theirs.content else theirs.content
    assert mine.content == body
