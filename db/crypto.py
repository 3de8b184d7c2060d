"""Exchange credentials at rest: AES-256-GCM with a random nonce, bound to their owner and field.

Stored form: nonce (12 bytes) || ciphertext+tag; the key id is stored beside it so keys can rotate
(`tiris rotate-keys` re-seals rows under the active key). The associated data binds a ciphertext to its user and
field, so a ciphertext copied to another row does not decrypt.

The keys are given once at start-up (`configure`), by whoever loaded them: the app factory, the commands, the tests.
"""

import hashlib
import hmac
import os
import uuid
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Keys(Protocol):
    """The service's settings (tiris.config.Settings) have these fields."""
    encryption_keys: dict[str, bytes]  # key id -> 32-byte AES key
    active_key_id: str  # seals new data
    api_key_hash_key: bytes


_keys: Keys | None = None


def configure(keys: Keys) -> None:
    global _keys
    _keys = keys


def _configured() -> Keys:
    if _keys is None:
        raise RuntimeError("db.crypto.configure() was not called")
    return _keys


def _aad(user_id: uuid.UUID, field: str) -> bytes:
    return f"{user_id}:{field}".encode()


def seal(plaintext: str, user_id: uuid.UUID, field: str) -> tuple[bytes, str]:
    keys = _configured()
    nonce = os.urandom(12)
    key = keys.encryption_keys[keys.active_key_id]
    return nonce + AESGCM(key).encrypt(nonce, plaintext.encode(), _aad(user_id, field)), keys.active_key_id


def open_sealed(sealed: bytes, key_id: str, user_id: uuid.UUID, field: str) -> str:
    key = _configured().encryption_keys[key_id]
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], _aad(user_id, field)).decode()


def fingerprint(api_key: str) -> bytes:
    """Keyed hash for uniqueness checks: equal keys give equal fingerprints, and nothing is learnt without the key."""
    return hmac.new(_configured().api_key_hash_key, api_key.encode(), hashlib.sha256).digest()


def mask(api_key: str) -> str:
    if len(api_key) < 16:  # short keys would be mostly revealed by their ends
        return "****"
    return f"{api_key[:4]}...{api_key[-4:]}"
