"""The libolm pickle envelope: prove which key encrypted a stored pickle.

Format (mautrix-crypto.md §1): HKDF-SHA256(key, salt=empty, info="Pickle") -> 80 bytes split
into AES-256 key, HMAC key and CBC IV; payload = AES-256-CBC(PKCS#7) ciphertext followed by the
first 8 bytes of HMAC-SHA256 over the ciphertext; unpadded standard base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

# `cryptography` (AES, X25519) is imported where a pickle is decrypted, not here: most of what
# loads this module (the CLI's start, the helper's protocol paths) never decrypts anything.

MAC_LEN = 8
BLOCK = 16
ACCOUNT_VERSIONS = frozenset({2, 3, 4})
# Olm sessions: 1, or 0x80000001 with chain index; Megolm inbound 1-2; outbound 1.
SESSION_VERSIONS = {
    "olm_session": frozenset({1, 0x80000001}),
    "megolm_inbound": frozenset({1, 2}),
    "megolm_outbound": frozenset({1}),
}


class PickleError(ValueError):
    """The stored value is not a well-formed libolm pickle (independent of any key)."""


class Verdict(Enum):
    OPENS = "opens"  # MAC matches and the plaintext is a valid object of the expected kind
    WRONG_KEY = "wrong_key"  # MAC mismatch
    BAD_PLAINTEXT = "bad_plaintext"  # MAC matches, but padding or version is invalid


@dataclass(frozen=True)
class Envelope:
    ciphertext: bytes
    mac: bytes


@dataclass(frozen=True)
class AccountInfo:
    version: int
    ed25519: str
    curve25519: str
    one_time_keys: int


@lru_cache(maxsize=64)
def _derive(key: bytes) -> tuple[bytes, bytes, bytes]:
    """HKDF-SHA256 (RFC 5869) with an empty salt (= 32 zero bytes) and info "Pickle", 80 bytes:
    AES key, HMAC key, IV. Cached: checking samples and candidates derives each key once."""
    prk = hmac.new(b"\0" * 32, key, hashlib.sha256).digest()
    okm, block = b"", b""
    for counter in (1, 2, 3):
        block = hmac.new(prk, block + b"Pickle" + bytes([counter]), hashlib.sha256).digest()
        okm += block
    return okm[:32], okm[32:64], okm[64:80]


def decode(stored: bytes | str | memoryview) -> Envelope:
    """Parse the stored column value (ASCII base64 in a bytea/BLOB or text)."""
    if isinstance(stored, memoryview):
        stored = stored.tobytes()
    if isinstance(stored, str):
        stored = stored.encode("ascii", "replace")
    text = stored.strip()
    try:
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise PickleError("the stored pickle is not valid base64") from e
    if len(raw) < MAC_LEN + BLOCK or (len(raw) - MAC_LEN) % BLOCK:
        raise PickleError(f"the stored pickle has an impossible length ({len(raw)} bytes)")
    return Envelope(ciphertext=raw[:-MAC_LEN], mac=raw[-MAC_LEN:])


def mac_matches(env: Envelope, key: bytes) -> bool:
    _, mac_key, _ = _derive(key)
    tag = hmac.new(mac_key, env.ciphertext, hashlib.sha256).digest()[:MAC_LEN]
    return hmac.compare_digest(tag, env.mac)


def decrypt(env: Envelope, key: bytes) -> bytes | None:
    """Plaintext if the MAC matches and the padding is valid, else None."""
    aes_key, mac_key, iv = _derive(key)
    tag = hmac.new(mac_key, env.ciphertext, hashlib.sha256).digest()[:MAC_LEN]
    if not hmac.compare_digest(tag, env.mac):
        return None
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    dec = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
    padded = dec.update(env.ciphertext) + dec.finalize()
    pad = padded[-1]
    if not 1 <= pad <= BLOCK or padded[-pad:] != bytes([pad]) * pad:
        return None
    return padded[:-pad]


def parse_account(plain: bytes) -> AccountInfo | None:
    """Read the identity keys of a decrypted libolm account; None if the layout is invalid."""
    if len(plain) < 168:
        return None
    (version,) = struct.unpack(">I", plain[:4])
    if version not in ACCOUNT_VERSIONS:
        return None
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    ed_pub, curve_pub, curve_priv = plain[4:36], plain[100:132], plain[132:164]
    # The Curve25519 public key must derive from the private one: a decrypted account that
    # fails this is garbage that merely passed the MAC, not the bridge's identity.
    derived = X25519PrivateKey.from_private_bytes(curve_priv).public_key().public_bytes_raw()
    if derived != curve_pub:
        return None
    (otk_count,) = struct.unpack(">I", plain[164:168])
    if otk_count > 1000 or 168 + 69 * otk_count > len(plain):
        return None

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode().rstrip("=")

    return AccountInfo(version, b64(ed_pub), b64(curve_pub), otk_count)


def verify_account(env: Envelope, key: bytes) -> tuple[Verdict, AccountInfo | None]:
    plain = decrypt(env, key)
    if plain is None:
        return (Verdict.WRONG_KEY if not mac_matches(env, key) else Verdict.BAD_PLAINTEXT), None
    info = parse_account(plain)
    return (Verdict.OPENS, info) if info else (Verdict.BAD_PLAINTEXT, None)


def verify_session(env: Envelope, key: bytes, kind: str) -> Verdict:
    plain = decrypt(env, key)
    if plain is None:
        return Verdict.WRONG_KEY if not mac_matches(env, key) else Verdict.BAD_PLAINTEXT
    if kind == "secret":  # crypto_secrets carries the raw value, no version header
        return Verdict.OPENS
    if len(plain) < 4 or struct.unpack(">I", plain[:4])[0] not in SESSION_VERSIONS[kind]:
        return Verdict.BAD_PLAINTEXT
    return Verdict.OPENS


def fingerprint(secret: str | bytes) -> str:
    """Short, non-reversible label for a secret, safe to print."""
    data = secret.encode() if isinstance(secret, str) else secret
    return "sha256:" + hashlib.sha256(data).hexdigest()[:10]
