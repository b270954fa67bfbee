"""The login page's user file: `user:hash` lines, as Apache's `htpasswd -B` writes them (bcrypt).

Blank lines and lines starting with `#` are skipped. Only bcrypt hashes (`$2y$`, `$2b$`, `$2a$`) are accepted:
the other htpasswd schemes (`{SHA}`, `$apr1$` MD5, crypt, plain text) are too weak for a password file on a
public server, and a file holding one is refused when the server starts, naming the line. `tileserver passwd
FILE USER` adds or replaces a user. The file is read once at start (a changed file takes a restart, as with
the policy); a check runs bcrypt in a pool thread (about 0.2 s at the default cost: it is meant to be slow).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import bcrypt

SCHEMES = (b"$2y$", b"$2b$", b"$2a$")
MAX_NAME = 256
MAX_PASSWORD = 72  # bcrypt reads no further: a longer password is refused rather than silently cut
FILE_LIMIT = 4 * 1024 * 1024


@functools.cache
def _dummy() -> bytes:
    """A hash compared against when the user is unknown, so that a wrong name takes as long as a wrong password
    (made on first use: every app imports this module)."""
    return bcrypt.hashpw(b"not a password", bcrypt.gensalt(rounds=10))


class Users:
    def __init__(self, hashes: Mapping[str, bytes]) -> None:
        self.hashes = dict(hashes)

    def __repr__(self) -> str:  # never the hashes
        return f"Users({len(self.hashes)})"

    @classmethod
    def parse(cls, text: str, where: str = "the user file") -> Users:
        hashes: dict[str, bytes] = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, digest = line.partition(":")
            if not sep or not name or len(name) > MAX_NAME:
                raise ValueError(f"{where}, line {number}: not `user:hash`")
            raw = digest.strip().encode()
            if not raw.startswith(SCHEMES):
                raise ValueError(f"{where}, line {number}: only bcrypt hashes (htpasswd -B) are accepted")
            hashes[name] = raw.replace(b"$2y$", b"$2b$", 1)
        return cls(hashes)

    @classmethod
    def load(cls, path: str | Path) -> Users:
        p = Path(path)
        if p.stat().st_size > FILE_LIMIT:
            raise ValueError(f"{p.name}: a user file is at most {FILE_LIMIT} bytes")
        return cls.parse(p.read_text("utf-8"), p.name)

    def check(self, name: str, password: str) -> bool:
        """Whether `password` is `name`'s (blocking: bcrypt; call it in a pool thread)."""
        secret = password.encode()
        if not secret or len(secret) > MAX_PASSWORD or len(name) > MAX_NAME:
            return False
        digest = self.hashes.get(name)
        try:
            ok = bcrypt.checkpw(secret, digest if digest is not None else _dummy())
        except ValueError:  # a malformed hash in the file
            return False
        return ok and digest is not None


def hash_line(name: str, password: str, rounds: int = 12) -> str:
    """A user file line for `name` (`tileserver passwd`)."""
    if not name or ":" in name or len(name) > MAX_NAME or any(c.isspace() for c in name):
        raise ValueError("a user name is 1-256 characters, without `:` or spaces")
    secret = password.encode()
    if not secret or len(secret) > MAX_PASSWORD:
        raise ValueError(f"a password is 1-{MAX_PASSWORD} bytes")
    return f"{name}:{bcrypt.hashpw(secret, bcrypt.gensalt(rounds=rounds)).decode()}"
