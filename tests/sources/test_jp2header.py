"""The JPEG 2000 header reader (sources/jp2header.py): codestream geometry, layers and HTJ2K from the
main header, JP2 boxes (colour, ICC, resolution, XMP, XML), box length forms, and malformed files."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from tileserver.sources.jp2 import Jp2Format
from tileserver.sources.jp2header import HeaderError, read_header

from ..jp2_images import BY_NAME, SPECS, TILED_RGB, Jp2Spec, box, with_boxes


@pytest.mark.parametrize("spec", [pytest.param(s, id=s.name) for s in SPECS])
def test_main_header(image_root: Path, spec: Jp2Spec) -> None:
    with open(image_root / spec.name, "rb") as f:
        h = read_header(f)
    cs = h.codestream
    x0, y0 = spec.offset
    assert (cs.x0, cs.y0, cs.width, cs.height) == (x0, y0, spec.width, spec.height)
    tile = spec.tile or (spec.width + x0, spec.height + y0)
    assert (cs.tile_width, cs.tile_height) == tile
    assert cs.tiled == (spec.tile is not None and (tile[0] < spec.width + x0 or tile[1] < spec.height + y0))
    assert (cs.resolutions, cs.layers, cs.ht) == (spec.resolutions, spec.layers, spec.ht)
    assert cs.precision == (spec.bits,) * spec.bands and cs.signed == (False,) * spec.bands
    assert cs.reversible == spec.lossless
    assert h.raw == spec.name.endswith((".j2k", ".j2c"))
    if spec.bands <= 4:  # (imagecodecs labels its 5-component file grey: the reader then goes by the count)
        assert h.colorspace == ("" if h.raw else "grey" if spec.bands <= 2 else "srgb")


def rewrap(data: bytes, how: str) -> bytes:
    """The same file with its codestream box's length written as 0 (to the end of the file) or as an
    8-byte XLBox."""
    at = data.index(b"jp2c") - 4
    code = data[at + 8:]
    head = struct.pack(">I4s", 0, b"jp2c") if how == "zero" else struct.pack(">I4sQ", 1, b"jp2c", 16 + len(code))
    return data[:at] + head + code


@pytest.mark.parametrize("how", ["zero", "xlbox"])
def test_box_length_forms(image_root: Path, tmp_path: Path, how: str) -> None:
    path = tmp_path / f"{how}.jp2"
    path.write_bytes(rewrap((image_root / TILED_RGB).read_bytes(), how))
    image = Jp2Format(1 << 20).open(str(path), "x")
    assert (image.meta.width, image.meta.height) == (1023, 767)
    assert image.read(0, (1000, 700, 23, 67)).width == 23


def test_boxes_pillow_does_not_write(image_root: Path, tmp_path: Path) -> None:
    import pyvips

    icc = bytes(pyvips.Image.black(8, 8).copy(interpretation="b-w").colourspace("srgb").icc_export(
        output_profile="srgb").get("icc-profile-data"))
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    data = with_boxes((image_root / TILED_RGB).read_bytes(), icc=icc, ppm=(11811.0, 5905.0), xmp=xmp,
                      xml=b"<note>a JP2 XML box</note>")
    with io.BytesIO(data) as f:
        h = read_header(f)
    assert h.icc == icc and h.xmp == xmp and h.xml == (b"<note>a JP2 XML box</note>",)
    assert h.resolution == (11811.0, 5905.0)
    path = tmp_path / "boxes.jp2"
    path.write_bytes(data)
    image = Jp2Format(1 << 20).open(str(path), "boxes.jp2")
    meta = image.meta
    assert meta.has_icc and meta.resolution == (118.11, 59.05, 3)  # pixels per centimetre
    assert dict(meta.metadata)["xmp"] == xmp.decode()
    assert bytes(image.read(0, (0, 0, 8, 8)).get("icc-profile-data")) == icc


@pytest.mark.parametrize(
    ("data", "why"),
    [
        pytest.param(b"", "not a JPEG 2000", id="empty"),
        pytest.param(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + box(b"ftyp", b"jp2 \0\0\0\0jp2 "), "no contiguous",
                     id="no-codestream"),
        pytest.param(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I4s", 4000, b"jp2h"), "overruns",
                     id="box-overruns"),
        pytest.param(b"\xff\x4f\xff\x51\x00\x29" + b"\x00" * 20, "ends inside", id="cut-siz"),
        pytest.param(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + box(b"jp2c", b"\xff\x4f\xff\x52\x00\x0c" + b"\x00" * 10
                     + b"\xff\x90\x00\x0a"), "SIZ or COD", id="no-siz"),
    ],
)
def test_malformed_headers(data: bytes, why: str) -> None:
    with pytest.raises(HeaderError, match=why):
        read_header(io.BytesIO(data))


def test_htj2k_flag_comes_from_the_cap_marker(image_root: Path) -> None:
    """The HT fixtures carry a CAP marker (Part 15 bit) and HT code-blocks; clearing the CAP marker's
    Part 15 bit and the code-block style bit makes the same codestream read as Part 1."""
    data = bytearray((image_root / BY_NAME["jp2-rgb8-ht-tiled128-517x301.j2c"].name).read_bytes())
    cap = data.index(b"\xff\x50")
    assert struct.unpack(">I", data[cap + 4: cap + 8])[0] & (1 << 17)
    assert read_header(io.BytesIO(bytes(data))).codestream.ht
    data[cap + 4: cap + 8] = b"\0\0\0\0"
    cod = data.index(b"\xff\x52")
    data[cod + 12] &= ~0x40 & 0xFF  # SPcod code-block style
    assert not read_header(io.BytesIO(bytes(data))).codestream.ht
