"""API keys: created once, stored only as salted hashes with a scope.

A key reads ``astra_<key id>_<secret>``; the setting ASTRA_API_KEYS holds one entry per
key, ``<scope>:<key id>:<salt>:<sha256(salt + secret)>``, comma-separated. The secret is
32 random bytes, so a fast salted hash is as safe as a slow one (nothing to guess), and
checking a request costs microseconds. Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

Scope = Literal["ingest", "read"]
SCOPES: tuple[Scope, ...] = ("ingest", "read")
PREFIX = "astra"


class KeyConfigError(ValueError):
    """ASTRA_API_KEYS holds an entry that is not one `astra api-key create` printed."""


@dataclass(frozen=True)
class KeyEntry:
    scope: Scope
    key_id: str
    salt: str
    digest: str

    def line(self) -> str:
        return f"{self.scope}:{self.key_id}:{self.salt}:{self.digest}"


@dataclass(frozen=True)
class Caller:
    """Who made a request: the key's id (never the key) and its scope."""

    key_id: str
    scope: Scope


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_key(scope: Scope) -> tuple[str, KeyEntry]:
    """A new key (shown once) and the entry to add to ASTRA_API_KEYS."""
    if scope not in SCOPES:
        raise KeyConfigError(f"unknown scope {scope!r}: one of {', '.join(SCOPES)}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return f"{PREFIX}_{key_id}_{secret}", KeyEntry(scope, key_id, salt, _digest(salt, secret))


def parse_entries(setting: str) -> dict[str, KeyEntry]:
    """The entries of ASTRA_API_KEYS by key id; raises KeyConfigError naming a bad one."""
    entries: dict[str, KeyEntry] = {}
    for number, text in enumerate((t.strip() for t in setting.split(",")), start=1):
        if not text:
            continue
        parts = text.split(":")
        if len(parts) != 4 or parts[0] not in SCOPES:
            raise KeyConfigError(
                f"ASTRA_API_KEYS entry {number} is not scope:key_id:salt:hash "
                f"(scope one of {', '.join(SCOPES)}); `astra api-key create` prints one"
            )
        scope, key_id, salt, digest = parts
        try:
            bytes.fromhex(salt)
            bytes.fromhex(digest)
        except ValueError:
            raise KeyConfigError(
                f"ASTRA_API_KEYS entry {number}: salt and hash must be hexadecimal"
            ) from None
        entries[key_id] = KeyEntry(scope, key_id, salt, digest)  # type: ignore[arg-type]
    return entries


def check_key(entries: dict[str, KeyEntry], key: str) -> Caller | None:
    """The caller a key belongs to, or None for a key that is not configured."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX:
        return None
    entry = entries.get(parts[1])
    if entry is None:
        return None
    if not hmac.compare_digest(_digest(entry.salt, parts[2]), entry.digest):
        return None
    return Caller(entry.key_id, entry.scope)
