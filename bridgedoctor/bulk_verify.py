"""Check many stored pickles against candidate keys, fast: the whole-store (`--deep`) verification.

Per row it gives the verdict `pickle.verify_session` gives (mautrix-crypto.md §1): base64 of the
standard alphabet, length sanity, the 8-byte HMAC-SHA256 tag over the ciphertext, then PKCS#7
padding and the version word of the plaintext. What makes it fast, with the same verdicts:
- keys are derived once, and the HMAC's inner and outer SHA-256 states are precomputed per key
  (RFC 2104), so a row costs two hash continuations instead of a full HMAC setup;
- a batch of bytes is decoded by one C-level map whose decoder validates each row (strict
  base64; on Python 3.10 one `bytes.translate` pass over the batch checks the alphabet first);
  a batch with anything else takes the per-row path;
- the key that opened the previous row is tried first (a store's rows cluster by key);
- the plaintext checks decrypt only the first and last AES block of each row, for the whole
  batch in one AES call, and match them all with one regular expression.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from itertools import compress, repeat
from operator import add, and_, eq, itemgetter

from . import pickle

# Unpadded base64 (libolm) gets its padding back; a length of 4n+1 is impossible.
_PAD_BY_REMAINDER = [b"", b"", b"==", b"="]
_MIN_TEXT = 32  # base64 of the shortest pickle: one AES block and the 8-byte MAC
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BLOCK = pickle.BLOCK
_MAC = pickle.MAC_LEN
_PADDING = [b""] + [bytes([p]) * p for p in range(1, _BLOCK + 1)]
_VERSION_WORDS = {
    kind: frozenset(v.to_bytes(4, "big") for v in versions)
    for kind, versions in pickle.SESSION_VERSIONS.items()
}


def _rows_pattern(versions: frozenset[bytes] | None) -> re.Pattern[bytes]:
    """Any number of 64-byte rows ([junk, first, junk, last] plaintext blocks) that are valid:
    the first block starts with an allowed version word, the last ends in PKCS#7 padding."""
    first = (
        (b"(?:" + b"|".join(re.escape(v) for v in sorted(versions)) + b").{12}")
        if versions
        else b".{16}"
    )
    last = (
        b"(?:"
        + b"|".join(b".{%d}" % (_BLOCK - p) + re.escape(_PADDING[p]) for p in range(1, _BLOCK + 1))
        + b")"
    )
    return re.compile(b"(?s)(?:.{16}" + first + b".{16}" + last + b")*")


@cache
def _valid_rows(kind: str) -> re.Pattern[bytes]:
    """Compiled at the first deep scan of a kind, not at every start of the CLI."""
    return _rows_pattern(_VERSION_WORDS.get(kind))  # a secret: the raw value, no version word


@dataclass
class Tally:
    """What one table's rows turned out to be. Indexes are positions in the key list."""

    rows: int = 0
    opened: dict[int, int] = field(default_factory=dict)  # MAC and content valid under key i
    bad_plaintext: dict[int, int] = field(default_factory=dict)  # MAC valid, content not
    unknown: int = 0  # no candidate key's MAC matches
    corrupt: int = 0  # not a libolm pickle at all (base64, length)

    def add(self, other: Tally) -> None:
        self.rows += other.rows
        for mine, theirs in (
            (self.opened, other.opened),
            (self.bad_plaintext, other.bad_plaintext),
        ):
            for i, n in theirs.items():
                mine[i] = mine.get(i, 0) + n
        self.unknown += other.unknown
        self.corrupt += other.corrupt


class _Key:
    def __init__(self, key: bytes) -> None:
        self.aes, mac, self.iv = pickle._derive(key)
        block = mac.ljust(64, b"\0")  # SHA-256's block size; the MAC key is 32 bytes
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def tags(self, cts: list[bytes]) -> Iterator[bytes]:
        """The 8-byte HMAC tag of each ciphertext. Written as C-level maps over the batch (no
        Python bytecode per row): copy the keyed inner state, feed the row, digest; the same
        for the outer state over the inner digest (RFC 2104)."""
        n = len(cts)
        inner = list(map(_copy, repeat(self.inner, n)))
        deque(map(_update, inner, cts), maxlen=0)
        outer = list(map(_copy, repeat(self.outer, n)))
        deque(map(_update, outer, map(_digest, inner)), maxlen=0)
        return map(_head, map(_digest, outer))

    def first_and_last_blocks(self, cts: list[bytes]) -> bytes:
        """Plaintext of each ciphertext's first and last block, in 64 bytes per row laid out
        as [junk, first, junk, last], from one AES-CBC call. CBC decryption turns block i into
        D(C_i) XOR C_(i-1), so the input [IV, C_0, C_(n-2), C_(n-1)] per row yields exactly
        D(C_0) XOR IV (the first plaintext block) and D(C_(n-1)) XOR C_(n-2) (the last)."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        iv = self.iv
        if min(map(len, cts)) > _BLOCK:
            heads = map(add, repeat(iv), map(_first_block, cts))
            pairs = b"".join(map(add, heads, map(_last_two_blocks, cts)))
        else:  # a one-block ciphertext follows the IV twice
            pairs = b"".join([iv + ct[:_BLOCK] + (ct[-2 * _BLOCK : -_BLOCK] or iv) + ct[-_BLOCK:]
                              for ct in cts])  # fmt: skip
        return Cipher(algorithms.AES(self.aes), modes.CBC(iv)).decryptor().update(pairs)


_HASH = type(hashlib.sha256())
_copy, _update, _digest = _HASH.copy, _HASH.update, _HASH.digest
_head = itemgetter(slice(None, _MAC))
_tail = itemgetter(slice(-_MAC, None))
_body = itemgetter(slice(None, -_MAC))
_first_block = itemgetter(slice(None, _BLOCK))
_last_two_blocks = itemgetter(slice(-2 * _BLOCK, None))


class BulkVerifier:
    """Candidate keys, derived once; `feed` batches of one table's stored values."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = [_Key(k.encode("utf-8")) for k in keys]
        self._last = 0

    def feed(self, kind: str, values: list[object], tally: Tally) -> None:
        """Verify one batch. `kind` is olm_session, megolm_inbound, megolm_outbound or secret."""
        tally.rows += len(values)
        if not self.keys:
            tally.unknown += len(values)
            return
        raws = self._decode(values, tally)
        if not raws:
            return
        cts = list(map(_body, raws))
        tags = list(map(_tail, raws))
        # The key that opened the previous batch first, then the others for the rows it missed.
        order = [self._last] + [i for i in range(len(self.keys)) if i != self._last]
        for i in order:
            ok = list(map(eq, self.keys[i].tags(cts), tags))
            hits = list(compress(cts, ok))
            if hits:
                self._last = i if len(hits) * 2 > len(cts) else self._last
                self._count_plaintexts(i, kind, hits, tally)
            if len(hits) == len(cts):
                return
            missed = [not x for x in ok]
            cts, tags = list(compress(cts, missed)), list(compress(tags, missed))
        tally.unknown += len(cts)

    @staticmethod
    def _decode(values: list[object], tally: Tally) -> list[bytes]:
        """Ciphertext-and-MAC of every row that is a well-formed pickle; the rest are counted
        corrupt. A batch of plain bytes in the base64 alphabet is decoded by C-level maps."""
        if _plain_base64(values):
            lengths = list(map(len, values))  # type: ignore[arg-type]
            if min(lengths) >= _MIN_TEXT and 1 not in map(and_, lengths, repeat(3)):
                tails = map(_PAD_BY_REMAINDER.__getitem__, map(and_, lengths, repeat(3)))
                try:
                    raws = list(map(_a2b, map(add, values, tails)))  # type: ignore[arg-type]
                except (TypeError, binascii.Error):  # the per-row path says which rows
                    raws = None
                if raws is not None and not any(map(_bad_length, set(map(len, raws)))):
                    return raws
        out: list[bytes] = []
        for value in values:
            try:  # strips whitespace, validates the alphabet (as the one-row verifier does)
                env = pickle.decode(value)  # type: ignore[arg-type]
            except (pickle.PickleError, TypeError, AttributeError):
                tally.corrupt += 1
                continue
            out.append(env.ciphertext + env.mac)
        return out

    def _count_plaintexts(self, i: int, kind: str, cts: list[bytes], tally: Tally) -> None:
        bad = self._bad_plaintexts(i, kind, cts)
        if len(cts) > bad:
            tally.opened[i] = tally.opened.get(i, 0) + len(cts) - bad
        if bad:
            tally.bad_plaintext[i] = tally.bad_plaintext.get(i, 0) + bad

    def _bad_plaintexts(self, i: int, kind: str, cts: list[bytes]) -> int:
        plain = self.keys[i].first_and_last_blocks(cts)
        if _valid_rows(kind).fullmatch(plain):
            return 0  # the usual case: every row valid, checked in one pass
        versions = _VERSION_WORDS.get(kind)
        bad = 0
        for j, ct in enumerate(cts):
            at = 4 * _BLOCK * j + _BLOCK  # the first plaintext block of row j
            last = plain[at + 2 * _BLOCK : at + 3 * _BLOCK]
            p = last[-1]
            padded = 1 <= p <= _BLOCK and last[_BLOCK - p :] == _PADDING[p]
            if not padded or (
                versions is not None and (len(ct) - p < 4 or plain[at : at + 4] not in versions)
            ):
                bad += 1
        return bad


def all_bytes(values: Sequence[object]) -> bool:
    """Every value plain `bytes` (no text, no memoryview): what the C-level paths take."""
    return set(map(type, values)) == {bytes}


if sys.version_info >= (3, 11):
    # Each row's alphabet and padding checked by the decoder itself, in C (strict_mode rejects
    # what the per-row path's validating decode rejects): no joined copy of the batch.
    _a2b = partial(binascii.a2b_base64, strict_mode=True)
    _plain_base64 = all_bytes

else:  # Python 3.10: one pass over the joined batch; deleting the alphabet leaves nothing
    _a2b = binascii.a2b_base64

    def _plain_base64(values: list[object]) -> bool:
        try:
            return not b"".join(values).translate(None, _ALPHABET)  # type: ignore[arg-type]
        except TypeError:  # text values: the per-row path
            return False


def _bad_length(size: int) -> bool:
    return size < _MAC + _BLOCK or (size - _MAC) % _BLOCK != 0
