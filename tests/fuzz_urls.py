"""Request generators for fuzzing every URL grammar the server answers, shared by the suite's fuzz
tests (tests/test_fuzz.py, through Hypothesis) and the long run against a live server (bench/fuzz.py,
through a seeded `random.Random`): IIP query commands (GET and POST forms), IIIF 3.0 and 2.1 image
requests and info.json, DeepZoom, Zoomify, manifests, collections and the pages.

Every generator draws from a `Source` (an integer in a range; the rest is built on that), so a
Hypothesis run can shrink a failing request and a seeded run repeats exactly. Each value is valid,
near-valid (out of range, off by one, a wrong count) or hostile (huge numbers, signs, NaN and
infinity, unicode, NUL, traversal, broken percent-encoding, very long strings), and each request
is encoded in one of several ways (fully escaped, raw, double-escaped). A request is a `FuzzRequest`:
method, request target (printable ASCII, as an HTTP client would send it), body and headers.

`check` says what is wrong with an answer: a 5xx, a server path or a Python traceback in the
status line's body or headers. `make_fuzz_root` writes the small images the requests point at.
"""

from __future__ import annotations

import os
import random
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import quote, unquote

T = TypeVar("T")

# -- sources of randomness ------------------------------------------------------------------------


class Source(Protocol):
    def integer(self, lo: int, hi: int) -> int:
        """A whole number in lo..hi, both included."""
        ...


class RandomSource:
    """A seeded source: the same seed gives the same requests (bench/fuzz.py)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


# -- the fixture root -----------------------------------------------------------------------------
PYRAMID = "pyr-3lvl-517x389-jpeg.tif"
PNG = "sub/rgba-211x157.png"
JP2 = "jp2-rgb8-lossy-3layers-767x511.jp2"
SVS = "slide-1011x757.svs"
OME = "ome-2ch-z3-t2-301x203.ome.tif"
DOC = "doc-3pages-1003x701-640x900-300x211.tif"
GIF = "anim-3pages-97x61.gif"
STACK = "stack-3pages-451x331-subifd-jpeg.tif"
SEQUENCE = "seq"
BAD = "not-an-image.tif"
ESCAPE = "escape.tif"  # a symlink to an image outside the root
IDENTS = (PYRAMID, PNG, JP2, SVS, OME, DOC, GIF, STACK, SEQUENCE, BAD, ESCAPE)
FOLDERS = ("sub",)


def make_fuzz_root(root: Path) -> None:
    """The images of `IDENTS` under `root` (small, odd-sized; about 2 s to write), and one image
    outside it that `ESCAPE` points at."""
    from . import document_images, jp2_images, ome_images, sequence_images, stack_images
    from .conftest import pattern
    from .slide_images import make_svs

    (root / "sub").mkdir(parents=True, exist_ok=True)
    pattern(517, 389).tiffsave(str(root / PYRAMID), compression="jpeg", Q=85, tile=True, pyramid=True,
                               tile_width=128, tile_height=128)
    pattern(211, 157, bands=4, seed=7).copy(interpretation="srgb").pngsave(str(root / PNG))
    jp2_images.write(jp2_images.BY_NAME[JP2], root / JP2)
    make_svs(root / SVS, 1011, 757)
    ome_images.write(root, ome_images.ZT)
    document_images.write_document(root / DOC)
    document_images.write_gif(root / GIF)
    stack_images.write_stack(root / STACK, 451, 331, 3, True)
    sequence_images.write_sequence(root, SEQUENCE, sequence_images.SEQ_VIEWS[:3], (301, 203))
    (root / BAD).write_bytes(b"II*\x00 this is not a tiff")
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    pattern(61, 43).tiffsave(str(outside / "secret.tif"))
    if not (root / ESCAPE).is_symlink():
        os.symlink(outside / "secret.tif", root / ESCAPE)


# -- requests and what is wrong with their answers ------------------------------------------------
@dataclass(frozen=True)
class FuzzRequest:
    method: str
    target: str  # path and query, printable ASCII
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        body = f" body={self.body[:300]!r}" if self.body else ""
        return f"{self.method} {self.target}{body}"


@dataclass(frozen=True)
class Needles:
    """Strings no answer may hold: server paths (the image root, the temp dir, the venv) and the marks
    of a Python traceback."""

    paths: tuple[str, ...]
    marks: tuple[str, ...] = ("Traceback (most recent call last)", 'File "/', ".py\", line ")

    @classmethod
    def for_root(cls, root: Path, *more: str) -> Needles:
        real = os.path.realpath(root)
        paths = {str(root), real, os.path.dirname(real), "/tmp", sys.prefix, os.path.realpath(sys.prefix), *more}
        return cls(tuple(sorted(p for p in paths if len(p) > 3)))


def _spellings(text: str) -> str:
    """The request as sent and decoded once and twice: what an answer may echo without leaking."""
    once = unquote(text)
    return "\n".join((text, once, unquote(once), once.replace("+", " ")))


def check(req: FuzzRequest, status: int, headers: Sequence[tuple[str, str]], body: bytes,
          needles: Needles) -> list[str]:
    """What is wrong with one answer: a 5xx, a needle in the body or a header value. Two 5xx are
    refusals in errors.py's table, not faults: 501 (a valid request for something not offered, such as
    IIIF upscaling when it is off) and 503 with Retry-After (busy). A path the client sent itself may
    come back (an error names the identifier it was asked for)."""
    problems = []
    retry = any(k.lower() == "retry-after" for k, _ in headers)
    if status >= 500 and status != 501 and not (status == 503 and retry):
        problems.append(f"status {status}")
    text = body.decode("latin-1") + "\n" + "\n".join(f"{k}: {v}" for k, v in headers)
    asked = _spellings(req.target + "\n" + req.body.decode("latin-1")).lower()
    for needle in needles.paths + needles.marks:
        if needle in text and needle.lower() not in asked:
            problems.append(f"leak {needle!r}")
    return problems


# -- value generators ------------------------------------------------------------------------------
HUGE = ("2147483647", "2147483648", "4294967296", "9223372036854775807", "18446744073709551616",
        "999999999", "1000000000", "9" * 40, "1" + "0" * 400)
NUMBERS_HOSTILE = (
    "-1", "-0", "+1", "00", "0000000000000000000000001", "1.", ".5", "-.5", "1e3", "1E-3", "1e309", "-1e309",
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "0x1f", "1_000", "1,5", " 1", "1 ", "\t1", "\uff11\uff12",
    "\u0663", "\u00b2", "1\x00", "", "0.0000000000000000000001", "1e-400", "--1", "++1", "1e", "e1", "0b11",
    "1e300", "-1e300", "1e-300", "3.5e38", "1e-45", "1.7976931348623157e308",
)
STRINGS_HOSTILE = (
    "", " ", ".", "..", "../", "../../../../../../etc/passwd", "/etc/passwd", "..\\..\\windows\\win.ini",
    "....//....//etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "%252e%252e%252f", "..%2f..%2f..%2f",
    "..%c0%af..%c0%af", "/", "//", "\\", "\x00", "%00", "a\x00b", "x.tif%00.jpg", "%", "%%", "%zz", "%e9", "%c3%28",
    "%ff%fe", "%ed%a0%80", "\u00e9", "\u65e5\u672c\u8a9e.tif", "\u202etxt.gpj", "\U0001f600", "\r\n", "%0d%0aX: y",
    "<script>alert(1)</script>", "'\"`", ";", ";;", ";page=", ";page=99999999999", ";page=-1", ";page=1;page=2",
    ";associated=label", ";associated=../x", ";c=1:0-nan", ";c=9999", ";bogus=1", "?", "#", "&", "=", "+",
    "A" * 300, "A" * 5000, "/tmp/x.tif", "/proc/self/environ", "~/.ssh/id_rsa", "C:\\boot.ini", "*", "[", "{}",
)
TEXT_ALPHABET = string.ascii_letters + string.digits + "-_.~!$&'()*+,;=:@/?%#[] \x00\x7f\u00e9\u2028\U0001f600"


class Gen:
    """Builds requests from a `Source`; `idents` and `folders` are the fixture root's images and folders."""

    def __init__(self, src: Source, idents: Sequence[str] = IDENTS, folders: Sequence[str] = FOLDERS,
                 long_len: int = 5000) -> None:
        self.src = src
        self.idents = tuple(idents)
        self.folders = tuple(folders)
        self.long_len = long_len
        self.valid_pct = 80

    # basic draws
    def pick(self, items: Sequence[T]) -> T:
        return items[self.src.integer(0, len(items) - 1)]

    def chance(self, percent: int) -> bool:
        return self.src.integer(0, 99) < percent

    def int_between(self, lo: int, hi: int) -> int:
        return self.src.integer(lo, hi)

    def mix(self, valid: Callable[[], str], near: Callable[[], str], hostile: Callable[[], str] | None = None,
            bias: int = 0) -> str:
        """valid with the request's `valid_pct` % (plus `bias`), else near-valid twice as often as hostile."""
        roll = self.src.integer(0, 99)
        if roll < self.valid_pct + bias:
            return valid()
        if roll % 3:
            return near()
        return (hostile or self.hostile)()

    def begin(self) -> None:
        """Each request draws how often its values are valid: all of them, most, or about half."""
        self.valid_pct = self.pick((100, 92, 80, 50))

    def text(self, max_len: int = 12) -> str:
        return "".join(self.pick(TEXT_ALPHABET) for _ in range(self.int_between(0, max_len)))

    def hostile(self) -> str:
        kind = self.int_between(0, 5)
        if kind == 0:
            return self.pick(NUMBERS_HOSTILE)
        if kind == 1:
            return self.pick(HUGE)
        if kind == 2:
            return self.text()
        if kind == 3:
            return self.pick(STRINGS_HOSTILE)[: self.long_len]
        if kind == 4:
            return self.pick(("x", "9", "%41", "\u00e9", ",")) * self.int_between(100, self.long_len)
        return self.pick(STRINGS_HOSTILE) + self.pick(NUMBERS_HOSTILE)

    def number(self, lo: int, hi: int) -> str:
        """An integer in lo..hi, else one just outside or a hostile one."""
        return self.mix(lambda: str(self.int_between(lo, hi)),
                        lambda: self.pick((str(lo - 1), str(hi + 1), str(-hi), str(hi * 1000 + 7), *HUGE[:3])))

    def fraction(self) -> str:
        return self.mix(lambda: self.pick(("0", "1", "0.5", f"{self.int_between(0, 1000) / 1000:g}")),
                        lambda: self.pick(("-0.1", "1.5", "2", "1e-9", "-1e-300", "0.999999999999", "1e3")))

    def decimal(self, hi: int) -> str:
        return self.mix(lambda: self.pick((str(self.int_between(0, hi)), f"{self.int_between(0, hi * 100) / 100:g}")),
                        lambda: self.pick((str(hi + 1), "-1", f"{hi}.000001", "0.0", "1e2", str(hi * 10**12))))

    def ident(self) -> str:
        """A fixture image, maybe with a selector, else a name just off one or a hostile one."""
        def valid() -> str:
            name = self.pick(self.idents)
            if self.chance(25):
                name += self.pick((f";page={self.int_between(0, 4)}", ";associated=label", ";associated=macro",
                                   ";associated=thumbnail", f";c={self.int_between(1, 3)}",
                                   f";c=1:{self.int_between(0, 500)}-{self.int_between(0, 70000)}:ff0000,2::00ff00",
                                   f";page={self.int_between(0, 5)};c=2"))
            return name

        def near() -> str:
            name = self.pick(self.idents)
            return self.pick((name.upper(), name + ".tif", name[:-1], "./" + name, "sub/../" + name, name + "/",
                              "/" + name, name + ";", name + ";page=" + self.pick(HUGE), "missing.tif",
                              name + ";c=0", name + ";c=1:5-1", name.replace("/", "%2F"), name + "%00",
                              "../outside/secret.tif", "sub/../../outside/secret.tif", name + "\x00.jpg",
                              name + ";associated=nope", name + ";page=01"))

        return self.mix(valid, near)

    def folder(self) -> str:
        return self.mix(lambda: self.pick(self.folders), lambda: self.pick(("sub/", "missing", "sub/sub", "..")))

    # encodings
    def encode(self, text: str, safe: str = "/") -> str:
        """Percent-encoded keeping `safe`, or fully; in a request not all valid, also left raw or
        double-encoded."""
        mode = self.int_between(0, 9 if self.valid_pct < 100 else 6)
        if mode < 5:
            return quote(text, safe=safe)
        if mode < 7:
            return quote(text, safe="")
        if mode < 9:
            return text  # raw: `ascii_target` escapes what no HTTP client can send as it is
        return quote(quote(text, safe=""), safe="")

    # -- IIP ---------------------------------------------------------------------------------------
    def iip(self) -> FuzzRequest:
        pairs: list[tuple[str, str]] = []
        if self.chance(92):
            pairs.append(("FIF", self.ident()))
        for _ in range(self.int_between(0, 4)):
            pairs.append(self.pick(IIP_MODIFIERS)(self))
        pairs += self.pick(IIP_OUTPUTS)(self)
        if self.chance(8):
            pairs += self.pick(IIP_OUTPUTS)(self) if self.chance(50) else [("FIF", self.ident())]
        if pairs and self.chance(6):
            i, j = self.int_between(0, len(pairs) - 1), self.int_between(0, len(pairs) - 1)
            pairs[i], pairs[j] = pairs[j], pairs[i]
        if self.chance(6):
            pairs.append((self.pick(("", "=", "XYZ", "fif ", " FIF", "\u00e9", "&", "FIF\x00")), self.hostile()))
        query = self._iip_query(pairs)
        path = self.pick(("/iip", "/fcgi-bin/iipsrv.fcgi"))
        if self.chance(15):
            ctype = self.pick(("application/x-www-form-urlencoded", "text/plain", "multipart/form-data", ""))
            headers = (("Content-Type", ctype),) if ctype else ()
            return FuzzRequest("POST", path, query.encode("utf-8", "surrogatepass"), headers + self.headers())
        method = self.pick(("GET", "GET", "GET", "HEAD"))
        return FuzzRequest(method, ascii_target(f"{path}?{query}"), headers=self.headers())

    def _iip_query(self, pairs: list[tuple[str, str]]) -> str:
        parts = []
        for key, value in pairs:
            if self.chance(15):
                key = self.pick((key.lower(), key.title(), key.swapcase()))
            if self.chance(3):
                parts.append(self.encode(key, safe=""))  # a command with no `=`
                continue
            parts.append(f"{self.encode(key, safe='')}={self.encode(value, safe='/,:;!^-[]')}")
        sep = "&&" if self.chance(3) else "&"
        return sep.join(parts)

    # -- IIIF --------------------------------------------------------------------------------------
    def iiif_params(self, version: int) -> str:
        """`region/size/rotation/quality.format` (or a near form with the wrong number of segments)."""
        region = self.mix(self._region, lambda: self.pick((
            "0,0,0,0", "-1,0,10,10", "0,0,10", "pct:0,0,0,0", "pct:-5,0,10,10", "pct:0,0,100.0000000000001,1",
            f"{self.pick(HUGE)},0,10,10", f"0,0,{self.pick(HUGE)},{self.pick(HUGE)}", "pct:1e2,0,1,1",
            "Full", "squared", "pct:,,,", "0.5,0.5,10,10", "pct:" + "9" * 20 + ",0,1,1")))
        size = self.mix(lambda: self._size(version), lambda: self.pick((
            "0,", ",0", "0,0", "!0,0", "pct:0", "pct:101", "^pct:1000", "^max", "^" + self.pick(HUGE) + ",",
            "full" if version == 3 else "^max", "max,", "-1,", "pct:-1", "!,", "!10,", "^^max", "pct:1e2",
            f"{self.pick(HUGE)},{self.pick(HUGE)}", "10,10,10")))
        rotation = self.mix(lambda: self.pick(("0", "90", "180", "270", "!0", "!90", "360", "22.5",
                                               f"{self.int_between(0, 36000) / 100:g}")),
                            lambda: self.pick(("-90", "361", "360.0000001", "!!90", "1e2", "90.", ".5",
                                               "nan", "inf", "9" * 30, "!")))
        quality = self.mix(lambda: self.pick(("default", "color", "gray", "bitonal")),
                           lambda: self.pick(("grey", "Default", "native", "", "colour")), bias=10)
        fmt = self.mix(lambda: self.pick(("jpg", "png", "webp", "gif", "tif", "jpg", "png", "jp2", "avif")),
                       lambda: self.pick(("pdf", "jpeg", "JPG", "", "jpg.jpg", "tiff", "bmp")), bias=10)
        filename = f"{quality}.{fmt}" if self.chance(95) else self.pick((quality, f".{fmt}", f"{quality}..{fmt}"))
        segs = [region, size, rotation, filename]
        if self.chance(4):
            segs = segs[: self.int_between(1, 3)] + ([] if self.chance(50) else segs)
        return "/".join(self.encode(s, safe=",:!^") for s in segs)

    def _region(self) -> str:
        kind = self.int_between(0, 3)
        if kind == 0:
            return self.pick(("full", "square"))
        if kind == 1:
            x, y = self.int_between(0, 700), self.int_between(0, 500)
            return f"{x},{y},{self.int_between(1, 1100)},{self.int_between(1, 800)}"
        return "pct:" + ",".join(self.decimal(100) for _ in range(4))

    def _size(self, version: int) -> str:
        up = "^" if version == 3 and self.chance(20) else ""
        kind = self.int_between(0, 6)
        w, h = self.int_between(1, 1400), self.int_between(1, 1400)
        forms = ("max", f"{w},", f",{h}", f"{w},{h}", f"!{w},{h}", f"pct:{self.decimal(150)}",
                 "full" if version == 2 else "max")
        return up + forms[kind]

    def iiif(self) -> FuzzRequest:
        version = self.pick((3, 2, 0))
        prefix = {3: "/iiif/3", 2: "/iiif/2", 0: "/iiif"}[version]
        ident = self.encode(self.ident(), safe="" if self.chance(85) else "/")
        kind = self.int_between(0, 9)
        if kind < 3:
            tail = "/info.json" if self.chance(90) else self.pick(("/info.json/", "/info.JSON", "/info.xml", "/"))
        elif kind == 3:
            tail = self.pick(("", "/", "//", "/info.json?x=1"))
        else:
            tail = "/" + self.iiif_params(version or 3)
        method = self.pick(("GET", "GET", "GET", "GET", "HEAD", "OPTIONS", "POST"))
        return FuzzRequest(method, ascii_target(prefix + "/" + ident + tail), headers=self.headers())

    # -- DeepZoom and Zoomify ----------------------------------------------------------------------
    def deepzoom_path(self) -> str:
        ident = self.encode(self.ident())
        if self.chance(25):
            return ident + self.pick((".dzi", ".dzi", ".DZI", ".xml", "dzi", ".dzi/", "_files/"))
        level, col, row = self.number(6, 11), self.number(0, 4), self.number(0, 4)
        ext = self.mix(lambda: self.pick(("jpg", "jpeg", "png", "webp")),
                       lambda: self.pick(("JPG", "gif", "tif", "", "jpg.png", "jpg/")), bias=10)
        sep = "_" if self.chance(95) else self.pick(("-", ",", "__", ""))
        return f"{ident}_files/{self.encode(level)}/{self.encode(col)}{sep}{self.encode(row)}.{ext}"

    def deepzoom(self) -> FuzzRequest:
        path = self.deepzoom_path()
        if self.chance(12):
            return FuzzRequest("GET", ascii_target(f"{self.pick(('/iip', '/fcgi-bin/iipsrv.fcgi'))}?DeepZoom={path}"))
        return FuzzRequest(self.pick(("GET", "GET", "GET", "HEAD", "POST")), ascii_target("/deepzoom/" + path),
                           headers=self.headers())

    def zoomify_path(self) -> str:
        ident = self.encode(self.ident())
        if self.chance(25):
            return ident + self.pick(("/ImageProperties.xml", "/ImageProperties.xml", "/imageproperties.xml",
                                      "ImageProperties.xml", "/ImageProperties.xml/", "/"))
        group = self.number(0, 3)
        tier, col, row = self.number(0, 5), self.number(0, 4), self.number(0, 4)
        ext = self.mix(lambda: self.pick(("jpg", "jpeg")), lambda: self.pick(("png", "JPG", "", "jpg.jpg")), bias=10)
        group_word = "TileGroup" if self.chance(95) else self.pick(("tilegroup", "TileGroup-", "Group", ""))
        numbers = "-".join(self.encode(n) for n in (tier, col, row))
        return f"{ident}/{group_word}{self.encode(group)}/{numbers}.{ext}"

    def zoomify(self) -> FuzzRequest:
        path = self.zoomify_path()
        if self.chance(12):
            return FuzzRequest("GET", ascii_target(f"{self.pick(('/iip', '/fcgi-bin/iipsrv.fcgi'))}?Zoomify={path}"))
        return FuzzRequest(self.pick(("GET", "GET", "GET", "HEAD", "POST")), ascii_target("/zoomify/" + path),
                           headers=self.headers())

    # -- manifests, collections and pages ------------------------------------------------------------
    def pages(self) -> FuzzRequest:
        kind = self.int_between(0, 9)
        ident = self.encode(self.ident(), safe="" if self.chance(50) else "/")
        if kind < 3:
            target = f"/iiif/manifests/{ident}" + self.pick((".json", ".json", ".JSON", "", ".json/", ".jsonx"))
        elif kind < 5:
            target = self.pick((f"/iiif/collections/{self.encode(self.folder())}.json", "/iiif/collection.json",
                                "/iiif/collections/.json", "/iiif/collections/sub%2F..%2F...json"))
        elif kind < 7:
            query = "&".join(f"{k}={self.encode(v, safe='')}" for k, v in (
                ("source", self.mix(lambda: self.pick(("dzi", "iiif3", "iiif2", "zoomify")), self.text)),
                ("drawer", self.mix(lambda: self.pick(("canvas", "webgl", "html", "auto")), self.text)),
                ("page", self.number(0, 3))) if self.chance(60))
            target = f"/viewer/{ident}" + (f"?{query}" if query else "")
        elif kind < 8:
            target = f"/mirador/{ident}"
        else:
            target = self.pick(("/", "/health", "/?" + self.encode(self.hostile(), safe=""), "/health/",
                                "/favicon.ico", "/assets/openseadragon/../../etc/passwd", "/" + ident))
        method = self.pick(("GET", "GET", "GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE"))
        return FuzzRequest(method, ascii_target(target), headers=self.headers())

    # -- request headers -----------------------------------------------------------------------------
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Mostly none; else one to three of the headers the server reads (validators, ranges, CORS,
        content negotiation, forwarding, Host), valid or not."""
        if not self.chance(30):
            return ()
        picked = {}
        for _ in range(self.int_between(1, 3)):
            name, values = self.pick(HEADERS)
            value = self.pick(values) if self.chance(75) else self.hostile()
            picked[name] = header_safe(value.replace("$DATE", formatdate(self.int_between(0, 4_200_000_000),
                                                                            usegmt=True)))
        return tuple(picked.items())


HEADERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("If-None-Match", ('"0123456789abcdef0123"', "*", 'W/"x"', '"a", "b"', '""', "W/", ",,,")),
    ("If-Modified-Since", ("$DATE", "$DATE", "1 Jan 99999999999 00:00:00 GMT", "01 Jan 1 00:00:00 +9999",
                           "Sat, 01 Jan 10000 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "yesterday")),
    ("If-Unmodified-Since", ("$DATE", "0")), ("If-Match", ("*", '"x"')), ("If-Range", ("$DATE", '"x"')),
    ("Range", ("bytes=0-10", "bytes=-5", "bytes=10-", "bytes=99999999999999999999-", "bytes=5-1", "items=0-1",
               "bytes=0-1,2-3,4-5")),
    ("Origin", ("http://example.com", "null", "https://a.b:99999", "file://")),
    ("Access-Control-Request-Method", ("GET", "POST", "DELETE", "")),
    ("Access-Control-Request-Headers", ("content-type", "x-evil, range", "")),
    ("Accept", ("application/ld+json", "application/json", "*/*", "text/html", "image/webp,*/*;q=0.8",
                'application/ld+json;profile="http://iiif.io/api/image/3/context.json"', "text/*;q=nan")),
    ("Accept-Encoding", ("gzip", "br, zstd", "identity;q=0", "*")),
    ("X-Forwarded-Host", ("evil.example", "a b", "[::1]:99999", "%00", "a" * 300, "x.example, y.example")),
    ("X-Forwarded-Proto", ("https", "gopher", "HTTPS, http")),
    ("X-Forwarded-Prefix", ("/prefix", "../..", "")),
    ("Forwarded", ('for=1.2.3.4;proto=https;host=x.example', 'host="a b"', "for=", ";;;")),
    ("Host", ("evil.example", "", "[::1]:99999", "a" * 300, "localhost:0")),
    ("Content-Type", ("application/x-www-form-urlencoded", "multipart/form-data; boundary=",
                      "text/plain; charset=nope")),
)


def header_safe(value: str) -> str:
    """A header value as a client can send it: printable ASCII, the rest percent-encoded."""
    return "".join(ch if " " <= ch <= "~" else quote(ch, safe="", errors="surrogatepass") for ch in value)


def ascii_target(target: str) -> str:
    """The target as an HTTP client sends it: every byte outside printable ASCII percent-encoded (a
    raw `%` stays, so broken escapes reach the server), `#` escaped so it is not taken for a fragment."""
    out = []
    for ch in target:
        if ch == "#" or not ("!" <= ch <= "~"):
            out.append(quote(ch, safe="", errors="surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


# -- IIP commands: each (gen) -> (command, argument) -----------------------------------------------
def _wid(g: Gen) -> tuple[str, str]:
    return g.pick(("WID", "HEI")), g.number(1, 1300)


def _rgn(g: Gen) -> tuple[str, str]:
    return "RGN", g.mix(lambda: ",".join(g.fraction() for _ in range(4)),
                        lambda: ",".join(g.fraction() for _ in range(g.pick((3, 5, 0)))))


def _qlt(g: Gen) -> tuple[str, str]:
    codecs = ("none", "lzw", "deflate", "jpeg", "webp")
    return "QLT", g.mix(lambda: f"{g.pick(codecs)}:{g.int_between(-1, 100)}" if g.chance(30) else g.number(0, 100),
                        lambda: g.pick(("101", "-2", "jpeg:", ":50", "lzma:50", "JPEG:90", "deflate:1000", "-1")))


def _sds(g: Gen) -> tuple[str, str]:
    return "SDS", g.mix(lambda: g.pick((g.number(0, 3), f"{g.int_between(0, 20)},{g.pick((0, 45, 90))}")),
                        lambda: g.pick(("-1", "1,2,3", ",", "0,", "99999,90", "10,-45")))


def _cnt(g: Gen) -> tuple[str, str]:
    return "CNT", g.mix(lambda: g.pick(("eq", "st", "1", "0.5", "2.5", "0")),
                        lambda: g.pick(("-1", "1e30", "1e300", "-1e39", "EQ")))


def _gam(g: Gen) -> tuple[str, str]:
    return "GAM", g.mix(lambda: g.pick(("log", "1", "0.5", "2.2")), lambda: g.pick(("0", "-1", "1e300", "1e-300")))


def _cmp(g: Gen) -> tuple[str, str]:
    return "CMP", g.mix(lambda: g.pick(("hot", "cold", "jet", "blue", "green", "red")),
                        lambda: g.pick(("HOT", "grey", "")))


def _ctw(g: Gen) -> tuple[str, str]:
    def matrix(rows: int, cols: int) -> str:
        return "[" + ";".join(",".join(g.fraction() for _ in range(cols)) for _ in range(rows)) + "]"

    return "CTW", g.mix(lambda: matrix(g.int_between(1, 3), g.pick((1, 3, 4))),
                        lambda: g.pick((matrix(5, 3), matrix(2, 17), "[1,0;0]", "[]", "[;]", "1,0,0")))


def _col(g: Gen) -> tuple[str, str]:
    return "COL", g.mix(lambda: g.pick(("grey", "gray", "binary", "color", "colour")),
                        lambda: g.pick(("GREY", "bitonal", "")))


def _minmax(g: Gen) -> tuple[str, str]:
    def valid() -> str:
        return f"{g.pick(('-', '0', '1', '2'))}:{g.int_between(0, 100)},{g.int_between(101, 70000)}"

    return "MINMAX", g.mix(valid, lambda: g.pick(("1:5,1", "1:nan,2", "999:0,1", "-:0", "1:0,1e400", "a:0,1",
                                                  "1:0,1e-300", "-:-1e308,1e308", "0:1e-45,2e-45")))


def _cnv(g: Gen) -> tuple[str, str]:
    def kernel(n: int) -> str:
        return "[" + ",".join(g.fraction() for _ in range(n)) + "]"

    return "CNV", g.mix(lambda: g.pick(("sobel", "prewitt", "scharr", "laplace", "gaussian", "sharpen", "emboss",
                                        kernel(1), kernel(9), kernel(25))),
                        lambda: g.pick((kernel(4), kernel(49), "[]", "SOBEL", "[1,nan,1,1,1,1,1,1,1]")))


def _shd(g: Gen) -> tuple[str, str]:
    return "SHD", g.mix(lambda: f"{g.int_between(0, 360)},{g.int_between(-90, 90)}",
                        lambda: g.pick(("361,0", "0,91", "0", "1.5,2", "-1,0")))


def _rot(g: Gen) -> tuple[str, str]:
    return "ROT", g.mix(lambda: g.pick(("0", "90", "180", "270", "!90", "45", "!0", "360", "22.5")),
                        lambda: g.pick(("-90", "361", "!", "!!90", "1e2", "nan")))


def _lyr(g: Gen) -> tuple[str, str]:
    return "LYR", g.number(1, 256)


def _inv(g: Gen) -> tuple[str, str]:
    return g.pick((("INV", ""), ("INV", "1"), ("ICC", g.text())))


IIP_MODIFIERS: tuple[Callable[[Gen], tuple[str, str]], ...] = (
    _wid, _wid, _rgn, _qlt, _sds, _cnt, _gam, _cmp, _ctw, _col, _minmax, _cnv, _shd, _rot, _lyr, _inv)
OBJECTS = ("IIP,1.0", "IIP,1.3", "Basic-info", "Max-size", "Resolution-number", "Tile-size", "Bits-per-channel",
           "Horizontal-views", "Vertical-views", "Min-Max-sample-values", "Resolutions", "DPI", "colorspace",
           "colorspace,0-2,0", "stack", "metadata", "summary-info", "title", "rights", "xmp", "copyright",
           "openslide.vendor", "aperio.AppMag", "iip-server", "iip-opt-comm", "iip-opt-obj", "bogus", "IIP")


def _tile_out(g: Gen) -> list[tuple[str, str]]:
    cmd = g.pick(("JTL", "JTL", "PTL", "WTL", "TTL", "ATL"))
    return [(cmd, g.mix(lambda: f"{g.int_between(0, 5)},{g.int_between(0, 40)}",
                        lambda: g.pick((f"{g.number(0, 5)},{g.number(0, 40)}", "1", "1,2,3", ",", "0,-1"))))]


def _jtls(g: Gen) -> list[tuple[str, str]]:
    return [("JTLS", g.mix(lambda: f"{g.int_between(0, 2)},{g.int_between(0, 4)},{g.int_between(0, 30)},90",
                           lambda: f"{g.number(0, 2)},{g.number(0, 4)},{g.number(0, 30)}"))]


def _til(g: Gen) -> list[tuple[str, str]]:
    return [("TIL", g.mix(lambda: f"{g.int_between(0, 4)},{g.int_between(0, 10)}-{g.int_between(0, 40)}",
                          lambda: g.pick(("0,5-1", f"3,0-{g.pick(HUGE)}", "0", "0,0-", "-1,0"))))]


def _cvt(g: Gen) -> list[tuple[str, str]]:
    return [("CVT", g.mix(lambda: g.pick(("jpeg", "jpeg", "png", "webp", "tiff", "jpg", "tif", "jp2", "avif")),
                          lambda: g.pick(("JPEG", "gif", "pdf", "", "jpeg2000")), bias=10))]


def _pfl(g: Gen) -> list[tuple[str, str]]:
    def line() -> str:
        r, x, y = g.int_between(0, 4), g.int_between(0, 300), g.int_between(0, 300)
        return g.pick((f"{r}:{x},{y}-{x + g.int_between(1, 200)},{y}", f"{r}:{x},{y}-{x},{y + g.int_between(1, 200)}",
                       f"{r}:{x},{y}"))

    return [("PFL", g.mix(line, lambda: g.pick(("2:10,10-5,10", "2:10,10-20,20", f"{g.pick(HUGE)}:0,0", "2:"))))]


def _spectra(g: Gen) -> list[tuple[str, str]]:
    return [("SPECTRA", g.mix(lambda: f"{g.int_between(0, 4)},{g.int_between(0, 20)},{g.int_between(0, 255)},"
                                      f"{g.int_between(0, 255)}",
                              lambda: ",".join(g.number(0, 300) for _ in range(g.pick((4, 3, 5))))))]


def _objs(g: Gen) -> list[tuple[str, str]]:
    return [("OBJ", g.pick(OBJECTS) if g.chance(92) else g.hostile()) for _ in range(g.int_between(1, 4))]


def _entry(g: Gen) -> list[tuple[str, str]]:
    kind = g.int_between(0, 2)
    if kind == 0:
        ident = g.ident()
        return [("IIIF", ident + g.pick(("/info.json", "", "/" + unquote(g.iiif_params(3)))))]
    if kind == 1:
        return [("DeepZoom", unquote(g.deepzoom_path()))]
    return [("Zoomify", unquote(g.zoomify_path()))]


def _none(g: Gen) -> list[tuple[str, str]]:
    return [] if g.chance(50) else [(g.pick(("XYZ", "JTL2", "FIF")), g.hostile())]


IIP_OUTPUTS: tuple[Callable[[Gen], list[tuple[str, str]]], ...] = (
    _tile_out, _tile_out, _tile_out, _jtls, _til, _cvt, _cvt, _cvt, _pfl, _spectra, _objs, _objs, _entry, _none)

PROTOCOLS: dict[str, Callable[[Gen], FuzzRequest]] = {
    "iip": Gen.iip, "iiif": Gen.iiif, "deepzoom": Gen.deepzoom, "zoomify": Gen.zoomify, "pages": Gen.pages,
}


def fuzz_request(gen: Gen, protocol: str) -> FuzzRequest:
    """One request of `protocol` (a key of `PROTOCOLS`)."""
    gen.begin()
    return PROTOCOLS[protocol](gen)

