"""Signed provenance: an Ed25519 signature of a model file's sha256, made with a key MLflow never sees.

The trainer (or CI) holds the private key (``MODEL_SIGNING_PRIVATE_KEY``) and, after
registering a version, tags it with :data:`SIGNATURE_TAG` (base64 signature of
:func:`message` for the file's digest) and :data:`KEY_ID_TAG`. The service holds only
public keys (``MODEL_SIGNING_KEY``: PEM text or a PEM file, one or several keys so a rotation
can overlap) and, when they are set, refuses a version whose signature is missing or does not
verify, before it reads a byte of the model file as a model. Anyone who can write to the
registry can set tags, but cannot forge a signature without the private key.

    $ openssl genpkey -algorithm ed25519 -out model-signing.pem
    $ openssl pkey -in model-signing.pem -pubout -out model-signing.pub.pem
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_TAG = "model_signature"
"""Model-version tag: base64 Ed25519 signature of :func:`message` for the model file's sha256."""
KEY_ID_TAG = "model_signing_key_id"
"""Model-version tag: :func:`key_id` of the key that signed (tells which key of a rotation to try)."""
DOMAIN = b"ride-duration model file sha256:"
"""Prefix of every signed message, so a signature made for anything else never verifies here."""
PEM_BLOCK = re.compile(rb"-----BEGIN [A-Z ]+-----.+?-----END [A-Z ]+-----", re.S)


class SignatureError(Exception):
    """A version is unsigned, or its signature does not verify with any trusted key."""


class SigningKeyError(ValueError):
    """A configured key cannot be read (bad PEM, not Ed25519, missing file)."""


def message(sha256_hex: str) -> bytes:
    """What is signed: the domain prefix and the file's lower-case hex digest."""
    return DOMAIN + sha256_hex.lower().encode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _pem_text(value: str) -> bytes:
    """``value`` itself when it holds PEM text, else the contents of the file it names."""
    if "-----BEGIN" in value:
        return value.encode()
    path = Path(value).expanduser()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"cannot read key file {path}: {exc.strerror}") from exc


def public_keys(value: str) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 public keys in ``value`` (PEM text or a PEM file; several blocks allowed), by key id.

    :raises SigningKeyError: no key, or a block that is not an Ed25519 public key.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    blocks = PEM_BLOCK.findall(_pem_text(value))
    if not blocks:
        raise SigningKeyError("MODEL_SIGNING_KEY holds no PEM public key")
    keys: dict[str, Ed25519PublicKey] = {}
    for block in blocks:
        try:
            key = load_pem_public_key(block)
        except ValueError as exc:
            raise SigningKeyError(f"MODEL_SIGNING_KEY: unreadable PEM block: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"MODEL_SIGNING_KEY: expected Ed25519 public keys, got {type(key).__name__}")
        keys[key_id(key)] = key
    return keys


def private_key(value: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``value`` (PEM text or a PEM file, unencrypted PKCS#8).

    :raises SigningKeyError: unreadable or not Ed25519.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(_pem_text(value), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"MODEL_SIGNING_PRIVATE_KEY: unreadable: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"MODEL_SIGNING_PRIVATE_KEY: expected an Ed25519 key, got {type(key).__name__}")
    return key


def sign(key: Ed25519PrivateKey, sha256_hex: str) -> dict[str, str]:
    """The tags that sign a model file with digest ``sha256_hex``."""
    signature = key.sign(message(sha256_hex))
    return {SIGNATURE_TAG: base64.b64encode(signature).decode("ascii"), KEY_ID_TAG: key_id(key.public_key())}


def verify(keys: t.Mapping[str, Ed25519PublicKey], sha256_hex: str, tags: t.Mapping[str, str]) -> str:
    """Check the signature in ``tags`` for a file with digest ``sha256_hex``; returns the key id that verified.

    :raises SignatureError: no signature tag, a malformed one, or no trusted key verifies it.
    """
    from cryptography.exceptions import InvalidSignature

    encoded = tags.get(SIGNATURE_TAG)
    if not encoded:
        raise SignatureError(f"unsigned: no {SIGNATURE_TAG} tag, and MODEL_SIGNING_KEY is set")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"malformed {SIGNATURE_TAG} tag") from exc
    named = tags.get(KEY_ID_TAG)
    order = sorted(keys, key=lambda kid: kid != named)  # the named key first, then the others
    for kid in order:
        try:
            keys[kid].verify(signature, message(sha256_hex))
        except InvalidSignature:
            continue
        return kid
    raise SignatureError(f"bad signature: no trusted key ({', '.join(sorted(keys))}) verifies {SIGNATURE_TAG}"
                         f"{f' (signed with key {named})' if named else ''}")
