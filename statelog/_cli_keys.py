"""``statelog keys``, and the key options every command that reads or writes the log shares.

* ``--hmac-key-env VAR``: the chain's HMAC key, from an environment variable.
* ``--public-key FILE.pub`` (repeatable, one per key after a rotation): the
  Ed25519 public key(s) the signed checkpoints must verify under.
* ``--signing-key FILE`` (writers): the Ed25519 private key the writer signs
  checkpoints with (``statelog keys generate --out FILE``).

A missing or unreadable key file, or one that is not an Ed25519 PEM key, is
``KeyFileError``: exit 2 with one line.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from statelog.eventstore import ConfigError, generate_key_files, load_public_key

__all__ = [
    "add_key_options",
    "add_signing_key_option",
    "hmac_key",
    "public_keys",
    "register",
]


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="make an Ed25519 key pair for signed checkpoints",
        description="Ed25519 keys for signed stream heads: writers sign checkpoints with "
        "the private key (--signing-key), verifiers check them with the public one "
        "(--public-key).",
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    generate = sub.add_parser(
        "generate",
        help="write a new private key to KEYFILE (mode 0600) and its public key to KEYFILE.pub",
        description="Write a new Ed25519 private key to KEYFILE (PEM, mode 0600) and its "
        "public key to KEYFILE.pub. Never overwrites an existing file.",
    )
    generate.add_argument("--out", required=True, metavar="KEYFILE", help="the private key file")
    generate.set_defaults(handler=_generate)


def _generate(args: argparse.Namespace) -> int:
    private, public = generate_key_files(args.out)
    print(f"private key: {private} (keep it secret; mode 0600)")
    print(f"public key:  {public} (give it to whoever verifies)")
    return 0


def add_key_options(parser: argparse.ArgumentParser, *, hmac: bool = True) -> None:
    """``--hmac-key-env`` (unless the command has it already) and ``--public-key``."""
    if hmac:
        parser.add_argument(
            "--hmac-key-env",
            metavar="VAR",
            help="read the chain's HMAC key from this environment variable",
        )
    parser.add_argument(
        "--public-key",
        action="append",
        dest="public_keys",
        metavar="FILE.pub",
        help="check the signed checkpoints with this Ed25519 public key (repeat after a "
        "key rotation)",
    )


def add_signing_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--signing-key",
        metavar="KEYFILE",
        help="sign checkpoints of the stream heads with this Ed25519 private key "
        "(statelog keys generate)",
    )


def hmac_key(args: argparse.Namespace) -> bytes | None:
    name = getattr(args, "hmac_key_env", None)
    if name is None:
        return None
    key = os.environ.get(name)
    if not key:
        raise ConfigError(f"environment variable {name} is not set (--hmac-key-env)")
    return key.encode()


def public_keys(args: argparse.Namespace) -> list[Any]:
    return [load_public_key(path) for path in getattr(args, "public_keys", None) or ()]
