"""The fast whole-store verifier gives, row by row, the verdict of python-olm itself (unpickling
with each candidate key) and of the one-row verifier `pickle.verify_session`."""

from __future__ import annotations

import olm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridgedoctor import pickle
from bridgedoctor.bulk_verify import BulkVerifier, Tally
from tests.support.store import seal

KEYS = ["mautrix.bridge.e2ee", "maunium.net/go/mautrix-whatsapp", "", "ключ-🔑"]
OLM_CLASS = {
    "olm_session": olm.Session,
    "megolm_inbound": olm.InboundGroupSession,
    "megolm_outbound": olm.OutboundGroupSession,
}


def make(kind: str, key: str) -> bytes:
    if kind == "megolm_outbound":
        return olm.OutboundGroupSession().pickle(key)
    if kind == "megolm_inbound":
        return olm.InboundGroupSession(olm.OutboundGroupSession().session_key).pickle(key)
    if kind == "olm_session":
        a, b = olm.Account(), olm.Account()
        b.generate_one_time_keys(1)
        otk = next(iter(b.one_time_keys["curve25519"].values()))
        return olm.OutboundSession(a, b.identity_keys["curve25519"], otk).pickle(key)
    return seal(b"a stored secret", key)


def olm_opens(kind: str, stored: bytes, key: str) -> bool:
    """python-olm as the oracle (secrets are no olm object: the one-row verifier then)."""
    if kind == "secret":
        try:
            env = pickle.decode(stored)
        except pickle.PickleError:
            return False
        return pickle.verify_session(env, key.encode(), kind) is pickle.Verdict.OPENS
    try:
        OLM_CLASS[kind].from_pickle(stored, key)
    except Exception:  # noqa: BLE001 - any refusal is "does not open"
        return False
    return True


def verdict(v: BulkVerifier, kind: str, stored: object) -> str:
    t = Tally()
    v.feed(kind, [stored], t)
    assert t.rows == 1
    if t.corrupt:
        return "corrupt"
    if t.unknown:
        return "unknown"
    (i,) = (t.opened or t.bad_plaintext).keys()
    return f"{'opens' if t.opened else 'bad'}:{i}"


KINDS = st.sampled_from(["olm_session", "megolm_inbound", "megolm_outbound", "secret"])


@settings(max_examples=60, deadline=None)
@given(kind=KINDS, key=st.sampled_from(KEYS + ["not-a-candidate"]), order=st.permutations(KEYS))
def test_agrees_with_python_olm(kind: str, key: str, order: list[str]) -> None:
    stored = make(kind, key)
    v = BulkVerifier(order)
    expected = next(
        (f"opens:{i}" for i, k in enumerate(order) if olm_opens(kind, stored, k)), None
    )
    assert verdict(v, kind, stored) == (expected or "unknown")


@settings(max_examples=60, deadline=None)
@given(kind=KINDS, at=st.integers(min_value=0), char=st.sampled_from("AQg/+z9"))
def test_tampered_rows_agree_with_the_one_row_verifier(kind: str, at: int, char: str) -> None:
    stored = bytearray(make(kind, KEYS[0]))
    stored[at % len(stored)] = ord(char)
    v = BulkVerifier(KEYS)
    try:
        env = pickle.decode(bytes(stored))
    except pickle.PickleError:
        assert verdict(v, kind, bytes(stored)) == "corrupt"
        return
    slow = [pickle.verify_session(env, k.encode(), kind) for k in KEYS]
    hit = next((i for i, s in enumerate(slow) if s is not pickle.Verdict.WRONG_KEY), None)
    if hit is None:
        expected = "unknown"
    else:
        expected = f"{'opens' if slow[hit] is pickle.Verdict.OPENS else 'bad'}:{hit}"
    assert verdict(v, kind, bytes(stored)) == expected


@pytest.mark.parametrize(
    ("kind", "plain", "expected"),
    [
        ("megolm_inbound", b"\x00\x00\x00\x02" + b"r" * 200, "opens:0"),
        ("megolm_inbound", b"\x00\x00\x00\x07" + b"r" * 200, "bad:0"),  # unknown version
        ("olm_session", b"\x80\x00\x00\x01" + b"r" * 40, "opens:0"),
        ("megolm_outbound", b"\x00\x00\x00\x02", "bad:0"),  # outbound is version 1 only
        ("megolm_inbound", b"\x00\x00", "bad:0"),  # too short for a version word
        ("secret", b"", "opens:0"),  # a secret has no version word
        ("secret", b"x" * 16, "opens:0"),  # a whole block of padding
    ],
)
def test_plaintext_checks(kind: str, plain: bytes, expected: str) -> None:
    assert verdict(BulkVerifier(KEYS), kind, seal(plain, KEYS[0])) == expected
    env = pickle.decode(seal(plain, KEYS[0]))
    slow = pickle.verify_session(env, KEYS[0].encode(), kind)
    assert (slow is pickle.Verdict.OPENS) == expected.startswith("opens")


def test_bad_padding_after_a_good_mac() -> None:
    """A ciphertext whose MAC is right but whose padding is not (sealed by hand)."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    aes, mac, iv = pickle._derive(KEYS[0].encode())
    enc = Cipher(algorithms.AES(aes), modes.CBC(iv)).encryptor()
    ct = enc.update(b"\x00\x00\x00\x02" + b"z" * 28) + enc.finalize()  # last byte 'z': no padding
    tag = hmac.new(mac, ct, hashlib.sha256).digest()[:8]
    stored = base64.b64encode(ct + tag).rstrip(b"=")
    assert verdict(BulkVerifier(KEYS), "megolm_inbound", stored) == "bad:0"


@pytest.mark.parametrize("form", [str, memoryview, lambda b: b + b"\n"])
def test_text_memoryview_and_whitespace_take_the_slow_path(form) -> None:
    stored = make("megolm_inbound", KEYS[1])
    value = form(stored.decode()) if form is str else form(stored)
    assert verdict(BulkVerifier(KEYS), "megolm_inbound", value) == "opens:1"


def test_batch_counts_and_key_order_adapt() -> None:
    """Many rows at once: the tallies add up, whichever key opened the previous row."""
    rows = [make("megolm_inbound", KEYS[i % 2]) for i in range(30)]
    rows += [b"not base64 !!", make("megolm_inbound", "nobody")]
    t = Tally()
    v = BulkVerifier(KEYS)
    v.feed("megolm_inbound", rows[:17], t)
    v.feed("megolm_inbound", rows[17:], t)
    assert (t.rows, t.opened, t.unknown, t.corrupt) == (32, {0: 15, 1: 15}, 1, 1)


def one_row_tally(kind: str, rows: list[bytes]) -> Tally:
    """The one-row verifier (pickle.decode, verify_session) summed: the reference."""
    t = Tally(rows=len(rows))
    for stored in rows:
        try:
            env = pickle.decode(stored)
        except pickle.PickleError:
            t.corrupt += 1
            continue
        slow = [pickle.verify_session(env, k.encode(), kind) for k in KEYS]
        hit = next((i for i, s in enumerate(slow) if s is not pickle.Verdict.WRONG_KEY), None)
        if hit is None:
            t.unknown += 1
        else:
            into = t.opened if slow[hit] is pickle.Verdict.OPENS else t.bad_plaintext
            into[hit] = into.get(hit, 0) + 1
    return t


EDITS = st.one_of(
    st.tuples(st.just("set"), st.integers(min_value=0), st.sampled_from(b"=\n -_*\x00\xffA")),
    st.tuples(st.just("cut"), st.integers(min_value=1, max_value=5), st.just(0)),
    st.tuples(st.just("pad"), st.integers(min_value=1, max_value=3), st.just(0)),
)


@settings(max_examples=80, deadline=None)
@given(kind=KINDS, edits=st.lists(EDITS, min_size=1, max_size=3), size=st.integers(2, 6))
def test_a_batch_with_malformed_rows_counts_as_row_by_row(
    kind: str, edits: list[tuple[str, int, int]], size: int
) -> None:
    """Whatever the fast batch decoder accepts or hands to the per-row path (a stray `=`,
    whitespace, a byte outside the alphabet, a cut or padded row), the batch's counts are the
    one-row verifier's, row for row."""
    rows = [make(kind, KEYS[i % len(KEYS)]) for i in range(size)]
    for n, (how, at, byte) in enumerate(edits):
        row = bytearray(rows[n % size])
        if how == "set":
            row[at % len(row)] = byte
        elif how == "cut":
            del row[-at:]
        else:
            row += b"=" * at
        rows[n % size] = bytes(row)
    got = Tally()
    BulkVerifier(KEYS).feed(kind, list(rows), got)
    assert got == one_row_tally(kind, rows)
