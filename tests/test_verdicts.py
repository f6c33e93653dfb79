"""Verdicts the rules must never get wrong, from facts built in memory (the rules are pure):
each case is one where a wrong answer would be destructive advice or a false all-clear.

Pickles are made by python-olm; the "newer libolm" account is python-olm's own plaintext with an
unknown version, sealed in a correct envelope (tests/test_pickle.py's `seal`)."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import struct
from pathlib import Path

import olm
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bridgedoctor.facts import BridgeFacts, ConfigFacts, DbFacts, StoredAccount, UnitFacts
from bridgedoctor.findings import BridgeReport, Finding, exit_code
from bridgedoctor.knowledge import load
from bridgedoctor.naming import decide
from bridgedoctor.proof import Candidate, in_force_key, prove
from bridgedoctor.rules import RuleContext, evaluate
from tests.test_pickle import seal

KB = load()
GMESSAGES = KB.bridges["gmessages"]
CRYPTO_TABLES = frozenset({"version", "crypto_account", "crypto_olm_session", "portal"})


def facts(
    *, pickle_key: str, account: bytes | None, encryption: bool = True, crypto: bool = True
) -> BridgeFacts:
    spec = GMESSAGES
    base = Path("/matrix") / spec.dirname
    unit = UnitFacts(path=Path("/etc/systemd/system") / f"{spec.service}.service",
                     image=spec.image, tag="v0.2608.0", no_update=True)  # fmt: skip
    cfg = ConfigFacts(
        path=base / "config" / "config.yaml",
        layout="bridgev2",
        encryption_allow=encryption,
        pickle_key=pickle_key,
        db_type="postgres",
        db_uri="postgres://u:p@matrix-postgres/db",
    )
    accounts = (StoredAccount("", "DEV", account),) if account is not None else ()
    db = DbFacts(
        kind="postgres",
        location="postgres://u@matrix-postgres:5432/db",
        tables=CRYPTO_TABLES if crypto else frozenset({"version", "portal"}),
        versions={},
        owner=None,
        accounts=accounts,
        samples={},
    )
    return BridgeFacts(spec=spec, base_dir=base, unit=unit, config=cfg, db=db)


def report(f: BridgeFacts) -> BridgeReport:
    ctx = RuleContext(kb=KB, naming=decide(f.spec, f.unit, "auto"))
    return evaluate(f, ctx)


def codes(r: BridgeReport) -> list[str]:
    return [f.code for f in r.findings]


def newer_libolm_account(key: str) -> bytes:
    """An account pickle whose MAC matches `key` but whose content this libolm does not know."""
    good = base64.b64decode(olm.Account().pickle(key) + b"===")
    okm = HKDF(algorithm=SHA256(), length=80, salt=None, info=b"Pickle").derive(key.encode())
    dec = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:80])).decryptor()
    plain = dec.update(good[:-8]) + dec.finalize()
    plain = plain[: -plain[-1]]
    return seal(struct.pack(">I", 99) + plain[4:], key.encode()).encode()


def test_mac_match_with_unknown_content_is_unsupported_not_lost() -> None:
    """'Newer libolm' must never read as 'key lost, reset': the key is right, the reader is old."""
    key = GMESSAGES.default_key
    assert key is not None
    r = report(facts(pickle_key=key, account=newer_libolm_account(key)))
    assert codes(r) == ["pickle_unsupported"]
    (f,) = r.findings
    assert f.severity == "error" and r.status == "broken"
    assert "newer libolm" in f.summary and "mautrix.bridge.e2ee" in f.summary
    assert "reset" not in f.summary.lower() and f.fix is None
    assert any(line.endswith("MAC matches but the content is not a valid account")
               for line in f.evidence)  # fmt: skip


def test_generate_while_a_known_key_opens_the_store_is_not_ok() -> None:
    """The account opens with MDAD's default key, but the config says 'generate': the next start
    uses a random key and fails. Both the mismatch and the 'generate' trap are reported."""
    key = GMESSAGES.default_key
    assert key is not None
    r = report(facts(pickle_key="generate", account=olm.Account().pickle(key)))
    assert "pickle_key_ok" not in codes(r)
    assert sorted(codes(r)) == ["pickle_key_generate", "pickle_key_mismatch"]
    mismatch = next(f for f in r.findings if f.code == "pickle_key_mismatch")
    assert mismatch.severity == "error" and "'generate'" in mismatch.summary
    assert r.status == "broken" and exit_code([r]) == 1
    assert r.pin is not None and key in r.pin


def test_configured_key_that_opens_is_ok() -> None:
    """The counterpart: the same store with the key configured is the one all-clear."""
    key = GMESSAGES.default_key
    assert key is not None
    r = report(facts(pickle_key=key, account=olm.Account().pickle(key)))
    assert codes(r) == ["pickle_key_ok"] and r.status == "ok" and exit_code([r]) == 0


def test_generate_with_encryption_off_is_no_warning() -> None:
    """'generate' only bites when the bridge encrypts; with encryption off it is not a problem."""
    off = report(facts(pickle_key="generate", account=None, encryption=False, crypto=False))
    assert codes(off) == ["no_crypto_store"] and off.status == "ok"
    on = report(facts(pickle_key="generate", account=None, encryption=True, crypto=False))
    assert "pickle_key_generate" in codes(on) and on.status == "warning"


SEVERITIES = ("error", "unknown", "warning", "info")  # worst first
STATUS = {"error": "broken", "unknown": "unknown", "warning": "warning", "info": "ok"}
EXIT = {"error": 1, "unknown": 2, "warning": 1, "info": 0}


@pytest.mark.parametrize(("a", "b"), list(itertools.product(SEVERITIES, repeat=2)))
def test_the_worst_finding_decides_status_and_exit_code(a: str, b: str) -> None:
    worst = min(a, b, key=SEVERITIES.index)
    for order in ((a, b), (b, a)):
        r = BridgeReport("x", [Finding(f"c_{s}", s, "s.") for s in order])  # type: ignore[arg-type]
        assert r.status == STATUS[worst], order
        assert exit_code([r]) == EXIT[worst], order


def test_a_broken_bridge_beside_an_unknown_one_exits_1() -> None:
    broken = BridgeReport("a", [Finding("x", "error", "s.")])
    unknown = BridgeReport("b", [Finding("y", "unknown", "s.")])
    assert exit_code([unknown, broken]) == exit_code([broken, unknown]) == 1
    assert exit_code([unknown]) == 2 and exit_code([]) == 2


def test_the_key_in_force_follows_the_binary_not_the_file() -> None:
    """A bridge that compiles its key in ignores whatever config.yaml says; 'generate' means a
    key only the bridge knows (so none we can name); otherwise the configured key is in force."""
    kb = load()
    discord, gmessages = kb.get("discord"), kb.get("gmessages")
    assert discord is not None and gmessages is not None
    assert discord.key_setting == "none" and discord.compiled_key
    for configured in (None, "generate", "a key the binary never reads"):
        assert in_force_key(discord, configured) == discord.compiled_key
    assert in_force_key(gmessages, "generate") is None
    assert in_force_key(gmessages, "the configured key") == "the configured key"
    assert in_force_key(gmessages, None) == gmessages.compiled_key


def test_a_stored_value_that_is_no_pickle_is_corrupt_and_tried_with_no_key() -> None:
    proof = prove(b"this is not base64 at all!", [Candidate("k", "configured")])
    assert proof.corrupt == "the stored pickle is not valid base64"
    assert proof.attempts == () and proof.mac_only == ()
    assert proof.opened_by is None and proof.account is None


LOST_STEPS = (
    "If you have an old config.yaml backup, look for encryption.pickle_key there and try it on "
    "the host: bridgedoctor check gmessages --try-key '<old key>'",
    "Otherwise reset the crypto store: `bridgedoctor reset gmessages` (it backs up and verifies "
    "first; portals, logins and messages stay, the bridge creates a new device; "
    "`bridgedoctor restore gmessages <id>` undoes it).",
)
PIN = 'matrix_bridge_mautrix_gmessages_bridge_encryption_pickle_key: "mautrix.bridge.e2ee"'


def test_a_key_lost_to_generate_says_why_and_pins_a_stable_key_before_the_reset() -> None:
    account = olm.Account().pickle("a key nobody wrote down")
    lost = report(facts(pickle_key="generate", account=account))
    (f,) = [f for f in lost.findings if f.code == "pickle_key_unknown"]
    assert f.severity == "error"
    assert f.summary == (
        "No known key opens the gmessages crypto account (10 candidates tried): the key is lost. "
        "Likely cause: the config says 'generate', so the key that encrypted the account was "
        "random and never saved. The way out is a crypto reset (clear the crypto tables, keep "
        "portals and logins); nothing is changed until you ask for it. If you know the old key, "
        "retry with --try-key."
    )
    assert f.fix is not None and f.fix.vars_yml == PIN
    assert f.fix.steps == (
        *LOST_STEPS,
        "Before the reset, pin a stable key with the snippet, so this cannot recur.",
        "Re-render the config and restart the bridge: just install-service mautrix-gmessages  "
        "(or: ansible-playbook -i inventory/hosts setup.yml --tags=install-mautrix-gmessages,start)",
    )
    assert [(v.naming, v.vars_yml) for v in f.fix.variants] == [("current", PIN)]
    # Another configured key: lost all the same, but nothing to pin and no 'generate' story.
    other = report(facts(pickle_key="something-else", account=account))
    (f,) = [f for f in other.findings if f.code == "pickle_key_unknown"]
    assert "Likely cause" not in f.summary and "(11 candidates tried)" in f.summary
    assert f.fix is not None and (f.fix.vars_yml, f.fix.steps, f.fix.variants) == (
        "",
        LOST_STEPS,
        (),
    )


def test_a_mismatch_names_what_the_config_has_and_the_key_that_opens_it() -> None:
    account = olm.Account().pickle("mautrix.bridge.e2ee")
    generate = report(facts(pickle_key="generate", account=account))
    (f,) = [f for f in generate.findings if f.code == "pickle_key_mismatch"]
    assert f.summary == (
        "Pickle key mismatch: the config has 'generate', but the crypto account was encrypted "
        'with "mautrix.bridge.e2ee" (MDAD default). The bridge fails with \'the supplied account '
        "key is invalid'."
    )
    off = report(facts(pickle_key="some-other-key", account=account, encryption=False))
    (f,) = [f for f in off.findings if f.code == "pickle_key_mismatch"]
    assert f.severity == "warning" and f.summary == (
        "Pickle key mismatch: the config has <secret key sha256:bb2c17c581>, but the crypto "
        'account was encrypted with "mautrix.bridge.e2ee" (MDAD default). Encryption is off '
        "now; enabling it would fail until the key is set."
    )


def test_sessions_under_another_key_are_counted() -> None:
    key = "mautrix.bridge.e2ee"
    account = olm.Account()

    def session(pickle_key: str) -> bytes:
        other = olm.Account()
        other.generate_one_time_keys(1)
        (otk,) = other.one_time_keys["curve25519"].values()
        return olm.OutboundSession(account, other.identity_keys["curve25519"], otk).pickle(
            pickle_key
        )

    f = facts(pickle_key=key, account=account.pickle(key))
    samples = {"olm_session": (session(key), session(key), session("another key"))}
    f = dataclasses.replace(f, db=dataclasses.replace(f.db, samples=samples))
    (found,) = [x for x in report(f).findings if x.code == "sessions_other_key"]
    assert found.summary == (
        'The account opens with "mautrix.bridge.e2ee", but 1 of 3 sampled Olm sessions do not: '
        "part of the store was written with another key and cannot be decrypted."
    )


def test_a_bridge_without_a_default_key_is_pinned_to_mdads_generic_one() -> None:
    f = facts(pickle_key="generate", account=olm.Account().pickle("a key nobody wrote down"))
    f = dataclasses.replace(f, spec=dataclasses.replace(GMESSAGES, default_key=None))
    (lost,) = [x for x in report(f).findings if x.code == "pickle_key_unknown"]
    assert lost.fix is not None and lost.fix.vars_yml == PIN


def test_a_mismatch_on_a_compiled_in_key_says_mdad_cannot_set_it() -> None:
    from bridgedoctor.facts import DbFacts, StoredAccount
    from tests.support import facts as F

    account = StoredAccount("", "DEV", olm.Account().pickle("mautrix.bridge.e2ee"))
    db = DbFacts(kind="postgres", location="h/db", tables=CRYPTO_TABLES, versions={},
                 owner=None, accounts=(account,), samples={})  # fmt: skip
    (f,) = F.report("discord", db=db).findings
    assert (f.code, f.severity, f.fix) == ("pickle_key_mismatch", "error", None)
    assert f.summary == (
        "Pickle key mismatch: the config has None, but the crypto account was encrypted with "
        '"mautrix.bridge.e2ee" (known mautrix key). The bridge fails with \'the supplied account '
        "key is invalid'. MDAD cannot set the key of discord (it is compiled into the bridge), so "
        "this store was written by a different build; restore the matching image or reset crypto."
    )
