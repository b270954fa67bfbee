"""OME-TIFF: microscopy images with named, coloured channels, recognised by content (the first
directory's ImageDescription holds OME-XML), described by that XML and read through the shared
`PyramidReader`.

- Channels stored one per directory (the usual layout) become the bands of one image: a read takes
  the same box from each channel's directory and joins them; channels stored interleaved
  (SamplesPerPixel > 1) are read as they are. `ImageMeta.channels` names each band and gives its OME
  colour (Color, a signed 32-bit RGBA integer); 8-bit RGB brightfield images (one channel of three
  samples, photometric RGB) have no channels and render as the RGB images they are.
- Pyramids are the SubIFDs of each plane's directory (OME-TIFF 6, as bioformats2raw/raw2ometiff and
  tifffile write them); below the smallest, levels are halved as for any TIFF.
- Planes are found through TiffData (IFD, FirstC/Z/T, PlaneCount, in DimensionOrder); planes kept in
  other files of a multi-file set are not read. Beyond one Z and T the planes are the pages of an image
  stack (page = z + SizeZ * t, page 0 the first plane), each addressable as `x.ome.tif;page=<n>`.
- Tile-sized reads of stored levels whose directories are tiled, uncompressed or deflate, predictor
  1 or 2 are decoded here (`sources/rawtiles.py`, libdeflate), and the channel composite takes them
  as arrays (`read_array`); anything else is read through libvips.
- Only the first Image of the file is served. Physical pixel sizes in length units become the
  resolution (pixels per centimetre); the OME keys worth showing are `ImageMeta.properties`.
"""

from __future__ import annotations

import logging
import os
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyvips

from ..errors import NotFound, SourceError
from ..levels import level_factor, with_virtual
from ..models import Channel, ImageMeta, Level, OutputFormat, StackItem
from . import vfs
from .base import Box4, Selector, SourceImage
from .channels import chosen, selection_ident
from .passthrough import StoredTile
from .pyramid import NUMPY_TYPES, PyramidReader, check_page, vips_error
from .rawtiles import TiffTiles
from .tiff import IMAGE_DESCRIPTION, PHOTOMETRIC, SAMPLES, TILE_LENGTH, TILE_WIDTH, Ifd, TiffFile

log = logging.getLogger("tileserver.sources.ome")

OME_NS = b"http://www.openmicroscopy.org/Schemas/OME/"
PROBE_BYTES = 4096  # of the first description: enough for the XML declaration and the OME root element
MAX_XML = 32 << 20  # a larger description is not read (thousands of planes with per-plane metadata)
# OME pixel type -> bits, sample format, lowest and highest value
TYPES: dict[str, tuple[int, str, float, float]] = {
    "uint8": (8, "uint", 0.0, 255.0), "uint16": (16, "uint", 0.0, 65535.0),
    "uint32": (32, "uint", 0.0, 4294967295.0), "int8": (8, "int", -128.0, 127.0),
    "int16": (16, "int", -32768.0, 32767.0), "int32": (32, "int", -2147483648.0, 2147483647.0),
    "float": (32, "float", 0.0, 1.0), "double": (64, "float", 0.0, 1.0),
}
CENTIMETRES = {"Ym": 1e26, "Zm": 1e23, "Em": 1e20, "Pm": 1e17, "Tm": 1e14, "Gm": 1e11, "Mm": 1e8, "km": 1e5,
               "hm": 1e4, "dam": 1e3, "m": 100.0, "dm": 10.0, "cm": 1.0, "mm": 0.1, "µm": 1e-4, "\u03bcm": 1e-4,
               "nm": 1e-7, "pm": 1e-10, "fm": 1e-13, "Å": 1e-8, "\u212b": 1e-8, "in": 2.54, "ft": 30.48,
               "yd": 91.44, "mi": 160934.4}
PIXELS_KEYS = ("SizeX", "SizeY", "SizeC", "SizeZ", "SizeT", "DimensionOrder", "Type", "SignificantBits",
               "PhysicalSizeX", "PhysicalSizeXUnit", "PhysicalSizeY", "PhysicalSizeYUnit", "PhysicalSizeZ",
               "PhysicalSizeZUnit", "TimeIncrement", "TimeIncrementUnit")
FETCH_PIXELS = 1 << 20  # reads of at most this many pixels are fetched into memory (`OmeImage.read`)
VIPS_TYPES = {v: k for k, v in NUMPY_TYPES.items()}  # numpy dtype (kind and size) -> libvips format
ORDERS = {"XYZCT", "XYZTC", "XYCTZ", "XYCZT", "XYTCZ", "XYTZC"}


@dataclass(frozen=True)
class OmeChannel:
    name: str = ""
    color: tuple[int, int, int] | None = None
    samples: int = 1


@dataclass(frozen=True)
class OmePixels:
    """What the first Image's Pixels element says: sizes, order, type, channels (one per channel plane:
    SizeC / SamplesPerPixel of them), the directory of each plane (c, z, t) held in this file, and
    the physical pixel size."""

    size_x: int
    size_y: int
    size_c: int
    size_z: int
    size_t: int
    order: str
    pixel_type: str
    channels: tuple[OmeChannel, ...]
    planes: dict[tuple[int, int, int], int] = field(hash=False)
    physical: tuple[float, str, float, str] | None = None
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def resolution(self) -> tuple[float, float, int] | None:
        """Pixels per centimetre (TIFF unit 3), when both physical sizes are in units of length."""
        if self.physical is None:
            return None
        sx, ux, sy, uy = self.physical
        if ux not in CENTIMETRES or uy not in CENTIMETRES or sx <= 0 or sy <= 0:
            return None
        return 1.0 / (sx * CENTIMETRES[ux]), 1.0 / (sy * CENTIMETRES[uy]), 3


def is_ome(description: bytes) -> bool:
    """Whether a TIFF ImageDescription (its start) is OME-XML."""
    head = description.lstrip()[:PROBE_BYTES]
    return head.startswith(b"<") and b"<OME" in head and OME_NS in head


def ome_color(value: str | None) -> tuple[int, int, int] | None:
    """OME's Color (a signed 32-bit integer holding RGBA, e.g. -16776961 = 0xFF0000FF, opaque red)
    as (r, g, b); None when absent or not a number. Alpha is not used."""
    if value is None:
        return None
    try:
        rgba = int(value) & 0xFFFFFFFF
    except ValueError:
        return None
    return (rgba >> 24) & 0xFF, (rgba >> 16) & 0xFF, (rgba >> 8) & 0xFF


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _int(el: ET.Element, name: str, default: int | None = None, low: int = 0) -> int:
    raw = el.get(name)
    if raw is None:
        if default is None:
            raise ValueError(f"Pixels has no {name}")
        return default
    value = int(raw)
    if value < low:
        raise ValueError(f"{name} {value} is below {low}")
    return value


def parse_ome(xml: bytes) -> OmePixels:
    """The first Image of an OME-XML document. ValueError when it is not well-formed OME or lacks what
    a reader needs (sizes, a known type and dimension order). Pure."""
    if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
        raise ValueError("OME-XML with a document type declaration")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"OME-XML is not well-formed: {exc}") from exc
    images = _children(root, "Image")
    if _local(root.tag) != "OME" or not images or not _children(images[0], "Pixels"):
        raise ValueError("OME-XML without an Image and its Pixels")
    image, pixels = images[0], _children(images[0], "Pixels")[0]
    sx, sy = _int(pixels, "SizeX", low=1), _int(pixels, "SizeY", low=1)
    sc, sz, st = _int(pixels, "SizeC", 1, 1), _int(pixels, "SizeZ", 1, 1), _int(pixels, "SizeT", 1, 1)
    order, ptype = pixels.get("DimensionOrder", "XYCZT"), pixels.get("Type", "")
    if order not in ORDERS or ptype not in TYPES:
        raise ValueError(f"unsupported DimensionOrder {order!r} or Type {ptype!r}")
    channels = tuple(OmeChannel(c.get("Name", ""), ome_color(c.get("Color")), _int(c, "SamplesPerPixel", 1, 1))
                     for c in _children(pixels, "Channel"))
    spp = channels[0].samples if channels else 1
    planes_c = max(sc // spp, 1)
    if planes_c > TiffFile.MAX_IFDS:
        raise ValueError(f"SizeC {sc}: more channels than a TIFF of {TiffFile.MAX_IFDS} directories holds")
    if not channels:
        channels = (OmeChannel(),) * planes_c
    elif len(channels) != planes_c:
        raise ValueError(f"{len(channels)} Channel elements for SizeC {sc} of {spp} samples each")
    sizes = {"C": planes_c, "Z": sz, "T": st}
    planes = _planes(pixels, order[2:], sizes, root.get("UUID"))
    return OmePixels(sx, sy, sc, sz, st, order, ptype, channels, planes, _physical(pixels),
                     _properties(root, image, pixels))


def _planes(pixels: ET.Element, order: str, sizes: dict[str, int], own_uuid: str | None
            ) -> dict[tuple[int, int, int], int]:
    """(c, z, t) -> directory index, from TiffData (OME-TIFF spec: IFD default 0, FirstC/Z/T default 0,
    PlaneCount default 1 with an IFD, else every plane), in `order` (fastest first); without TiffData
    the planes are the directories from 0. Planes a UUID puts in another file are left out. At most
    `TiffFile.MAX_IFDS` planes are looked at."""
    strides, step = {}, 1
    for axis in order:
        strides[axis] = step
        step *= sizes[axis]
    total = step

    def position(n: int) -> tuple[int, int, int]:
        c, z, t = ((n // strides[a]) % sizes[a] for a in "CZT")
        return c, z, t

    blocks = _children(pixels, "TiffData") or [ET.Element("TiffData")]
    out: dict[tuple[int, int, int], int] = {}
    for block in blocks:
        uuid = _children(block, "UUID")
        if uuid and own_uuid and (uuid[0].text or "").strip() != own_uuid:
            continue
        ifd = _int(block, "IFD", 0)
        first = sum(_int(block, f"First{a}", 0) * strides[a] for a in "CZT")
        count = _int(block, "PlaneCount", 1 if block.get("IFD") is not None else total - first)
        for k in range(min(count, total - first, TiffFile.MAX_IFDS)):
            out.setdefault(position(first + k), ifd + k)
    return out


def _physical(pixels: ET.Element) -> tuple[float, str, float, str] | None:
    try:
        sx, sy = float(pixels.get("PhysicalSizeX", "")), float(pixels.get("PhysicalSizeY", ""))
    except ValueError:
        return None
    return sx, pixels.get("PhysicalSizeXUnit", "µm"), sy, pixels.get("PhysicalSizeYUnit", "µm")


def _properties(root: ET.Element, image: ET.Element, pixels: ET.Element) -> tuple[tuple[str, str], ...]:
    """The OME keys worth showing, as `ome.<Name>`: the image's name, date and description, the
    Pixels attributes, the channel names, and the objective's magnification."""
    out = [(f"ome.{k}", pixels.get(k, "")) for k in PIXELS_KEYS if pixels.get(k)]
    if image.get("Name"):
        out.append(("ome.Name", image.get("Name", "")))
    for name in ("AcquisitionDate", "Description"):
        found = _children(image, name)
        if found and (found[0].text or "").strip():
            out.append((f"ome.{name}", (found[0].text or "").strip()))
    for i, ch in enumerate(_children(pixels, "Channel")):
        for key in ("Name", "Fluor", "EmissionWavelength", "ExcitationWavelength"):
            if ch.get(key):
                out.append((f"ome.Channel.{i}.{key}", ch.get(key, "")))
    for inst in _children(root, "Instrument"):
        for obj in _children(inst, "Objective"):
            if obj.get("NominalMagnification"):
                out.append(("ome.NominalMagnification", obj.get("NominalMagnification", "")))
    return tuple(out)


def description(f: Any, tf: TiffFile, ifd: Ifd, limit: int) -> bytes:
    """The ImageDescription of `ifd`, at most `limit` bytes (the directory reader skips long ones)."""
    value = ifd.values.get(IMAGE_DESCRIPTION)
    if isinstance(value, bytes) and value:
        text = value[:limit]
    else:
        entry = ifd.tags.get(IMAGE_DESCRIPTION)
        if entry is None or entry[2] < 0:
            return b""
        f.seek(entry[2])
        text = bytes(f.read(min(entry[1], limit)))
    return text.split(b"\0", 1)[0]  # TIFF ASCII ends in NUL


class _Layout:
    """The pixel layout of an OME-TIFF: levels, samples per directory, directories per plane."""

    def __init__(self, tf: TiffFile, ome: OmePixels, tile: int) -> None:
        found = sorted({(t, z) for _, z, t in ome.planes})  # at most MAX_IFDS planes, whatever the sizes say
        complete = [(z, t) for t, z in found if all((c, z, t) in ome.planes for c in range(len(ome.channels)))]
        if (0, 0) not in complete:
            raise SourceError("this OME-TIFF keeps its first plane in other files")
        if len(complete) < ome.size_z * ome.size_t:
            complete = [(0, 0)]  # planes elsewhere: the first one only
        self.pages = tuple(tuple(ome.planes[(c, z, t)] for c in range(len(ome.channels))) for z, t in complete)
        self.stack = tuple(StackItem(f"z={z} t={t}") for z, t in complete) if len(complete) > 1 else ()
        used = sorted({i for page in self.pages for i in page})
        if used[-1] >= len(tf.pages):
            raise SourceError("the OME-XML names directories this TIFF does not have")
        first = tf.pages[self.pages[0][0]]
        shape = _geometry(first, tf.subifds[self.pages[0][0]])
        if any(_geometry(tf.pages[i], tf.subifds[i]) != shape for i in used):
            raise SourceError("the planes of this OME-TIFF differ in size, tiling or samples")
        if first.size != (ome.size_x, ome.size_y):
            raise SourceError("the OME-XML size is not the TIFF's")
        self.samples = first.num(SAMPLES, 1)
        if self.samples * len(ome.channels) != ome.size_c:
            raise SourceError("the samples per pixel of this OME-TIFF are not its SizeC")
        self.first = first
        self.levels = _stored_levels(first, tf.subifds[self.pages[0][0]], tile)
        # a read takes one tile of each channel plane's directory (they share one geometry), or decodes a
        # striped one whole (libvips reads strips only in order)
        unit = first.decode_pixels if first.tiled else first.size[0] * first.size[1]
        self.decode_pixels = unit * len(self.pages[0])


def _geometry(page: Ifd, subifds: list[Ifd]) -> list[tuple[tuple[int, int], tuple[int, int], int]]:
    return [(ifd.size, (ifd.num(TILE_WIDTH), ifd.num(TILE_LENGTH)), ifd.num(SAMPLES, 1)) for ifd in (page, *subifds)]


def _stored_levels(first: Ifd, subifds: list[Ifd], tile: int) -> list[Level]:
    """The plane's directory and its tiled, shrinking SubIFDs (pages are chosen per read); a striped
    plane is one level of `tile`-pixel virtual tiles."""
    full = first.size
    tw, th = (first.num(TILE_WIDTH), first.num(TILE_LENGTH)) if first.tiled else (tile, tile)
    levels = [Level(full[0], full[1], tw, th, 1.0, True, 0, -1)]
    if not first.tiled:
        return levels
    for j, ifd in enumerate(subifds):
        w, h = ifd.size
        prev = levels[-1]
        if ifd.tiled and w < prev.width and h <= prev.height:
            levels.append(Level(w, h, ifd.num(TILE_WIDTH), ifd.num(TILE_LENGTH), level_factor(full, (w, h)), True,
                                0, j))
    return levels


class OmeImage:
    """An OME-TIFF (or a `;page=` / `;c=` view of one): `bands` are (channel plane, sample) pairs, read
    from directory `pages[page][channel plane]` of each stack page."""

    def __init__(self, reader: PyramidReader, path: str, meta: ImageMeta, inner: ImageMeta,
                 pages: tuple[tuple[int, ...], ...], bands: tuple[tuple[int, int], ...], whole: bool,
                 tiles: TiffTiles) -> None:
        self.reader, self.path, self.meta, self.inner = reader, path, meta, inner
        self.pages, self.bands, self.whole, self.tiles = pages, bands, whole, tiles

    def read(self, level: int, box: Box4, page: int = 0, layers: int | None = None) -> Any:
        """The bands of `box`: a tile-sized box of a stored level decoded from its stored tiles without
        libvips when they are stored simply (`read_array`), else fetched now into one block of memory
        (one synchronous region fetch per directory, no per-band pipeline); a larger one as a lazy join
        of each directory's crop."""
        check_page(self.meta, page)
        small = box[2] * box[3] <= FETCH_PIXELS
        if small:
            found = self._stored(level, box, page)
            if found is not None:
                return found
        if self._whole_directory():
            return self.reader.read(self.path, self.inner, level, box, self.pages[page][self.bands[0][0]])
        try:
            if small:
                return self._fetched(level, box, page)
            return self._joined(level, box, page)
        except pyvips.Error as exc:
            raise vips_error(exc, self.meta.ident) from exc

    def _whole_directory(self) -> bool:
        """Whether the bands are every sample of one directory, in order (one interleaved plane)."""
        planes = {p for p, _ in self.bands}
        return len(planes) == 1 and self.bands == tuple((p, s) for p in planes for s in range(self.inner.bands))

    def read_array(self, level: int, box: Box4, page: int = 0) -> list[np.ndarray] | None:
        """The bands of `box` as (height, width) arrays (views) decoded from the stored tiles without
        libvips (`sources/rawtiles.py`), for a tile-sized box of a stored level whose directories are
        stored simply (else None): what the channel composite takes (`imaging/channels.py`)."""
        check_page(self.meta, page)
        lv = self.inner.levels[level]
        if not lv.stored or box[2] * box[3] > FETCH_PIXELS:
            return None
        dirs = self.pages[page]
        planes = list(dict.fromkeys(plane for plane, _ in self.bands))
        found = self.tiles.read_many([(dirs[plane], lv.subifd) for plane in planes], box)  # one store request
        if any(a is None for a in found):
            return None
        arrays = dict(zip(planes, found, strict=True))
        return [arrays[p][..., s] for p, s in self.bands]  # type: ignore[index]

    def _stored(self, level: int, box: Box4, page: int) -> Any:
        """`read_array`'s pixels as the image `_fetched` gives, or None."""
        planes = self.read_array(level, box, page)
        if planes is None:
            return None
        w, h = box[2], box[3]
        block = np.stack(planes, axis=-1)
        fmt = VIPS_TYPES[block.dtype.str[1:]]
        out = pyvips.Image.new_from_memory(block.data, w, h, block.shape[2], fmt)
        if self._whole_directory():  # as libvips loads it (RGB brightfield: srgb)
            plane = self.pages[page][self.bands[0][0]]
            interpretation = self.reader.level_image(self.path, self.inner, level, plane).interpretation
        else:
            interpretation = "multiband" if len(self.bands) > 1 else "b-w" if fmt == "uchar" else "grey16"
        return out.copy(interpretation=interpretation)

    def _fetched(self, level: int, box: Box4, page: int) -> Any:
        x, y, w, h = box
        dirs = self.pages[page]
        arrays: dict[int, np.ndarray] = {}
        fmt = ""
        for plane, _ in self.bands:
            if plane not in arrays:
                img = self.reader.level_image(self.path, self.inner, level, dirs[plane])
                fmt = img.format
                data = pyvips.Region.new(img).fetch(x, y, w, h)
                arrays[plane] = np.frombuffer(data, NUMPY_TYPES[fmt]).reshape(h, w, img.bands)
        block = np.ascontiguousarray(np.stack([arrays[p][..., s] for p, s in self.bands], axis=-1))
        out = pyvips.Image.new_from_memory(block.data, w, h, len(self.bands), fmt)
        return out.copy(interpretation="multiband" if len(self.bands) > 1 else "b-w" if fmt == "uchar" else "grey16")

    def _joined(self, level: int, box: Box4, page: int) -> Any:
        dirs = self.pages[page]
        read: dict[int, Any] = {}
        out = []
        for plane, sample in self.bands:
            img = read.get(plane)
            if img is None:
                img = read[plane] = self.reader.read(self.path, self.inner, level, box, dirs[plane])
            out.append(img if self.inner.bands == 1 else img.extract_band(sample))
        return out[0].bandjoin(out[1:]) if len(out) > 1 else out[0]

    def stored_tile(self, level: int, col: int, row: int, fmt: OutputFormat, page: int = 0, now: bool = False
                    ) -> StoredTile | None:
        """Stored tiles pass through for images without channels (RGB brightfield), whole."""
        if self.meta.channels or not self.whole:
            return None
        check_page(self.meta, page)
        return self.reader.stored_tile(self.path, self.inner, (level, col, row), fmt, self.pages[page][0], now)

    def select(self, selector: Selector) -> SourceImage:
        """`;page=<n>` (a plane of a Z/T stack) and `;c=<spec>` (channels, `sources/channels.py`)."""
        if selector.associated is not None:
            raise NotFound(f"{self.meta.ident} has no associated image {selector.associated}")
        pages, meta, bands = self.pages, self.meta, self.bands
        if selector.page is not None:
            if not 0 <= selector.page < len(meta.stack):
                raise NotFound(f"{meta.ident} has no page {selector.page}")
            pages, meta = (pages[selector.page],), replace(meta, stack=())
        if selector.channels is not None:
            chosen_bands, channels = chosen(meta, selector.channels)
            bands = tuple(bands[b] for b in chosen_bands)
            meta = replace(meta, bands=len(bands), channels=channels, compression="",
                           colorspace="grey" if len(bands) == 1 else "multiband",
                           min_values=tuple(meta.min_values[b] for b in chosen_bands),
                           max_values=tuple(meta.max_values[b] for b in chosen_bands))
        if selector.empty:
            return self
        meta = replace(meta, ident=selection_ident(self.meta.ident, selector))
        return OmeImage(self.reader, self.path, meta, self.inner, pages, bands, False, self.tiles)


def _mpp(ome: OmePixels) -> tuple[tuple[str, str], ...]:
    """The pixel size in micrometres under OpenSlide's standard names (`ImageMeta.microns_per_pixel`,
    which IIIF's physical dimensions service reads), when the OME-XML gives it in units of length."""
    res = ome.resolution
    if res is None:
        return ()
    return ("openslide.mpp-x", f"{1e4 / res[0]:.9g}"), ("openslide.mpp-y", f"{1e4 / res[1]:.9g}")


class OmeFormat:
    """OME-TIFF, claimed by content: a TIFF whose first ImageDescription is OME-XML."""

    name = "ome-tiff"
    ranged = True  # reads objects in stores by byte range (registry.py)

    def __init__(self, reader: PyramidReader) -> None:
        self.reader = reader

    def probe(self, path: str, head: bytes) -> bool:
        if head[:4] not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            return False
        try:
            with vfs.open_binary(path) as f:
                tf = TiffFile(f, max_ifds=1)
                return bool(tf.pages) and is_ome(description(f, tf, tf.pages[0], PROBE_BYTES))
        except (OSError, ValueError, struct.error) as exc:
            log.info("OME probe of %s failed: %s", os.path.basename(path), exc)
            return False

    def open(self, path: str, ident: str) -> OmeImage:
        try:
            st = vfs.stat(path)
            with vfs.open_binary(path) as f:
                tf = TiffFile(f)
                ome = parse_ome(description(f, tf, tf.pages[0], MAX_XML))
            if vfs.remote(path):  # every tile offset in one request, now, not two per level on first use
                with vfs.reader(path) as r:
                    tf.load_tables(r.pread_many_cached)
            layout = _Layout(tf, ome, self.reader.tile_size)
        except (FileNotFoundError, NotFound) as exc:
            raise NotFound(f"image not found: {ident}") from exc
        except (OSError, ValueError, struct.error) as exc:
            log.error("cannot read OME-TIFF %s: %s", ident, exc)
            raise SourceError("the OME-TIFF could not be read") from exc
        meta, inner, bands = self._meta(ident, st, ome, layout)
        return OmeImage(self.reader, path, meta, inner, layout.pages, bands, True, TiffTiles(path, tf))

    def _meta(self, ident: str, st: vfs.Stat, ome: OmePixels, layout: _Layout
              ) -> tuple[ImageMeta, ImageMeta, tuple[tuple[int, int], ...]]:
        bits, sample, low, high = TYPES[ome.pixel_type]
        spp = layout.samples
        bands = tuple((c, s) for c in range(len(ome.channels)) for s in range(spp))
        rgb = spp == 3 and len(ome.channels) == 1 and bits == 8 and layout.first.num(PHOTOMETRIC) == 2
        channels = () if rgb else tuple(
            Channel(ch.name if spp == 1 or not ch.name else f"{ch.name} {s + 1}", ch.color if spp == 1 else None)
            for ch in ome.channels for s in range(spp))
        n = len(bands)
        levels = with_virtual(layout.levels, (ome.size_x, ome.size_y))
        inner = ImageMeta(
            ident=ident, width=ome.size_x, height=ome.size_y, levels=levels, bands=spp, bits=bits,
            sample_format=sample, colorspace="srgb" if spp >= 3 else "grey", has_alpha=False, has_icc=False,
            mtime=st.mtime, file_size=st.size, min_values=(low,) * spp, max_values=(high,) * spp,
            loader="tiffload", stack=(StackItem(),) * (max(max(p) for p in layout.pages) + 1),
            compression=layout.first.compression if layout.first.tiled else "", decode_pixels=layout.decode_pixels)
        meta = replace(
            inner, bands=n, colorspace="srgb" if rgb else ("grey" if n == 1 else "multiband"),
            min_values=(low,) * n, max_values=(high,) * n, loader="ome-tiff", stack=layout.stack,
            compression=inner.compression if rgb else "",
            resolution=ome.resolution, properties=ome.properties + _mpp(ome), channels=channels)
        return meta, inner, bands
