"""Access tiers and the policy that assigns them.

A tier is what a viewer may see of an image: `full`; `capped` (a largest width, height and/or area: the image is
presented as if its full resolution were its largest level within the cap); `watermarked` (full or capped, with a
watermark image and/or a text laid over every output); `redacted` (rectangles painted over); `denied`. One `Tier`
value holds them all (a cap, overlays, or `denied`), so a tier may be capped and watermarked at once.

Each image gets two tiers (`Access`): one for anonymous viewers, one for authorised ones. They come from, the
first that answers:

1. the hook (`access_hook`, `module:function`, called with the identifier and the file's location in a pool
   thread; it returns None for no opinion, or a rule's mapping: `{"anonymous": ..., "authorised": ...}`);
2. a sidecar file next to a local image: `<file>.access.json`, holding such a mapping (`access_sidecars`);
3. the first rule of the policy (`access_policy`, JSON inline or a file's path) whose `match` glob (`*` within a
   folder, `**` across folders, `?` one character) or `folder` matches the identifier or the file's real path
   under the root (so an alias of a file cannot escape its rule);
4. the policy's `default` (everything `full` when it has none).

A policy:

    {"tiers": {"preview": {"max_width": 1024, "max_height": 1024},
               "stamped": {"max_area": 4000000, "watermark": {"location": "/srv/stamp.png", "opacity": 0.4}}},
     "default": {"anonymous": "preview", "authorised": "full"},
     "rules": [{"folder": "private", "anonymous": "denied"},
               {"match": "maps/**/*.tif", "anonymous": "stamped"},
               {"match": "letters/*.jp2", "anonymous": {"redactions": [[0, 0, 400, 200]]}}]}

A side a rule leaves out comes from the default. A tier is a name (`full`, `denied` or one of `tiers`) or an
object with `max_width`, `max_height`, `max_area`, `watermark` (`location`, `opacity`, `probability`, `scale`,
`position`, `blend`), `text` (`text`, `position`, `opacity`, `size`, `colour`), `redactions` (`[x, y, w, h]` or objects
with `x`, `y`, `width`, `height`, `colour`, in full-resolution pixels) and `denied`. Unknown keys are errors.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..models import Overlays, Redaction, TextOverlay, Watermark
from ..sources import vfs

log = logging.getLogger("tileserver")

SIDECAR_SUFFIX = ".access.json"
SIDECAR_LIMIT = 64 * 1024  # bytes of a sidecar file read
CLASSES = ("anonymous", "authorised")
TIER_KEYS = frozenset({"max_width", "max_height", "max_area", "watermark", "text", "redactions", "denied"})
RULE_KEYS = frozenset({"match", "folder", "anonymous", "authorised"})
LOOKUPS = 8192  # remembered (identifier, location) -> Access


@dataclass(frozen=True)
class Tier:
    """What one viewer may see of one image. `key` names the tier in cache keys and ETags."""

    name: str
    denied: bool = False
    max_width: int | None = None
    max_height: int | None = None
    max_area: int | None = None
    overlays: Overlays | None = None
    key: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        text = repr((self.denied, self.max_width, self.max_height, self.max_area, self.overlays))
        object.__setattr__(self, "key", hashlib.blake2b(text.encode(), digest_size=8).hexdigest())

    @property
    def capped(self) -> bool:
        return self.max_width is not None or self.max_height is not None or self.max_area is not None

    @property
    def full(self) -> bool:
        """Everything, as with no policy: requests are served untouched (pass-through stays pass-through)."""
        return not self.denied and not self.capped and not self.overlays

    @property
    def kind(self) -> str:
        """`full`, `capped`, `watermarked`, `redacted` or `denied` (the most telling, for logs and docs)."""
        if self.denied:
            return "denied"
        if self.overlays and self.overlays.redactions:
            return "redacted"
        if self.overlays:
            return "watermarked"
        return "capped" if self.capped else "full"

    def fits(self, width: int, height: int) -> bool:
        """Whether a `width` x `height` image is within the cap."""
        return ((self.max_width is None or width <= self.max_width)
                and (self.max_height is None or height <= self.max_height)
                and (self.max_area is None or width * height <= self.max_area))


FULL = Tier("full")
DENIED = Tier("denied", denied=True)


@dataclass(frozen=True)
class Access:
    """An image's two tiers."""

    anonymous: Tier = FULL
    authorised: Tier = FULL

    def tier(self, authorised: bool) -> Tier:
        return self.authorised if authorised else self.anonymous

    @property
    def restricted(self) -> bool:
        """Whether a response may differ by viewer (then it is private and varies by the credentials)."""
        return not (self.anonymous.full and self.authorised.full)


OPEN = Access()
CLOSED = Access(DENIED, DENIED)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `**/` any folders (none too), `**` anything, `*` within one folder, `?` one
    character of a name; the rest literal."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def normalise(name: str) -> str:
    """An identifier as rules see it: `/`-separated, no leading `/`, `.` or doubled separators."""
    name = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    return "" if name == "." else name


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    anonymous: Tier | None
    authorised: Tier | None

    def matches(self, names: tuple[str, ...]) -> bool:
        return any(self.pattern.fullmatch(n) for n in names)


def _number(spec: Mapping[str, Any], key: str, kind: type, low: float, high: float | None = None) -> Any:
    v = spec.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
        raise ValueError(f"access tier: {key} must be a number")
    if v < low or (high is not None and v > high):
        raise ValueError(f"access tier: {key} {v} is out of range")
    return kind(v)


def _colour(v: Any) -> tuple[int, int, int]:
    if (not isinstance(v, (list, tuple)) or len(v) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in v)):
        raise ValueError("access tier: a colour is [r, g, b], each 0-255")
    return (v[0], v[1], v[2])


def _checked(spec: Any, allowed: set[str], what: str) -> Mapping[str, Any]:
    if not isinstance(spec, Mapping):
        raise ValueError(f"access tier: {what} must be an object")
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"access tier: unknown {what} keys {sorted(unknown)}")
    return spec


def _watermark(spec: Any) -> Watermark:
    spec = _checked(spec, {"location", "opacity", "probability", "scale", "position", "blend"}, "watermark")
    location = spec.get("location")
    if not isinstance(location, str) or not location:
        raise ValueError("access tier: a watermark needs a location")
    kw = {k: _number(spec, k, float, 0.0, 1.0) for k in ("opacity", "probability")}
    kw["scale"] = _number(spec, "scale", float, 0.001, 16.0)
    position, blend = spec.get("position", "random"), spec.get("blend", "over")
    if not isinstance(position, str) or not isinstance(blend, str):
        raise ValueError("access tier: a watermark's position and blend are words")
    return Watermark(location, position=position, blend=blend, **{k: v for k, v in kw.items() if v is not None})


def _text(spec: Any) -> TextOverlay:
    spec = _checked(spec, {"text", "position", "opacity", "size", "colour"}, "text")
    text = spec.get("text")
    if not isinstance(text, str) or not text:
        raise ValueError("access tier: a text overlay needs a text")
    kw: dict[str, Any] = {"opacity": _number(spec, "opacity", float, 0.0, 1.0),
                          "size": _number(spec, "size", int, 1, 4096)}
    if "position" in spec:
        kw["position"] = str(spec["position"])
    if "colour" in spec:
        kw["colour"] = _colour(spec["colour"])
    return TextOverlay(text, **{k: v for k, v in kw.items() if v is not None})


def _redaction(spec: Any) -> Redaction:
    if isinstance(spec, (list, tuple)):
        spec = dict(zip(("x", "y", "width", "height"), spec, strict=False)) if len(spec) == 4 else None
    spec = _checked(spec, {"x", "y", "width", "height", "colour"}, "redaction")
    x, y = _number(spec, "x", int, 0), _number(spec, "y", int, 0)
    w, h = _number(spec, "width", int, 1), _number(spec, "height", int, 1)
    if None in (x, y, w, h):
        raise ValueError("access tier: a redaction is [x, y, width, height]")
    return Redaction(x, y, w, h, _colour(spec["colour"]) if "colour" in spec else (0, 0, 0))


def parse_tier(spec: Any, named: Mapping[str, Tier], name: str = "") -> Tier:
    """A tier from its policy form: a name, or an object (see the module's doc)."""
    if isinstance(spec, str):
        if spec in named:
            return named[spec]
        raise ValueError(f"access tier {spec!r} is not defined (full, denied or one of `tiers`)")
    spec = _checked(spec, set(TIER_KEYS), "tier")
    if spec.get("denied", False) is True:
        return Tier(name or "denied", denied=True)
    if "denied" in spec and spec["denied"] is not False:
        raise ValueError("access tier: denied is true or false")
    caps = {k: _number(spec, k, int, 1) for k in ("max_width", "max_height", "max_area")}
    redactions = spec.get("redactions", [])
    if not isinstance(redactions, list):
        raise ValueError("access tier: redactions is a list")
    overlays = Overlays(_watermark(spec["watermark"]) if "watermark" in spec else None,
                        _text(spec["text"]) if "text" in spec else None,
                        tuple(_redaction(r) for r in redactions))
    tier = Tier(name, overlays=overlays if overlays else None, **caps)
    return tier if name else replace_name(tier)


def replace_name(tier: Tier) -> Tier:
    return Tier(tier.kind, tier.denied, tier.max_width, tier.max_height, tier.max_area, tier.overlays)


Hook = Callable[[str, str], object]


class Policy:
    """The rules, the sidecars and the hook; `lookup` (in a pool thread) finds an image's `Access`, `cached` the
    one found within the last `ttl` seconds (sidecars and the hook's answers are re-read after that)."""

    def __init__(self, doc: Mapping[str, Any], root: str | None = None, sidecars: bool = False,
                 hook: Hook | None = None, ttl: float = 1.0) -> None:
        doc = _checked(doc, {"tiers", "default", "rules"}, "policy")
        self.named: dict[str, Tier] = {"full": FULL, "denied": DENIED}
        tiers = doc.get("tiers", {})
        if not isinstance(tiers, Mapping):
            raise ValueError("access policy: tiers is an object")
        for name, spec in tiers.items():
            if name in ("full", "denied"):
                raise ValueError(f"access policy: tier name {name!r} is reserved")
            self.named[name] = parse_tier(spec, self.named, name)
        self.default = self._access(doc.get("default", {}), OPEN)
        rules = doc.get("rules", [])
        if not isinstance(rules, list):
            raise ValueError("access policy: rules is a list")
        self.rules = tuple(self._rule(r) for r in rules)
        self.root = root
        self.sidecars = sidecars
        self.hook = hook
        self.ttl = max(ttl, 0.0)
        self._found: dict[tuple[str, str], tuple[Access, float]] = {}

    def tiers(self) -> tuple[Tier, ...]:
        """Every tier the policy names or holds (the overlays of each are checked when the server starts)."""
        rules = [t for r in self.rules for t in (r.anonymous, r.authorised) if t is not None]
        return (*self.named.values(), self.default.anonymous, self.default.authorised, *rules)

    def _access(self, spec: Any, base: Access) -> Access:
        spec = _checked(spec, set(CLASSES), "access")
        return Access(parse_tier(spec["anonymous"], self.named) if "anonymous" in spec else base.anonymous,
                      parse_tier(spec["authorised"], self.named) if "authorised" in spec else base.authorised)

    def _rule(self, spec: Any) -> Rule:
        spec = _checked(spec, set(RULE_KEYS), "rule")
        if ("match" in spec) == ("folder" in spec):
            raise ValueError("access policy: a rule has one of match or folder")
        if "match" in spec:
            if not isinstance(spec["match"], str) or not spec["match"]:
                raise ValueError("access policy: match is a glob")
            pattern = glob_regex(normalise(spec["match"]))
        else:
            if not isinstance(spec["folder"], str):
                raise ValueError("access policy: folder is a path")
            folder = normalise(spec["folder"])
            pattern = re.compile(re.escape(folder + "/") + ".*" if folder else ".*", re.DOTALL)
        tiers = {k: parse_tier(spec[k], self.named) for k in CLASSES if k in spec}
        return Rule(pattern, tiers.get("anonymous"), tiers.get("authorised"))

    @classmethod
    def from_settings(cls, policy: str | None, root: str | None, sidecars: bool, hook: str | None,
                      ttl: float) -> Policy | None:
        """The configured policy, or None when nothing restricts access (no policy, sidecars or hook)."""
        if policy is None and not sidecars and hook is None:
            return None
        doc: Any = {}
        if policy is not None:
            text = policy if policy.lstrip().startswith("{") else _read(policy)
            try:
                doc = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"access_policy is not JSON: {exc}") from None
        return cls(doc, None if root is None else os.path.realpath(root), sidecars,
                   None if hook is None else load_hook(hook), ttl)

    def cached(self, ident: str, location: str) -> Access | None:
        found = self._found.get((ident, location))
        if found is None or time.monotonic() - found[1] >= self.ttl:
            return None
        return found[0]

    def peek(self, ident: str, location: str) -> Access | None:
        """The `Access` last found for the image, however long ago (the headers of a response whose request has
        just looked it up)."""
        found = self._found.get((ident, location))
        return None if found is None else found[0]

    def lookup(self, ident: str, location: str) -> Access:
        """The `Access` of image `ident` stored at `location` (a path or a store URL). Blocking: a sidecar is read
        and the hook called here."""
        access = self._lookup(ident, location)
        if len(self._found) >= LOOKUPS:
            self._found.clear()
        self._found[(ident, location)] = (access, time.monotonic())
        return access

    def _lookup(self, ident: str, location: str) -> Access:
        if self.hook is not None:
            answer = self.hook(ident, location)
            if answer is not None:
                try:
                    return self._access(answer, self.default)
                except ValueError:
                    log.error("access_hook gave no valid access for an image; it is denied")
                    return CLOSED
        if self.sidecars and location and not vfs.remote(location):
            side = _sidecar(location)
            if side is not None:
                try:
                    return self._access(side, self.default)
                except ValueError:
                    return CLOSED  # a sidecar naming an unknown tier: fail closed
        return self.by_rules(ident, location)

    def by_rules(self, ident: str, location: str = "") -> Access:
        names = [normalise(ident)]
        if self.root is not None and location and not vfs.remote(location):
            rel = os.path.relpath(location, self.root)
            if not rel.startswith(".."):
                names.append(rel.replace(os.sep, "/"))
        for rule in self.rules:
            if rule.matches(tuple(names)):
                return Access(rule.anonymous or self.default.anonymous, rule.authorised or self.default.authorised)
        return self.default


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ValueError(f"access_policy: cannot read the policy file ({exc.strerror})") from None


def _sidecar(location: str) -> Any:
    """The mapping in `<location>.access.json`, None when there is none. A broken sidecar denies the image to
    everyone (failing closed) rather than serving what it meant to restrict."""
    try:
        with open(location + SIDECAR_SUFFIX, "rb") as fh:
            raw = fh.read(SIDECAR_LIMIT + 1)
    except FileNotFoundError:
        return None
    except OSError:
        return {"anonymous": "denied", "authorised": "denied"}  # unreadable: fail closed
    try:
        doc = json.loads(raw) if len(raw) <= SIDECAR_LIMIT else None
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) and set(doc) <= set(CLASSES) else {"anonymous": "denied",
                                                                            "authorised": "denied"}


def load_hook(spec: str) -> Hook:
    """The function `module:function` names (at start: a wrong name is a configuration error)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"access_hook {spec!r} is not module:function")
    try:
        fn = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        raise ValueError(f"access_hook {spec!r}: {exc}") from None
    if not callable(fn):
        raise ValueError(f"access_hook {spec!r}: no function {name} in {module}")
    return fn  # type: ignore[no-any-return]
