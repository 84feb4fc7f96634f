"""Signed envelopes: every command, reply and event carries `signature: <key id>:<hex>`, the
HMAC-SHA256 of the record's value bytes under a key of its sender.

Each key has an owner, the one sender that signs with it: `orchestrator`, a participant's
name, or `orchestrator>payment` (the orchestrator's key for the commands it sends to payment
alone). A participant given only its own key and the orchestrator's key scoped to it can
verify its commands but cannot sign a command for another participant, which one shared
orchestrator key would let it do. A sender signs with the first key listed for it, so keys
rotate by adding the new key to every verifier, then listing it first at the sender, then
removing the old one once no message signed with it is left on a topic.

HMAC keys are shared secrets: whoever can verify a sender's messages can also sign them. Hence
per-sender (and per-recipient) keys, and each process holding only the keys it needs.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import structlog

from orchestrator import metrics, sealed
from orchestrator.saga import messages
from orchestrator.saga.errors import NotReadyError, OrchestratorError

if TYPE_CHECKING:
    from orchestrator.settings import Settings

log = structlog.get_logger(__name__)

HEADER = "signature"
ORCHESTRATOR = "orchestrator"
DEV_KEY_ID = "dev"
# Known to everyone: only for development, where SAGA_DEV_KEYS or SAGA_INSECURE_DEV is set.
_DEV_SECRET = b"saga orchestrator development signing key: never in production"
_OWNER = re.compile(r"^[A-Za-z0-9_-]{1,64}(>[A-Za-z0-9_-]{1,64})?$")
_HEX_DIGEST = 64


class UnauthenticatedMessageError(OrchestratorError):
    """The message is not signed by the sender it must come from."""


class NoSigningKeyError(NotReadyError):
    """This process holds no key to sign as this sender."""


@dataclasses.dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    owner: str
    secret: bytes = dataclasses.field(repr=False)


def scoped(sender: str, recipient: str) -> str:
    """The owner name of a sender's key for one recipient: `orchestrator>payment`."""
    return f"{sender}>{recipient}"


@dataclasses.dataclass(frozen=True, slots=True)
class MessageKeys:
    """The signing keys a process holds, by key id; `development` derives a public key for
    any owner under the key id `dev` instead."""

    keys: Mapping[str, SigningKey] = dataclasses.field(default_factory=dict)
    development: bool = False
    require: bool = True

    def signing_key(self, sender: str, recipient: str | None = None) -> SigningKey | None:
        """The key `sender` signs with: its key for `recipient` when it has one, else its
        own; the first listed of each."""
        for owner in ([scoped(sender, recipient)] if recipient else []) + [sender]:
            for key in self.keys.values():
                if key.owner == owner:
                    return key
        if self.development:
            return _dev_key(sender)
        return None

    def sign(self, value: bytes, sender: str, recipient: str | None = None) -> tuple[str, bytes]:
        """The signature header of a record's value."""
        key = self.signing_key(sender, recipient)
        if key is None:
            where = f" (or {scoped(sender, recipient)})" if recipient else ""
            raise NoSigningKeyError(
                f"no key to sign as {sender}{where}: add one to SAGA_SIGNING_KEYS"
            )
        digest = hmac.new(key.secret, value, hashlib.sha256).hexdigest()
        return HEADER, f"{key.key_id}:{digest}".encode()

    def signer(self, sender: str, recipient: str | None = None) -> Sign:
        """`sign` for one sender; NoSigningKeyError at once when there is no key."""
        key = self.signing_key(sender, recipient)
        if key is None:
            self.sign(b"", sender, recipient)  # raises, saying which key is missing
        return lambda value: self.sign(value, sender, recipient)

    def holds_any(self, owners: Sequence[str]) -> bool:
        return self.development or any(k.owner in owners for k in self.keys.values())

    def check(
        self, value: bytes, headers: Sequence[tuple[str, bytes]], owners: Sequence[str]
    ) -> None:
        """Pass when `value` carries a valid signature by a key of one of `owners`; else
        UnauthenticatedMessageError saying what is wrong (never a key or a digest)."""
        signatures = [v for k, v in headers if k == HEADER]
        if not signatures:
            if self.require:
                raise UnauthenticatedMessageError("the message is not signed")
            metrics.UNSIGNED_ACCEPTED.inc()
            return
        if len(signatures) > 1:
            raise UnauthenticatedMessageError("the message carries more than one signature")
        key_id, digest = _parse(signatures[0])
        for key in self._verifying_keys(key_id, owners):
            if hmac.compare_digest(hmac.new(key.secret, value, hashlib.sha256).digest(), digest):
                return
        raise UnauthenticatedMessageError(
            f"the signature by key {key_id} does not match the message: forged or altered"
        )

    def _verifying_keys(self, key_id: str, owners: Sequence[str]) -> list[SigningKey]:
        if self.development and key_id == DEV_KEY_ID:
            return [_dev_key(owner) for owner in owners]
        key = self.keys.get(key_id)
        if key is None:
            raise UnauthenticatedMessageError(
                f"signed with key {key_id}, which this process does not hold"
            )
        if key.owner not in owners:
            raise UnauthenticatedMessageError(
                f"signed with a key of {key.owner}; it must come from {' or '.join(owners)}"
            )
        return [key]


def _parse(header: bytes) -> tuple[str, bytes]:
    key_id, sep, digest = header.decode("ascii", "replace").partition(":")
    if not sep or not sealed.is_key_id(key_id) or len(digest) != _HEX_DIGEST:
        raise UnauthenticatedMessageError(
            "the signature header is not <key id>:<64 hex digits of HMAC-SHA256>"
        )
    try:
        return key_id, binascii.unhexlify(digest)
    except binascii.Error:
        raise UnauthenticatedMessageError("the signature is not hexadecimal") from None


def _dev_key(owner: str) -> SigningKey:
    secret = hmac.new(_DEV_SECRET, f"signing/{owner}".encode(), hashlib.sha256).digest()
    return SigningKey(DEV_KEY_ID, owner, secret)


def parse_keys(text: str) -> dict[str, SigningKey]:
    """`<key id>=<owner>:<base64 of 32 bytes>,...`, in order; errors name the key id, never
    the key."""
    keys: dict[str, SigningKey] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        key_id, sep, rest = entry.partition("=")
        owner, sep2, encoded = rest.partition(":")
        key_id, owner = key_id.strip(), owner.strip()
        if not (sep and sep2) or not sealed.is_key_id(key_id) or not _OWNER.match(owner):
            raise ValueError(
                "each entry must be <key id>=<owner>:<base64 key>, key ids [A-Za-z0-9_.-], "
                "owners a sender's name or <sender>><recipient>"
            )
        if key_id == DEV_KEY_ID:
            raise ValueError(f"the key id {DEV_KEY_ID} is kept for the development keys")
        if key_id in keys:
            raise ValueError(f"the key id {key_id} is given twice")
        keys[key_id] = SigningKey(key_id, owner, sealed.decode_key(key_id, encoded))
    return keys


def message_keys(settings: Settings) -> MessageKeys:
    keys = parse_keys(settings.signing_keys)
    development = not keys and (settings.dev_keys or settings.insecure_dev)
    if development:
        log.warning(
            "signing_keys_development",
            detail="no SAGA_SIGNING_KEYS: messages are signed with public development keys, "
            "which anyone can forge; never in production",
        )
    return MessageKeys(keys, development, settings.require_signatures)


Sign = Callable[[bytes], tuple[str, bytes]]
Verify = Callable[[bytes, Sequence[tuple[str, bytes]], messages.Message], None]


def commands_for(keys: MessageKeys, participant: str) -> Verify:
    """What a participant checks of a command: it comes from the orchestrator, signed with
    the orchestrator's key (its own, or the one scoped to this participant)."""
    owners = [scoped(ORCHESTRATOR, participant), ORCHESTRATOR]

    def verify(value: bytes, headers: Sequence[tuple[str, bytes]], m: messages.Message) -> None:
        if m.source != ORCHESTRATOR:
            raise UnauthenticatedMessageError(
                f"a {m.kind.value} from {m.source!r}: {participant} takes commands only from "
                f"the {ORCHESTRATOR}"
            )
        keys.check(value, headers, owners)

    return verify


def replies(keys: MessageKeys) -> Verify:
    """What the worker checks of a reply: it is signed by the participant named as its
    source. That the source owns the reply's step is the saga's to check (service)."""

    def verify(value: bytes, headers: Sequence[tuple[str, bytes]], m: messages.Message) -> None:
        if m.source == ORCHESTRATOR or ">" in m.source:
            raise UnauthenticatedMessageError(f"a reply cannot come from {m.source!r}")
        keys.check(value, headers, [m.source])

    return verify
