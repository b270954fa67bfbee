"""info.json for IIIF Image API 3.0 (https://iiif.io/api/image/3.0/#5-image-information) and 2.1
(https://iiif.io/api/image/2.1/#image-information), built as plain structures from the image's real
pyramid and serialised with `json.dumps`. Pure: the handler passes the base URI and the server's
capabilities (`Service`).

`sizes` lists every level that is within the limits, smallest first, including full resolution;
`tiles` gives one entry per native tile size with the levels' own scale factors (the core reads a
request at scale factor `s` from the level whose factor is `s`), so they are right for odd sizes:
1001 px with levels 501 and 251 px gives factors 1, 2, 4, where iipsrv's `1001 // 501` gives 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ...models import ImageMeta, OutputFormat
from .auth import CONTEXT2 as AUTH2_CONTEXT
from .grammar import Limits, Version

CONTEXT = {2: "http://iiif.io/api/image/2/context.json", 3: "http://iiif.io/api/image/3/context.json"}
PROFILE_URI = {2: "http://iiif.io/api/image/2/level2.json", 3: "http://iiif.io/api/image/3/level2.json"}
PROTOCOL = "http://iiif.io/api/image"
PHYSDIM_CONTEXT = "http://iiif.io/api/annex/services/physdim/1/context.json"
PHYSDIM_PROFILE = "http://iiif.io/api/annex/services/physdim"
MEDIA_TYPE_V3 = f'application/ld+json;profile="{CONTEXT[3]}"'
LEVEL2_FORMATS = ("jpg", "png")  # in the level 2 profile; anything else goes to extraFormats
QUALITIES = ("color", "gray", "bitonal")  # beyond `default`; `color` works for grey images too
FEATURES_V3 = (
    "baseUriRedirect", "canonicalLinkHeader", "jsonldMediaType", "mirroring", "profileLinkHeader",
    "regionByPct", "regionByPx", "regionSquare", "rotationArbitrary", "rotationBy90s", "sizeByConfinedWh",
    "sizeByH", "sizeByPct", "sizeByW", "sizeByWh",
)
FEATURES_V2 = (
    "baseUriRedirect", "canonicalLinkHeader", "jsonldMediaType", "mirroring", "profileLinkHeader",
    "regionByPct", "regionByPx", "regionSquare", "rotationArbitrary", "rotationBy90s", "sizeByConfinedWh",
    "sizeByDistortedWh", "sizeByH", "sizeByPct", "sizeByW", "sizeByWh",
)


@dataclass(frozen=True)
class Service:
    """What this server offers, from settings and the formats libvips can write."""

    formats: tuple[OutputFormat, ...]
    limits: Limits
    cors: bool = True
    rights: str = ""  # the server-wide default (settings.rights)


def is_uri(value: str | None) -> bool:
    return bool(value) and str(value).startswith(("http://", "https://"))


def rights_of(meta: ImageMeta, service: Service) -> str | None:
    """The image's own rights statement (TIFF Copyright / EXIF), else the configured default."""
    return meta.meta("rights") or service.rights or None


def sizes(meta: ImageMeta, limits: Limits) -> list[dict[str, int]]:
    out = [{"width": lv.width, "height": lv.height} for lv in reversed(meta.levels)]
    return [s for s in out if limits.within(s["width"], s["height"])]


def tiles(meta: ImageMeta) -> list[dict[str, Any]]:
    """One entry per native tile size, with the integer scale factors of the levels that use it."""
    grouped: dict[tuple[int, int], list[int]] = {}
    for lv in meta.levels:
        factors = grouped.setdefault((lv.tile_width, lv.tile_height), [])
        factor = max(round(lv.factor), 1)
        if factor not in factors:
            factors.append(factor)
    return [{"width": w, "height": h, "scaleFactors": sorted(f)} for (w, h), f in grouped.items()]


def physical_dimensions(meta: ImageMeta, base: str, version: Version) -> list[dict[str, Any]]:
    """The physical dimensions service (https://iiif.io/api/annex/services/physdim/) of an image whose
    pixel size is known (a slide's microns per pixel): millimetres per full-resolution pixel; [] when
    unknown. 2.1: the annex's form, as iipsrv writes it (for its TIFF resolutions). 3.0 wants `id` and
    `type` on every service: a fragment of the image service's id (it names the service, nothing to
    fetch) and the annex's `PhysicalDimensions`."""
    mpp = meta.microns_per_pixel
    if mpp is None:
        return []
    scale = {"profile": PHYSDIM_PROFILE, "physicalScale": mpp[0] / 1000, "physicalUnits": "mm"}
    if version == 2:
        return [{"@context": PHYSDIM_CONTEXT, **scale}]
    return [{"id": f"{base}#physdim", "type": "PhysicalDimensions", **scale}]


def features(service: Service, version: Version) -> list[str]:
    names = list(FEATURES_V3 if version == 3 else FEATURES_V2)
    if service.cors:
        names.append("cors")
    if service.limits.upscaling:
        names.append("sizeUpscaling" if version == 3 else "sizeAboveFull")
    return sorted(names)


def _limits(limits: Limits) -> dict[str, int]:
    out = {}
    if limits.max_size is not None:
        out["maxWidth"] = out["maxHeight"] = limits.max_size
    if limits.max_area is not None:
        out["maxArea"] = limits.max_area
    return out


def info_v3(meta: ImageMeta, base: str, service: Service) -> dict[str, Any]:
    names = [f.suffix for f in service.formats]
    doc: dict[str, Any] = {
        "@context": CONTEXT[3], "id": base, "type": "ImageService3", "protocol": PROTOCOL,
        "profile": "level2", "width": meta.width, "height": meta.height, **_limits(service.limits),
        "sizes": sizes(meta, service.limits), "tiles": tiles(meta),
        "preferredFormats": [f for f in ("jpg", "png") if f in names],
        "extraFormats": [f for f in names if f not in LEVEL2_FORMATS],
        "extraQualities": list(QUALITIES), "extraFeatures": features(service, 3),
    }
    rights = rights_of(meta, service)
    if is_uri(rights):
        doc["rights"] = rights
    if physical := physical_dimensions(meta, base, 3):
        doc["service"] = physical
    return doc


def info_v2(meta: ImageMeta, base: str, service: Service) -> dict[str, Any]:
    profile = {"formats": [f.suffix for f in service.formats], "qualities": ["default", *QUALITIES],
               "supports": features(service, 2), **_limits(service.limits)}
    doc: dict[str, Any] = {
        "@context": CONTEXT[2], "@id": base, "protocol": PROTOCOL, "width": meta.width, "height": meta.height,
        "sizes": sizes(meta, service.limits), "tiles": tiles(meta), "profile": [PROFILE_URI[2], profile],
    }
    rights = rights_of(meta, service)
    if rights:
        doc["license" if is_uri(rights) else "attribution"] = rights
    if physical := physical_dimensions(meta, base, 2):
        doc["service"] = physical
    return doc


def render_info(meta: ImageMeta, base: str, service: Service, version: Version,
                extra: list[dict[str, Any]] | None = None) -> bytes:
    """The info.json body; `@context` first, as §5.1 asks. `extra` services (IIIF Auth: protocols/iiif/auth.py)
    are appended to `service`; in 3.0 the Auth 2.0 context then comes before the image context (Auth 2.0 §2.1)."""
    doc = info_v3(meta, base, service) if version == 3 else info_v2(meta, base, service)
    if extra:
        doc["service"] = [*doc.get("service", []), *extra]
        if version == 3:
            doc["@context"] = [AUTH2_CONTEXT, CONTEXT[3]]
    return json.dumps(doc, indent=2).encode()


def info_media_type(accept: str, version: Version) -> str:
    """JSON-LD content negotiation (3.0 §6.1, 2.1 §5): 3.0 answers JSON-LD with its profile unless
    the client asks for plain JSON only; 2.1 answers `application/json` unless JSON-LD is asked for."""
    wants_ld = "application/ld+json" in accept
    if version == 3:
        return "application/json" if "application/json" in accept and not wants_ld else MEDIA_TYPE_V3
    return "application/ld+json" if wants_ld else "application/json"
