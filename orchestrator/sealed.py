"""Sensitive fields, sealed with AES-GCM for the one participant that reads them.

A sealed field is stored and carried as `{"enc": key id, "ct": base64(nonce + ciphertext),
"mask": "************4242"}` in place of its value. The key id names a key of the reader's ring
(SAGA_DATA_KEYS); SAGA_DATA_KEY_IDS picks the one new fields are sealed with, and the older ones
stay readable, so keys rotate without rewriting history. The associated data binds the
ciphertext to its saga and field path: it cannot be moved to another saga or field.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orchestrator.saga.errors import NotReadyError, OrchestratorError

if TYPE_CHECKING:
    from orchestrator.settings import Settings

log = structlog.get_logger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
VISIBLE = 4
DEV_KEY_ID = "dev"
# Known to everyone: only for development, where SAGA_DEV_KEYS or SAGA_INSECURE_DEV is set.
_DEV_SECRET = b"saga orchestrator development data key: never for real card data"
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_FIELDS = frozenset({"enc", "ct", "mask"})


class SealedFieldError(OrchestratorError):
    """A sealed field cannot be opened."""


class NoDataKeyError(NotReadyError):
    """No data key is configured to seal this field."""


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRing:
    keys: Mapping[str, bytes] = dataclasses.field(default_factory=dict, repr=False)
    current: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # the key id that seals for a reader not named in `current` (development only)
    fallback: str | None = None

    @classmethod
    def development(cls) -> KeyRing:
        return cls({DEV_KEY_ID: hashlib.sha256(_DEV_SECRET).digest()}, {}, DEV_KEY_ID)

    def key_id_for(self, reader: str) -> str | None:
        key_id = self.current.get(reader, self.fallback)
        return key_id if key_id in self.keys else None

    def seal(self, value: str, reader: str, saga_id: str, path: str) -> dict[str, str]:
        key_id = self.key_id_for(reader)
        if key_id is None:
            raise NoDataKeyError(
                f"no data key to seal `{path}` for {reader}: set SAGA_DATA_KEYS and "
                f"SAGA_DATA_KEY_IDS ({reader}=<key id>)"
            )
        nonce = os.urandom(NONCE_BYTES)
        ct = AESGCM(self.keys[key_id]).encrypt(
            nonce, value.encode(), _associated(key_id, saga_id, path)
        )
        return {"enc": key_id, "ct": base64.b64encode(nonce + ct).decode(), "mask": mask(value)}

    def fingerprint(self, value: str, reader: str, path: str) -> str:
        """A keyed digest of a clear value, to tell two requests apart without keeping the
        value or a plain hash of it (a card number's plain hash is brute-forced in
        minutes). It changes when the reader's key rotates."""
        key_id = self.key_id_for(reader)
        if key_id is None:
            raise NoDataKeyError(f"no data key to fingerprint `{path}` for {reader}")
        mac_key = hmac.new(self.keys[key_id], b"fingerprint/v1", hashlib.sha256).digest()
        return hmac.new(mac_key, f"{path}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def open(self, sealed: Any, saga_id: str, path: str) -> str:
        """The clear value; SealedFieldError for anything that is not a field sealed with a
        key of this ring for this saga and path."""
        if not is_sealed(sealed):
            raise SealedFieldError(f"`{path}` is not a sealed field")
        key = self.keys.get(sealed["enc"])
        if key is None:
            raise SealedFieldError(f"`{path}` is sealed with a key this process does not hold")
        try:
            raw = base64.b64decode(sealed["ct"], validate=True)
            if len(raw) < NONCE_BYTES + TAG_BYTES:
                raise ValueError("too short")
            clear = AESGCM(key).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated(sealed["enc"], saga_id, path)
            )
            return clear.decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SealedFieldError(f"`{path}` does not open for this saga") from None


def _associated(key_id: str, saga_id: str, path: str) -> bytes:
    return f"saga-field/v1\x00{key_id}\x00{saga_id}\x00{path}".encode()


def mask(value: str) -> str:
    shown = value[-VISIBLE:] if len(value) > 2 * VISIBLE else ""
    return "*" * (len(value) - len(shown)) + shown


def is_sealed(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and set(value) == _FIELDS
        and all(isinstance(v, str) for v in value.values())
    )


def masked(value: Any) -> Any:
    """`value` with every sealed field replaced by its mask: what a saga's viewers see."""
    if is_sealed(value):
        return value["mask"]
    if isinstance(value, Mapping):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def parse_keys(text: str) -> dict[str, bytes]:
    """`<key id>:<base64 of 32 bytes>,...`; errors name the key id, never the key."""
    keys: dict[str, bytes] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        key_id, sep, encoded = entry.partition(":")
        if not sep or not is_key_id(key_id):
            raise ValueError("each entry must be <key id>:<base64 key>, key ids [A-Za-z0-9_.-]")
        if key_id in keys:
            raise ValueError(f"the key id {key_id} is given twice")
        keys[key_id] = decode_key(key_id, encoded)
    return keys


def is_key_id(text: str) -> bool:
    return _KEY_ID.match(text) is not None


def decode_key(key_id: str, encoded: str) -> bytes:
    """A key of KEY_BYTES from its base64; the error names the key id, never the key."""
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error:
        raise ValueError(f"the key of {key_id} is not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key of {key_id} is {len(key)} bytes, not {KEY_BYTES}")
    return key


def parse_key_ids(text: str) -> dict[str, str]:
    """`<participant>=<key id>,...`"""
    current: dict[str, str] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        reader, sep, key_id = (part.strip() for part in entry.partition("="))
        if not sep or not reader or not _KEY_ID.match(key_id):
            raise ValueError("each entry must be <participant>=<key id>")
        current[reader] = key_id
    return current


def key_ring(settings: Settings) -> KeyRing:
    keys = parse_keys(settings.data_keys)
    current = parse_key_ids(settings.data_key_ids)
    if keys:
        return KeyRing(keys, current)
    if settings.dev_keys or settings.insecure_dev:
        log.warning(
            "data_keys_development",
            detail="no SAGA_DATA_KEYS: sensitive fields are sealed with the public "
            "development key; never use this with real card data",
        )
        return KeyRing.development()
    return KeyRing()
