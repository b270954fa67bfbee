"""IIIF URL handling with no I/O: splitting the raw path into identifier and parameters, decoding
each segment exactly once, and building the public base URI that `id`/`@id`, redirects and
`Link` headers use.

Identifiers (https://iiif.io/api/image/3.0/#9-uri-encoding-and-decoding) must have `/ ? # [ ] @ %`
percent-encoded, so `a%2Fb` is the identifier `a/b` (a file in a sub-folder), while a raw `/` is a
path separator: `/iiif/3/a/b/info.json` is not a IIIF URI and answers 404. Starlette matches routes
on the decoded `scope["path"]`, where both look the same, so the split happens on
`scope["raw_path"]` before decoding.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote_plus, unquote_to_bytes

from ...errors import BadRequest, NotFound
from ...models import fast_init

_HOST = re.compile(r"[A-Za-z0-9.\-_~]+(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")


@fast_init
@dataclass(frozen=True)
class Target:
    """What a IIIF URI asks for: the base URI (`redirect`), `info`, or an `image` with its four
    still-encoded parameter segments."""

    kind: Literal["redirect", "info", "image", "probe"]
    ident: str
    params: tuple[str, ...] = ()
    page: int = 0  # the page of an image stack named in the identifier (`split_page`)


def split_page(target: Target, delimiter: str) -> Target:
    """The page index that iipsrv's IIIF_DELIMITER appends to an identifier, split off: with `;`,
    `stack.tif;2` is page 2 of `stack.tif`. The last delimiter counts, and only when digits alone
    follow it (iipsrv reads any tail with `atoi`, so `a;b.tif` would be page 0 of `a`; here it stays
    the file `a;b.tif`). No delimiter configured: the identifier is the file name as is."""
    head, sep, tail = target.ident.rpartition(delimiter) if delimiter else ("", "", "")
    if not sep or not head or not re.fullmatch(r"[0-9]{1,9}", tail):
        return target
    return Target(target.kind, head, target.params, int(tail))


def decode(segment: str) -> str:
    """Percent-decode one URI segment once, as UTF-8: `decode("a%2Fb") == "a/b"`,
    `decode("%252F") == "%2F"`. Invalid UTF-8 is a 400."""
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("the URI is not valid percent-encoded UTF-8") from exc


def encode_ident(ident: str, safe: str = "") -> str:
    """The identifier as it appears in our URIs: everything but unreserved characters encoded."""
    return quote(ident, safe=safe)


def raw_tail(scope: Mapping[str, Any], prefix: str) -> list[str]:
    """The still-encoded path segments after `prefix` (e.g. `/iiif/3`), from `scope["raw_path"]`.
    `/iiif/3/a%2Fb/info.json` -> `["a%2Fb", "info.json"]`."""
    root = scope.get("root_path", "")
    raw_bytes = scope.get("raw_path")
    raw = raw_bytes.decode("latin-1") if raw_bytes else quote(scope["path"])
    if root and not raw.startswith(quote(root)):
        root = ""  # a proxy that strips the root path from the raw target
    skip = (root + prefix).count("/") + 1
    return raw.split("/")[skip:]


def path_target(segments: list[str]) -> Target:
    """`[id]` -> base URI; `[id, "info.json"]` -> info; `[id, region, size, rotation, file]` ->
    image. Any other shape (such as a raw `/` inside the identifier) is a 404."""
    if not segments or not segments[0]:
        raise NotFound("no identifier given")
    ident = decode(segments[0])
    rest = segments[1:]
    if not rest or rest == [""]:
        return Target("redirect", ident)
    if rest == ["info.json"]:
        return Target("info", ident)
    if rest == ["probe"]:  # the IIIF Auth 2.0 probe of a restricted image (protocols/iiif/auth.py)
        return Target("probe", ident)
    if len(rest) == 4:
        return Target("image", ident, tuple(rest))
    raise NotFound("not a IIIF URI: identifiers must have their slashes encoded as %2F")


def query_target(raw: str) -> Target:
    """iipsrv's `?IIIF=` form: `id/info.json`, `id/region/size/rotation/file`, else the base URI.
    As in iipsrv, the identifier is everything before those segments, so a raw `/` is allowed here;
    a leading `/` is dropped. `query_target("sub/a.tif/full/max/0/default.jpg").ident == "sub/a.tif"`."""
    segs = raw.lstrip("/").split("/")
    if len(segs) >= 2 and segs[-1] == "info.json":
        return Target("info", _join(segs[:-1]))
    if len(segs) >= 5 and "." in segs[-1]:
        return Target("image", _join(segs[:-4]), tuple(segs[-4:]))
    return Target("redirect", _join([s for s in segs if s] or [""]))


def _join(segs: list[str]) -> str:
    ident = "/".join(decode(s) for s in segs)
    if not ident:
        raise NotFound("no identifier given")
    return ident


def raw_query_value(query: str, name: str) -> str | None:
    """The still-encoded value of the first `name=` pair of a query string (case-insensitive)."""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote_plus(key).strip().lower() == name:
            return value
    return None


def _forwarded(header: str) -> dict[str, str]:
    """The first element of an RFC 7239 `Forwarded` header: `for=1.2.3.4;proto=https;host=x`."""
    out: dict[str, str] = {}
    for pair in header.split(",")[0].split(";"):
        key, _, value = pair.strip().partition("=")
        if key and value:
            out[key.lower()] = value.strip('"')
    return out


def public_base(scope_scheme: str, headers: Mapping[str, str], root_path: str, configured: str) -> str:
    """`scheme://host/root` as the client sees the server: the configured public base URL, else
    `Forwarded`, else `X-Forwarded-Proto`/`X-Forwarded-Host`, else the request's own scheme and Host.
    Values that are not a plain scheme or host are ignored (they end up in headers and JSON)."""
    if configured:
        return configured.rstrip("/")
    fwd = _forwarded(headers.get("forwarded", ""))
    schemes = [fwd.get("proto"), _first(headers.get("x-forwarded-proto")), scope_scheme]
    hosts = [fwd.get("host"), _first(headers.get("x-forwarded-host")), headers.get("host")]
    scheme = next((s.lower() for s in schemes if s and s.lower() in ("http", "https")), "http")
    host = next((h for h in hosts if h and _HOST.fullmatch(h)), "localhost")
    return f"{scheme}://{host}{quote(root_path)}"


_BASE_FIELDS = frozenset((b"forwarded", b"x-forwarded-proto", b"x-forwarded-host", b"host"))


def scope_base(scope: Mapping[str, Any], configured: str) -> str:
    """`public_base` of an ASGI scope (its scheme, headers and root path), made once per distinct value of the
    headers it reads (a request's own Host, mostly the same for every tile of a viewer)."""
    if configured:  # the headers do not count
        return public_base("http", {}, "", configured)
    fields: Sequence[tuple[bytes, bytes]] = scope["headers"]
    read = tuple([(k, v) for k, v in fields if k in _BASE_FIELDS])
    return _scope_base(scope.get("scheme", "http"), read, scope.get("root_path", ""))


@functools.lru_cache(maxsize=256)
def _scope_base(scheme: str, read: tuple[tuple[bytes, bytes], ...], root_path: str) -> str:
    headers: dict[str, str] = {}
    for k, v in read:  # the first of a repeated header, as Starlette's `Headers.get`
        headers.setdefault(k.decode("latin-1"), v.decode("latin-1"))
    return public_base(scheme, headers, root_path, "")


def _first(value: str | None) -> str | None:
    return value.split(",")[0].strip() if value else None
