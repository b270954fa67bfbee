"""Decompression bombs, written at test time: small files whose headers declare huge images, built
byte by byte so that no pixel buffer of the declared size ever exists here. Each writer returns the
file's declared (width, height). Shared by the tests and bench/bomb.py.

- PNG: the issue's bomb, an RGB 50000 x 50000 whose IDAT holds a few zlib-compressed zero rows (a few
  hundred bytes; libvips fills in the rest), and a complete one, 1-bit grey, every row compressed by a
  streaming zlib compressor (about 300 KB, 2.5 gigapixels once decoded).
- JPEG, GIF, WebP: a tiny real file whose size fields are patched (JPEG SOF0, GIF screen and image
  descriptor, WebP VP8L header at its 16383 x 16383 maximum).
- TIFF: one strip of 50000 x 50000 (a strip must be decoded whole), and a tiled one-level 50000 x 50000
  whose every tile entry points at one compressed tile (its smaller levels would be shrunk from all of it).
- JPEG 2000: a real codestream whose SIZ marker is patched to 400000 x 400000 (past any image cap), and one
  of 50000 x 50000 with no wavelet levels (its opening decode would be the whole image).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pyvips

Size = tuple[int, int]
SIDE = 50000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = SIDE, height: int = SIDE, rows: int = 8) -> Size:
    """RGB 8-bit, `rows` zero rows compressed (a stream cut short, as the issue's 673-byte file)."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)  # filter byte 0, then the samples
    data = b"".join(z.compress(row) for _ in range(rows)) + z.flush(zlib.Z_SYNC_FLUSH)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return width, height


def png_bomb_complete(path: Path, width: int = SIDE, height: int = SIDE) -> Size:
    """1-bit grey, every row there: a valid PNG of `width` x `height`, compressed row by row."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + -(-width // 8))
    parts = [z.compress(row) for _ in range(height)]
    data = b"".join(parts) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return width, height


def jpeg_bomb(path: Path, width: int = SIDE, height: int = SIDE) -> Size:
    """A 16 x 16 baseline JPEG whose SOF0 says `width` x `height` (at most 65535)."""
    data = bytearray(pyvips.Image.black(16, 16).jpegsave_buffer(Q=50, keep="none"))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    path.write_bytes(bytes(data))
    return width, height


def gif_bomb(path: Path, width: int = SIDE, height: int = SIDE) -> Size:
    """A GIF whose screen and one frame are `width` x `height`, with LZW data of a clear and an end code."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x01\x2c\x00"
    path.write_bytes(head + frame + b"\x3b")
    return width, height


def webp_bomb(path: Path) -> Size:
    """A lossless WebP whose VP8L header says 16383 x 16383 (the format's largest)."""
    data = bytearray(pyvips.Image.black(16, 16).webpsave_buffer(lossless=True))
    vp8l = data.index(b"VP8L")
    bits = struct.unpack_from("<I", data, vp8l + 9)[0]
    bits = (bits & ~0x0FFFFFFF) | 16382 | (16382 << 14)
    struct.pack_into("<I", data, vp8l + 9, bits)
    if data[12:16] == b"VP8X":  # the extended header's canvas size (24 bits each, minus one)
        data[24:30] = (16382).to_bytes(3, "little") * 2
    path.write_bytes(bytes(data))
    return 16383, 16383


def _tiff(path: Path, entries: dict[int, tuple[int, list[int]]], blobs: bytes) -> None:
    """A little-endian TIFF of one directory (`tag: (type, values)`, SHORT 3 or LONG 4), `blobs` after it.
    Values that do not fit the entry go after the directory; `blobs` offsets are from byte 0."""
    n = len(entries)
    ifd_size = 2 + 12 * n + 4
    extra = bytearray()
    out = bytearray(struct.pack("<2sHI", b"II", 42, 8) + struct.pack("<H", n))
    base = 8 + ifd_size
    for tag in sorted(entries):
        typ, values = entries[tag]
        fmt = "H" if typ == 3 else "I"
        packed = struct.pack(f"<{len(values)}{fmt}", *values)
        if len(packed) <= 4:
            out += struct.pack("<HHI", tag, typ, len(values)) + packed.ljust(4, b"\0")
        else:
            out += struct.pack("<HHII", tag, typ, len(values), base + len(extra))
            extra += packed
    out += b"\0\0\0\0" + extra
    path.write_bytes(bytes(out) + blobs)


def _zeros_deflate(n: int) -> bytes:
    return zlib.compress(b"\0" * n, 9)


def tiff_strip_bomb(path: Path, width: int = SIDE, height: int = SIDE) -> Size:
    """Grey 8-bit, one deflate strip of `height` rows whose data stops after a few rows."""
    data = zlib.compressobj(9)
    blob = data.compress(b"\0" * width * 4) + data.flush(zlib.Z_SYNC_FLUSH)
    header = 8 + 2 + 12 * 9 + 4
    entries = {256: (4, [width]), 257: (4, [height]), 258: (3, [8]), 259: (3, [8]), 262: (3, [1]),
               273: (4, [header]), 277: (3, [1]), 278: (4, [height]), 279: (4, [len(blob)])}
    _tiff(path, entries, blob)
    return width, height


def tiff_tiled_bomb(path: Path, width: int = SIDE, height: int = SIDE, tile: int = 256) -> Size:
    """Grey 8-bit, one level of `tile`-pixel deflate tiles, every tile entry pointing at one zero tile."""
    blob = _zeros_deflate(tile * tile)
    count = -(-width // tile) * -(-height // tile)
    header = 8 + 2 + 12 * 10 + 4 + 8 * count  # the directory, then the offset and byte-count arrays
    entries = {256: (4, [width]), 257: (4, [height]), 258: (3, [8]), 259: (3, [8]), 262: (3, [1]),
               277: (3, [1]), 322: (4, [tile]), 323: (4, [tile]), 324: (4, [header] * count),
               325: (4, [len(blob)] * count)}
    _tiff(path, entries, blob)
    return width, height


def _j2k(width: int, height: int, resolutions: int) -> bytearray:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (64, 64)).save(out, "JPEG2000", no_jp2=True, num_resolutions=resolutions)
    return bytearray(out.getvalue())


def jp2_bomb(path: Path, width: int = 400_000, height: int = 400_000, resolutions: int = 6) -> Size:
    """A raw codestream (SIZ right after SOC) patched to `width` x `height`, one tile of that size."""
    data = _j2k(width, height, resolutions)
    assert data[2:4] == b"\xff\x51"
    struct.pack_into(">IIIIII", data, 8, width, height, 0, 0, width, height)
    path.write_bytes(bytes(data))
    return width, height


def jp2_whole_bomb(path: Path) -> Size:
    """50000 x 50000 with no wavelet levels: any decode of it is a decode of the whole image."""
    return jp2_bomb(path, SIDE, SIDE, resolutions=1)


BOMBS: dict[str, Callable[[Path], Size]] = {
    "bomb-truncated.png": png_bomb,
    "bomb-complete.png": png_bomb_complete,
    "bomb.jpg": jpeg_bomb,
    "bomb.gif": gif_bomb,
    "bomb.webp": webp_bomb,
    "bomb-strip.tif": tiff_strip_bomb,
    "bomb-tiled.tif": tiff_tiled_bomb,
    "bomb-huge.j2k": jp2_bomb,
    "bomb-whole.j2k": jp2_whole_bomb,
}


def make_bombs(root: Path) -> dict[str, Size]:
    """Every bomb in `root`, by file name, with the size its header declares."""
    root.mkdir(parents=True, exist_ok=True)
    return {name: write(root / name) for name, write in BOMBS.items()}
