"""Try candidate keys against a stored account: the evidence behind every pickle-key verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import pickle
from .knowledge import BridgeSpec, Knowledge


@dataclass(frozen=True)
class Candidate:
    key: str = field(repr=False)
    origin: str  # why it is tried: "configured", "legacy key of gmessages", "--try-key", ...


@dataclass(frozen=True)
class Attempt:
    candidate: Candidate
    verdict: pickle.Verdict


@dataclass(frozen=True)
class KeyProof:
    attempts: tuple[Attempt, ...]
    opened_by: Candidate | None
    account: pickle.AccountInfo | None
    corrupt: str | None = None  # the stored value is not a pickle at all

    @property
    def mac_only(self) -> tuple[Attempt, ...]:
        """Keys whose MAC matched although the plaintext was not a valid account."""
        return tuple(a for a in self.attempts if a.verdict is pickle.Verdict.BAD_PLAINTEXT)


def in_force_key(spec: BridgeSpec, configured: str | None) -> str | None:
    """The key the bridge binary will actually use, when it is knowable."""
    if spec.key_setting == "none" or configured is None:
        return spec.compiled_key
    return None if configured == "generate" else configured


def candidates(
    spec: BridgeSpec, configured: str | None, try_keys: list[str], kb: Knowledge
) -> list[Candidate]:
    out: list[Candidate] = []
    seen: set[str] = set()

    def add(key: str | None, origin: str) -> None:
        if key is not None and key not in seen:
            seen.add(key)
            out.append(Candidate(key, origin))

    in_force = in_force_key(spec, configured)
    if in_force is not None:
        add(in_force, "configured" if spec.key_setting != "none" and configured else "compiled-in")
    for k in spec.legacy_keys:
        add(k, f"historical key of {spec.name}")
    add(spec.default_key, "MDAD default")
    for k in kb.known_keys:
        add(k, "known mautrix key")
    for k in try_keys:
        add(k, "--try-key")
    add("generate", "the literal 'generate'")
    add("", "the empty key")
    return out


def prove(stored: bytes, cands: list[Candidate]) -> KeyProof:
    try:
        env = pickle.decode(stored)
    except pickle.PickleError as e:
        return KeyProof((), None, None, corrupt=str(e))
    attempts: list[Attempt] = []
    for c in cands:
        verdict, info = pickle.verify_account(env, c.key.encode("utf-8"))
        attempts.append(Attempt(c, verdict))
        if verdict is pickle.Verdict.OPENS:
            return KeyProof(tuple(attempts), c, info)
    return KeyProof(tuple(attempts), None, None)


def sessions_opened(samples: dict[str, tuple[bytes, ...]], key: str) -> dict[str, tuple[int, int]]:
    """Per pickled-row kind: (rows the key opens, rows sampled). The same verdicts as
    pickle.verify_session, a batch at a time (bulk_verify: one AES call per kind)."""
    from .bulk_verify import BulkVerifier, Tally

    verifier = BulkVerifier([key])
    out: dict[str, tuple[int, int]] = {}
    for kind, rows in samples.items():
        if rows:
            tally = Tally()
            verifier.feed(kind, list(rows), tally)
            out[kind] = (tally.opened.get(0, 0), len(rows))
    return out
