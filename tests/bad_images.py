"""Files that are not readable images, written at test time, each named for what is wrong with it, in two
groups by what can be known from them:

- `UNREADABLE`: their header cannot be read (no image at all, random bytes under an image extension, an
  empty file, a directory named like an image, a file cut inside its directories): a 415 for every request,
  metadata and pixels alike;
- `BROKEN_DATA`: their header reads but their pixel data does not decode (cut short, garbage after the
  header, TIFF offsets past the end of the file): their metadata is answered from the header, and every
  request for pixels is a 415 (libvips reads them with `fail_on="error"`, where it would fill them in grey).

Good files of each format are written alongside (`GOOD`), and damaged copies are made from them.
"""

from __future__ import annotations

import random
import struct
from pathlib import Path

from .conftest import pattern
from .slide_images import make_svs

FORMATS = ("jpg", "png", "gif", "webp", "tif", "jp2", "svs")
GOOD = {ext: f"good-1003x701.{ext}" for ext in FORMATS} | {"striped": "good-striped-1003x701.tif"}
UNREADABLE = [
    *(f"empty.{ext}" for ext in FORMATS), *(f"random.{ext}" for ext in FORMATS),
    "text.jpg", "garbage-after-signature.png", "bad-ifd.tif", "bigtiff-stub.tif", "not-a-tiff.svs",
    "cut-in-directories.tif", "cut-in-directories.svs", "cut.webp", "cut-striped.tif", "folder.tif",
]
BROKEN_DATA = ["cut.jpg", "cut.png", "cut.gif", "cut.jp2", "garbled.png", "garbled.jp2", "offsets-past-the-end.tif"]


def _random(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _offsets_past_the_end(good: bytes) -> bytes:
    """A little-endian tiled TIFF whose every tile offset, in every directory, points past the end of the
    file (its directories intact)."""
    data = bytearray(good)
    (ifd,) = struct.unpack_from("<I", data, 4)
    while ifd:
        (n,) = struct.unpack_from("<H", data, ifd)
        for i in range(n):
            tag, typ, count, value = struct.unpack_from("<HHII", data, ifd + 2 + 12 * i)
            if tag == 324:  # TileOffsets, LONG
                assert typ == 4
                at = value if count > 1 else ifd + 2 + 12 * i + 8
                for k in range(count):
                    struct.pack_into("<I", data, at + 4 * k, len(good) + 1000 + k)
        (ifd,) = struct.unpack_from("<I", data, ifd + 2 + 12 * n)
    return bytes(data)


def make_bad_images(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    img = pattern(1003, 701, seed=8)
    img.jpegsave(str(root / GOOD["jpg"]), Q=90)
    img.pngsave(str(root / GOOD["png"]))
    img.gifsave(str(root / GOOD["gif"]), effort=1, dither=0, bitdepth=4)  # quantizing noise is slow otherwise
    img.webpsave(str(root / GOOD["webp"]))
    img.tiffsave(str(root / GOOD["tif"]), tile=True, pyramid=True, compression="jpeg", Q=90)
    img.tiffsave(str(root / GOOD["striped"]), compression="deflate")
    from PIL import Image

    Image.fromarray(img.numpy()).save(root / GOOD["jp2"], "JPEG2000", tile_size=(256, 256), num_resolutions=3)
    make_svs(root / GOOD["svs"], 1201, 901, levels=2)
    for i, ext in enumerate(FORMATS):
        (root / f"empty.{ext}").write_bytes(b"")
        (root / f"random.{ext}").write_bytes(_random(5000, i))
    (root / "text.jpg").write_bytes(b"hello, I am not a JPEG")
    (root / "garbage-after-signature.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 64)
    (root / "bad-ifd.tif").write_bytes(b"II*\x00\x00\xff\xff\xff" + b"\x00" * 64)
    (root / "bigtiff-stub.tif").write_bytes(b"II+\x00\x08\x00\x00\x00" + b"\x00" * 8)
    (root / "not-a-tiff.svs").write_bytes(b"MM\x00*\x00\x00\x00\x08" + b"\xff" * 32)
    for name, good in [("cut-in-directories.tif", GOOD["tif"]), ("cut-in-directories.svs", GOOD["svs"]),
                       ("cut.webp", GOOD["webp"]), ("cut.jpg", GOOD["jpg"]), ("cut.png", GOOD["png"]),
                       ("cut.gif", GOOD["gif"]), ("cut.jp2", GOOD["jp2"]), ("cut-striped.tif", GOOD["striped"])]:
        data = (root / good).read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])
    (root / "folder.tif").mkdir(exist_ok=True)
    for name, good, keep in [("garbled.png", GOOD["png"], 0.2), ("garbled.jp2", GOOD["jp2"], 0.2)]:
        data = (root / good).read_bytes()
        k = int(len(data) * keep)
        (root / name).write_bytes(data[:k] + _random(len(data) - k, 99))
    (root / "offsets-past-the-end.tif").write_bytes(_offsets_past_the_end((root / GOOD["tif"]).read_bytes()))
