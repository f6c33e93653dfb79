"""The libolm envelope verifier, checked against python-olm and vodozemac as oracles."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct

import olm
import pytest
import vodozemac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from bridgedoctor import pickle as p
from tests.support import store

KEYS = ["mautrix.bridge.e2ee", "go.mau.fi/mautrix-gmessages", "", "ключ-🔑", "x" * 200]


def vodozemac_opens(pickled: str, key: str) -> str | None:
    try:
        return vodozemac.Account.from_libolm_pickle(pickled, key.encode()).ed25519_key.to_base64()
    except vodozemac.LibolmPickleException:
        return None


def seal(plain: bytes, key: bytes) -> str:
    """Our own libolm envelope, to build pickles python-olm would never write."""
    return store.seal(plain, key).decode()


@pytest.fixture(scope="module")
def account() -> olm.Account:
    a = olm.Account()
    a.generate_one_time_keys(5)
    a.generate_fallback_key()
    return a


@pytest.mark.parametrize("key", KEYS)
def test_right_key_opens_and_yields_identity(account: olm.Account, key: str) -> None:
    env = p.decode(account.pickle(key))
    verdict, info = p.verify_account(env, key.encode())
    assert verdict is p.Verdict.OPENS
    assert info is not None
    assert info.ed25519 == account.identity_keys["ed25519"]
    assert info.curve25519 == account.identity_keys["curve25519"]
    assert info.version == 4 and info.one_time_keys == 5


@pytest.mark.parametrize("key", KEYS)
def test_agrees_with_vodozemac_for_every_candidate(account: olm.Account, key: str) -> None:
    pickled = account.pickle(key).decode()
    env = p.decode(pickled)
    for cand in KEYS:
        ours, info = p.verify_account(env, cand.encode())
        theirs = vodozemac_opens(pickled, cand)
        assert (ours is p.Verdict.OPENS) == (theirs is not None), cand
        if theirs:
            assert info is not None and info.ed25519 == theirs


@settings(max_examples=40, deadline=None)
@given(key=st.text(max_size=80), other=st.text(max_size=80))
def test_property_only_the_pickling_key_opens(key: str, other: str) -> None:
    a = olm.Account()
    env = p.decode(a.pickle(key))
    assert p.verify_account(env, key.encode())[0] is p.Verdict.OPENS
    if other != key:
        assert p.verify_account(env, other.encode())[0] is p.Verdict.WRONG_KEY


@settings(max_examples=40, deadline=None)
@given(
    # Half the draws land in the 8-byte MAC at the end (negative positions): a comparison of
    # only part of the MAC is found from a fresh example database, not by luck.
    pos=st.integers(min_value=0) | st.integers(min_value=-p.MAC_LEN, max_value=-1),
    bit=st.integers(min_value=0, max_value=7),
)
def test_property_any_flipped_bit_fails_the_mac(account: olm.Account, pos: int, bit: int) -> None:
    raw = bytearray(base64.b64decode(account.pickle("k") + b"=" * 3))
    raw[pos % len(raw)] ^= 1 << bit
    tampered = base64.b64encode(bytes(raw)).decode().rstrip("=")
    verdict, _ = p.verify_account(p.decode(tampered), b"k")
    assert verdict is p.Verdict.WRONG_KEY
    assert vodozemac_opens(tampered, "k") is None


@pytest.mark.parametrize("byte", range(p.MAC_LEN))
def test_every_byte_of_the_mac_counts(account: olm.Account, byte: int) -> None:
    """All 8 MAC bytes are compared: a tag right in its first bytes only is still a wrong key."""
    raw = bytearray(base64.b64decode(account.pickle("k") + b"=" * 3))
    raw[len(raw) - p.MAC_LEN + byte] ^= 0x01
    env = p.decode(base64.b64encode(bytes(raw)))
    assert p.mac_matches(env, b"k") is False
    assert p.decrypt(env, b"k") is None
    assert p.verify_account(env, b"k")[0] is p.Verdict.WRONG_KEY


def test_mac_ok_but_unknown_version_is_bad_plaintext(account: olm.Account) -> None:
    good = base64.b64decode(account.pickle("k") + b"===")
    # Decrypt python-olm's plaintext, bump the version to 99, seal again with the same key.
    okm = HKDF(algorithm=SHA256(), length=80, salt=None, info=b"Pickle").derive(b"k")
    dec = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:80])).decryptor()
    plain = dec.update(good[:-8]) + dec.finalize()
    plain = plain[: -plain[-1]]
    forged = seal(struct.pack(">I", 99) + plain[4:], b"k")
    assert p.verify_account(p.decode(forged), b"k")[0] is p.Verdict.BAD_PLAINTEXT
    assert vodozemac_opens(forged, "k") is None
    resealed = seal(plain, b"k")
    assert p.verify_account(p.decode(resealed), b"k")[0] is p.Verdict.OPENS
    assert vodozemac_opens(resealed, "k") == account.identity_keys["ed25519"]


def test_mac_ok_but_padding_broken_is_bad_plaintext_not_wrong_key() -> None:
    """The right key with damaged content is not "key lost": the MAC is checked on its own when
    decryption fails, so a store libolm cannot unpad is reported as such, never as a wrong key."""
    env = sealed_unpadded(bytes(16 * 11), b"k")  # ends in 0x00: no valid PKCS#7 padding
    assert p.decrypt(env, b"k") is None
    assert p.mac_matches(env, b"k") is True
    assert p.mac_matches(env, b"other") is False
    assert p.verify_account(env, b"k") == (p.Verdict.BAD_PLAINTEXT, None)
    assert p.verify_account(env, b"other") == (p.Verdict.WRONG_KEY, None)
    assert p.verify_session(env, b"k", "olm") is p.Verdict.BAD_PLAINTEXT
    assert p.verify_session(env, b"other", "olm") is p.Verdict.WRONG_KEY


def sealed_unpadded(padded: bytes, key: bytes) -> p.Envelope:
    """A libolm envelope around `padded` as given, with a valid MAC: the padding is ours."""
    okm = HKDF(algorithm=SHA256(), length=80, salt=None, info=b"Pickle").derive(key)
    enc = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:80])).encryptor()
    ct = enc.update(padded) + enc.finalize()
    return p.decode(base64.b64encode(ct + hmac.new(okm[32:64], ct, hashlib.sha256).digest()[:8]))


@pytest.mark.parametrize("length", range(0, 34))
def test_padding_of_every_length_comes_off_exactly(length: int) -> None:
    """PKCS#7 pads 1 to 16 bytes: a plaintext of each length comes back byte for byte."""
    plain = bytes((7 * i + length) % 251 for i in range(length))
    assert p.decrypt(p.decode(seal(plain, b"k")), b"k") == plain


@pytest.mark.parametrize(
    "tail", [b"\x00", b"\x11", b"\x00\x00\x03", b"\x02\x03\x03", b"\x01" * 15 + b"\x10"]
)
def test_padding_that_is_not_pkcs7_is_refused(tail: bytes) -> None:
    padded = bytes(32 - len(tail)) + tail
    env = sealed_unpadded(padded, b"k")
    assert p.decrypt(env, b"k") is None
    assert p.verify_account(env, b"k") == (p.Verdict.BAD_PLAINTEXT, None)


def test_garbage_that_passes_mac_is_not_an_account() -> None:
    forged = seal(struct.pack(">I", 4) + bytes(400), b"k")  # zero keys: curve pub != X25519(priv)
    assert p.verify_account(p.decode(forged), b"k")[0] is p.Verdict.BAD_PLAINTEXT


def test_session_pickles() -> None:
    a, b = olm.Account(), olm.Account()
    b.generate_one_time_keys(1)
    otk = next(iter(b.one_time_keys["curve25519"].values()))
    sess = olm.OutboundSession(a, b.identity_keys["curve25519"], otk)
    out = olm.OutboundGroupSession()
    inb = olm.InboundGroupSession(out.session_key)
    for kind, blob in (
        ("olm_session", sess.pickle("s")),
        ("megolm_outbound", out.pickle("s")),
        ("megolm_inbound", inb.pickle("s")),
    ):
        env = p.decode(blob)
        assert p.verify_session(env, b"s", kind) is p.Verdict.OPENS, kind
        assert p.verify_session(env, b"t", kind) is p.Verdict.WRONG_KEY, kind


@pytest.mark.parametrize(
    "stored,needle",
    [(b"!!!not base64!!!", "base64"), (b"QUJD", "length"), ("", "length")],
)
def test_malformed_pickles_raise_clear_errors(stored: bytes | str, needle: str) -> None:
    with pytest.raises(p.PickleError, match=needle):
        p.decode(stored)


def test_fingerprint_is_short_and_hides_the_key() -> None:
    fp = p.fingerprint("s3cr3t-key-value")
    assert fp.startswith("sha256:") and len(fp) == 17 and "s3cr3t" not in fp


def account_plain(otk_count: int, otk_bytes: int | None = None, version: int = 4) -> bytes:
    """A libolm account's plaintext as parse_account reads it: version, ed25519 public (4:36),
    ed25519 private, Curve25519 public (100:132) and private (132:164), the one-time key count
    (164:168), then 69 bytes per one-time key (`otk_bytes` of them in all, if given)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    priv = bytes(range(1, 33))
    pub = X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()
    head = struct.pack(">I", version) + b"E" * 32 + b"e" * 64 + pub + priv
    tail = bytes(69 * otk_count if otk_bytes is None else otk_bytes)
    return head + struct.pack(">I", otk_count) + tail


@pytest.mark.parametrize("count", [0, 2, 5, 1000])
def test_account_with_exactly_its_one_time_keys_is_read(count: int) -> None:
    info = p.parse_account(account_plain(count))
    assert info is not None and (info.version, info.one_time_keys) == (4, count)
    assert len(account_plain(0)) == 168  # the shortest account: no one-time keys


@pytest.mark.parametrize(
    ("count", "otk_bytes"),
    [(1, 68), (2, 137), (5, 69 * 5 - 1), (1001, 69 * 1001), (0xFFFFFFFF, 69 * 3), (0x80000001, 0)],
)
def test_account_whose_one_time_keys_do_not_fit_is_not_an_account(
    count: int, otk_bytes: int
) -> None:
    """More keys than the plaintext holds, more than libolm keeps (1000), or a count that is
    negative as a signed number: garbage that passed the MAC, not the bridge's identity."""
    assert p.parse_account(account_plain(count, otk_bytes)) is None


@pytest.mark.parametrize("version", [1, 5, 0x80000004])
def test_account_of_an_unknown_version_is_not_read(version: int) -> None:
    assert p.parse_account(account_plain(0, version=version)) is None
    assert p.parse_account(account_plain(0)[:167]) is None


@pytest.mark.parametrize(("kind", "version"), [("olm_session", 0x80000001), ("megolm_inbound", 2)])
def test_a_session_that_is_only_its_version_opens(kind: str, version: int) -> None:
    """4 bytes, the version alone, is the shortest plaintext a session check reads."""
    assert p.verify_session(p.decode(seal(struct.pack(">I", version), b"k")), b"k", kind) is (
        p.Verdict.OPENS
    )
    short = p.decode(seal(struct.pack(">I", version)[:3], b"k"))
    assert p.verify_session(short, b"k", kind) is p.Verdict.BAD_PLAINTEXT
