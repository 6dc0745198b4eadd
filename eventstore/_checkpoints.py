"""Signed stream heads: pure logic (no I/O but reading key files).

A *checkpoint* is a statement signed with Ed25519 by the writer: "after
checkpoint ``sequence - 1`` (whose digest is ``previous``), these streams
moved to these heads, and the heads of every stream of the log hash to
``root``". Its canonical bytes are RFC 8785 JSON (``canonical_json``) of::

    {"format": "statelog-checkpoint", "version": 1,
     "sequence": 7,                 # 1, 2, 3 ... dense, its own numbering
     "previous": "<hex>",           # digest() of checkpoint 6, "" for the first
     "position": 1234,              # the log position it covers (SQLite: max position)
     "created_at": "2026-...Z",
     "key_id": "<hex>",             # key_id() of the public key that signs it
     "streams": 42,                 # how many streams the root covers
     "root": "<hex>",               # merkle_root() of every stream's head
     "changed": [[partition_key, app_id, last_sequence_id, last_hash], ...]}

``changed`` holds the heads that moved since the previous checkpoint, sorted;
replaying ``changed`` from checkpoint 1 gives the head of every stream, and the
latest checkpoint's ``root`` must equal the Merkle root of that set. The
digest of a checkpoint is SHA-256 of its canonical bytes; the signature is
Ed25519 over the same bytes.

The Merkle tree (RFC 6962 shape): leaves are the heads sorted by
``(partition_key, app_id)`` in code point order; a leaf hashes
``0x00 || canonical_json([partition_key, app_id, last_sequence_id, last_hash])``,
a node ``0x01 || left || right`` (raw 32-byte digests), a tree of ``n`` leaves
splits at the largest power of two below ``n``; the root of no leaves is
SHA-256 of nothing.

What this buys (see docs/operations.md): without the private key nobody can
write a checkpoint, so deleting a stream's tail, a whole stream, or rewriting
a stream with recomputed hashes breaks the heads of the latest checkpoint; an
old checkpoint copied over a newer one breaks ``sequence``/``previous``.
Replacing the whole file with an older copy (a rollback to an older
checkpoint with the events cut to match) is consistent in itself: only a
checkpoint held elsewhere (the Kafka anchor, ``verify --expect-checkpoint``)
can tell.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from ._canonical import canonical_json
from ._errors import CheckpointError, ConfigError, KeyFileError, KeyMismatchError

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "Head",
    "KeyFileError",
    "KeyMismatchError",
    "SignedCheckpoint",
    "digest",
    "generate_key_files",
    "key_id",
    "load_private_key",
    "load_public_key",
    "make_checkpoint",
    "merkle_root",
    "replay",
    "sign",
    "snapshot_mac_key",
    "verify_signature",
]

CHECKPOINT_FORMAT = "statelog-checkpoint"
CHECKPOINT_VERSION = 1

#: (partition_key, app_id, last_sequence_id, last_hash)
Head = tuple[str, str, int, str]


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The signed content of one checkpoint (see the module doc)."""

    sequence: int
    previous: str
    position: int
    created_at: str
    key_id: str
    streams: int
    root: str
    changed: list[tuple[str, str, int, str]]

    def to_bytes(self) -> bytes:
        """The canonical bytes that are signed and digested."""
        return canonical_json(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "sequence": self.sequence,
                "previous": self.previous,
                "position": self.position,
                "created_at": self.created_at,
                "key_id": self.key_id,
                "streams": self.streams,
                "root": self.root,
                "changed": [list(head) for head in self.changed],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Parse canonical bytes; anything else raises ``CheckpointError``."""
        try:
            raw = msgspec.json.decode(data)
            if raw.get("format") != CHECKPOINT_FORMAT or raw.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"not a {CHECKPOINT_FORMAT} v{CHECKPOINT_VERSION}")
            changed = [(str(h[0]), str(h[1]), int(h[2]), str(h[3])) for h in raw["changed"]]
            checkpoint = cls(
                sequence=int(raw["sequence"]),
                previous=str(raw["previous"]),
                position=int(raw["position"]),
                created_at=str(raw["created_at"]),
                key_id=str(raw["key_id"]),
                streams=int(raw["streams"]),
                root=str(raw["root"]),
                changed=changed,
            )
        except (msgspec.DecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CheckpointError(-1, f"malformed checkpoint: {exc}") from exc
        if checkpoint.to_bytes() != data:
            raise CheckpointError(checkpoint.sequence, "bytes are not in canonical form")
        return checkpoint


class SignedCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A checkpoint's canonical bytes and their Ed25519 signature, as stored and sent."""

    body: bytes
    signature: bytes


def digest(body: bytes) -> str:
    """The hex SHA-256 of a checkpoint's canonical bytes (the next one's ``previous``)."""
    return hashlib.sha256(body).hexdigest()


def _leaf(head: Head) -> bytes:
    return hashlib.sha256(b"\x00" + canonical_json(list(head))).digest()


def _tree(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _tree(leaves[:split]) + _tree(leaves[split:])).digest()


def merkle_root(heads: Mapping[tuple[str, str], tuple[int, str]]) -> str:
    """The hex Merkle root over every stream's head (see the module doc)."""
    if not heads:
        return hashlib.sha256(b"").hexdigest()
    leaves = [_leaf((pk, app, *heads[pk, app])) for pk, app in sorted(heads)]
    return _tree(leaves).hex()


def make_checkpoint(
    *,
    sequence: int,
    previous: str,
    position: int,
    created_at: str,
    key_id: str,
    heads: Mapping[tuple[str, str], tuple[int, str]],
    changed: Iterable[Head],
) -> Checkpoint:
    """A checkpoint over ``heads`` (every stream, after applying ``changed``)."""
    return Checkpoint(
        sequence=sequence,
        previous=previous,
        position=position,
        created_at=created_at,
        key_id=key_id,
        streams=len(heads),
        root=merkle_root(heads),
        changed=sorted(changed),
    )


# --------------------------------------------------------------------------- keys


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - the extra is in [dev]
        raise ConfigError(
            "signed checkpoints need the 'cryptography' package: pip install 'statelog[signing]'"
        ) from exc
    return serialization, ed25519


def key_id(public_key: Any) -> str:
    """The hex SHA-256 of the raw 32-byte public key."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def _read_key_file(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"{what} file {os.fspath(path)!r} does not exist") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} file {os.fspath(path)!r}: {exc}") from exc


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in PEM file ``path`` (``KeyFileError`` otherwise)."""
    serialization, ed25519 = _crypto()
    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"{os.fspath(path)!r} is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{os.fspath(path)!r} holds a {type(key).__name__}, expected Ed25519")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 public key in PEM file ``path`` (``KeyFileError`` otherwise)."""
    serialization, ed25519 = _crypto()
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{os.fspath(path)!r} is not a PEM public key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{os.fspath(path)!r} holds a {type(key).__name__}, expected Ed25519")
    return key


def generate_key_files(out: str | os.PathLike[str]) -> tuple[str, str]:
    """Write a new Ed25519 private key to ``out`` (mode 0600) and its public key to
    ``out.pub``; refuse to overwrite either. Returns both paths."""
    serialization, ed25519 = _crypto()
    private_path, public_path = os.fspath(out), os.fspath(out) + ".pub"
    for path in (private_path, public_path):
        if os.path.exists(path):
            raise KeyFileError(f"{path!r} exists already: not overwriting a key")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(private_pem)
        with open(public_path, "xb") as file:
            file.write(public_pem)
    except OSError as exc:
        raise KeyFileError(f"cannot write key files at {private_path!r}: {exc}") from exc
    return private_path, public_path


def snapshot_mac_key(private_key: Any) -> bytes:
    """The HMAC key a writer with ``private_key`` seals its own snapshots with.

    Derived from the private key (SHA-256 over a label and its raw bytes), so
    only the writer can make a snapshot its resume will accept: an attacker
    who edits a snapshot's state and recomputes its digest without it is
    skipped on load (docs/operations.md, "Snapshots").
    """
    serialization, _ = _crypto()
    raw = private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return hashlib.sha256(b"statelog-snapshot-mac-v1\x00" + raw).digest()


def verify_signature(public_key: Any, signed: SignedCheckpoint) -> bool:
    """Whether ``signed.signature`` is ``public_key``'s signature of ``signed.body``."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(signed.signature, signed.body)
    except InvalidSignature:
        return False
    return True


# --------------------------------------------------------------------------- replay


class Replayed(msgspec.Struct, kw_only=True):
    """What a chain of checkpoints says: the heads of the latest one, and problems."""

    heads: dict[tuple[str, str], tuple[int, str]]
    #: every head any checkpoint signed: stream -> {sequence_id: (hash, checkpoint)}
    signed: dict[tuple[str, str], dict[int, tuple[str, int]]]
    latest: Checkpoint | None
    latest_digest: str
    problems: list[str]
    #: every replayed checkpoint's digest, by its sequence (what an anchor holds)
    digests: dict[int, str] = msgspec.field(default_factory=dict)


def replay(
    signed: Iterable[tuple[int, SignedCheckpoint]],
    public_keys: Iterable[Any] = (),
    *,
    other_keys_ok: bool = False,
) -> Replayed:
    """Check a chain of stored checkpoints ``(row sequence, signed)`` oldest first.

    Each must parse, carry its row's sequence (dense from 1) and link to the
    previous one's digest; with ``public_keys`` (several after a rotation), each
    must be signed by the key its ``key_id`` names, and a checkpoint naming a
    key that is not given raises ``KeyMismatchError`` (the wrong key was
    given), unless ``other_keys_ok`` (a writer after a key rotation: it checks
    what its own key signed and links to the rest, which verifiers check with
    the old public key). The latest checkpoint's root must equal the replayed
    heads. Replay
    stops at the first problem: what follows it is unproven.
    """
    keys = {key_id(key): key for key in public_keys}
    heads: dict[tuple[str, str], tuple[int, str]] = {}
    history: dict[tuple[str, str], dict[int, tuple[str, int]]] = {}
    latest: Checkpoint | None = None
    previous = ""
    problems: list[str] = []
    digests: dict[int, str] = {}
    expected = 1
    for row_sequence, item in signed:
        try:
            checkpoint = Checkpoint.from_bytes(item.body)
        except CheckpointError as exc:
            problems.append(f"checkpoint #{row_sequence}: {exc.reason}")
            break
        if checkpoint.sequence != row_sequence or row_sequence != expected:
            problems.append(
                f"checkpoint #{row_sequence}: carries sequence {checkpoint.sequence}, expected "
                f"{expected} (an old checkpoint replayed, or one deleted)"
            )
            break
        if checkpoint.previous != previous:
            problems.append(
                f"checkpoint #{row_sequence}: does not link to checkpoint #{expected - 1} "
                "(its previous digest differs: a checkpoint was replaced or rolled back)"
            )
            break
        if keys:
            key = keys.get(checkpoint.key_id)
            if key is None and not other_keys_ok:
                raise KeyMismatchError(checkpoint.key_id, ", ".join(keys))
            if key is not None and not verify_signature(key, item):
                problems.append(f"checkpoint #{row_sequence}: signature does not verify")
                break
        for pk, app, seq, head_hash in checkpoint.changed:
            heads[pk, app] = (seq, head_hash)
            history.setdefault((pk, app), {})[seq] = (head_hash, checkpoint.sequence)
        latest = checkpoint
        previous = digests[checkpoint.sequence] = digest(item.body)
        expected += 1
    if (
        latest is not None
        and not problems
        and (latest.streams != len(heads) or merkle_root(heads) != latest.root)
    ):
        problems.append(
            f"checkpoint #{latest.sequence}: its root does not match the heads "
            "the checkpoints before it recorded"
        )
    return Replayed(
        heads=heads,
        signed=history,
        latest=latest,
        latest_digest=previous,
        problems=problems,
        digests=digests,
    )


def sign(private_key: Any, checkpoint: Checkpoint) -> SignedCheckpoint:
    """``checkpoint``'s canonical bytes with ``private_key``'s Ed25519 signature."""
    body = checkpoint.to_bytes()
    return SignedCheckpoint(body=body, signature=private_key.sign(body))
