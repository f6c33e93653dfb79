"""Bridge databases with real libolm crypto stores (python-olm pickles), in PostgreSQL or SQLite.

The DDL follows the mautrix-go crypto store (crypto_version v21 with compat) and the bridgev2
main tables, or the mautrix-python crypto store (crypto_version without compat).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg
import olm
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bridgedoctor import knowledge

from .pg import PgServer

GO_CRYPTO = """
CREATE TABLE crypto_version (version INTEGER, compat INTEGER);
CREATE TABLE crypto_account (account_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, shared BOOLEAN NOT NULL,
  sync_token TEXT NOT NULL, account {B} NOT NULL, key_backup_version TEXT NOT NULL DEFAULT '');
CREATE TABLE crypto_olm_session (account_id TEXT, session_id CHAR(43), sender_key CHAR(43), session {B} NOT NULL,
  created_at TIMESTAMP, last_decrypted TIMESTAMP, last_encrypted TIMESTAMP, PRIMARY KEY (account_id, session_id));
CREATE TABLE crypto_olm_message_hash (account_id TEXT NOT NULL REFERENCES crypto_account(account_id) ON DELETE CASCADE,
  received_at BIGINT NOT NULL, message_hash {B} PRIMARY KEY);
CREATE TABLE crypto_megolm_inbound_session (account_id TEXT, session_id CHAR(43), sender_key CHAR(43),
  signing_key CHAR(43), room_id TEXT, session {B}, forwarding_chains {B}, withheld_code TEXT,
  PRIMARY KEY (account_id, session_id));
CREATE TABLE crypto_megolm_outbound_session (account_id TEXT, room_id TEXT, session_id CHAR(43) UNIQUE,
  session {B} NOT NULL, shared BOOLEAN NOT NULL, max_messages INTEGER, message_count INTEGER,
  max_age BIGINT, created_at TIMESTAMP, last_used TIMESTAMP, PRIMARY KEY (account_id, room_id));
CREATE TABLE crypto_tracked_user (user_id TEXT PRIMARY KEY, devices_outdated BOOLEAN NOT NULL DEFAULT false);
CREATE TABLE crypto_device (user_id TEXT, device_id TEXT, identity_key CHAR(43), signing_key CHAR(43),
  trust SMALLINT, deleted BOOLEAN, name TEXT, PRIMARY KEY (user_id, device_id));
CREATE TABLE crypto_secrets (account_id TEXT NOT NULL DEFAULT '', name TEXT NOT NULL, secret {B} NOT NULL,
  PRIMARY KEY (account_id, name));
"""
PY_CRYPTO = """
CREATE TABLE crypto_version (version INTEGER PRIMARY KEY);
CREATE TABLE crypto_account (account_id TEXT PRIMARY KEY, device_id TEXT, shared BOOLEAN, sync_token TEXT,
  account {B});
CREATE TABLE crypto_olm_session (session_id CHAR(43) PRIMARY KEY, sender_key CHAR(43), session {B},
  created_at TIMESTAMP, last_decrypted TIMESTAMP, account_id TEXT);
CREATE TABLE crypto_megolm_inbound_session (session_id CHAR(43) PRIMARY KEY, sender_key CHAR(43),
  signing_key CHAR(43), room_id TEXT, session {B}, forwarding_chains TEXT, account_id TEXT);
CREATE TABLE crypto_megolm_outbound_session (room_id TEXT PRIMARY KEY, session_id CHAR(43) UNIQUE,
  session {B}, shared BOOLEAN, max_messages INTEGER, message_count INTEGER, max_age BIGINT,
  created_at TIMESTAMP, last_used TIMESTAMP, account_id TEXT);
"""
BRIDGEV2_MAIN = """
CREATE TABLE version (version INTEGER, compat INTEGER);
CREATE TABLE mx_version (version INTEGER, compat INTEGER);
CREATE TABLE database_owner (key INTEGER PRIMARY KEY DEFAULT 0, owner TEXT NOT NULL);
CREATE TABLE kv_store (bridge_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (bridge_id, key));
CREATE TABLE portal (bridge_id TEXT NOT NULL, id TEXT NOT NULL, receiver TEXT NOT NULL DEFAULT '', mxid TEXT,
  name TEXT NOT NULL DEFAULT '', PRIMARY KEY (bridge_id, id, receiver));
CREATE TABLE user_login (bridge_id TEXT NOT NULL, user_mxid TEXT NOT NULL, id TEXT NOT NULL,
  remote_name TEXT NOT NULL DEFAULT '', PRIMARY KEY (bridge_id, id));
"""


@dataclass
class StoreSpec:
    """What to put in a bridge database."""

    bridge: str
    flavour: Literal["go", "python"] = "go"
    account_key: str | None = "mautrix.bridge.e2ee"  # None: crypto tables but no account row
    crypto_tables: bool = True
    session_key: str | None = None  # defaults to account_key; another value makes a mixed store
    owner: str | None = "megabridge"  # "megabridge" -> megabridge/<program>; "legacy" -> <program>
    migrated: bool = False  # leave database_was_migrated and *_old tables behind
    recovery_key: bool = False
    corrupt_account: bool = False
    empty: bool = False  # no tables at all
    device_id: str = "BRIDGEDEV1"
    extra: list[tuple[str, tuple]] = field(default_factory=list)  # run last (session_rows)


@dataclass
class BuiltStore:
    ed25519: str | None = None
    curve25519: str | None = None
    statements: list[tuple[str, tuple]] = field(default_factory=list)


def build(spec: StoreSpec, blob: str) -> BuiltStore:
    """DDL and rows for spec; SQL uses ? placeholders."""
    out = BuiltStore()
    if spec.empty:
        return out
    add = out.statements.append

    def ddl(text: str) -> None:
        for stmt in text.format(B=blob).split(";"):
            if stmt.strip():
                add((stmt.strip(), ()))

    ddl(
        BRIDGEV2_MAIN
        if spec.flavour == "go"
        else "CREATE TABLE version (version INTEGER PRIMARY KEY)"
    )
    if spec.flavour == "go":
        add(("INSERT INTO version VALUES (?, ?)", (29, 9)))
        add(("INSERT INTO mx_version VALUES (?, ?)", (11, 3)))
        if spec.owner:
            known = knowledge.load().get(spec.bridge)
            program = known.program if known else f"mautrix-{spec.bridge}"
            owner = (
                f"megabridge/{program}"
                if spec.owner == "megabridge"
                else (program if spec.owner == "legacy" else spec.owner)
            )
            add(("INSERT INTO database_owner (key, owner) VALUES (0, ?)", (owner,)))
        add(
            (
                "INSERT INTO portal (bridge_id, id, mxid, name) VALUES (?, ?, ?, ?)",
                ("", "chat1", "!portal1:example.com", "Family"),
            )
        )
        add(
            (
                "INSERT INTO user_login (bridge_id, user_mxid, id) VALUES (?, ?, ?)",
                ("", "@admin:example.com", "login1"),
            )
        )
        if spec.recovery_key:
            add(("INSERT INTO kv_store VALUES (?, ?, ?)", ("", "recovery_key", "EsTc abcd efgh")))
    else:
        add(("INSERT INTO version VALUES (?)", (10,)))
    if spec.migrated:
        ddl(
            "CREATE TABLE database_was_migrated (x INTEGER); CREATE TABLE portal_old (id TEXT);"
            " CREATE TABLE message_old (id TEXT)"
        )
    if not spec.crypto_tables:
        return out
    ddl(GO_CRYPTO if spec.flavour == "go" else PY_CRYPTO)
    add(
        ("INSERT INTO crypto_version VALUES (?, ?)", (21, 20))
        if spec.flavour == "go"
        else ("INSERT INTO crypto_version VALUES (?)", (10,))
    )
    if spec.account_key is None:
        return out
    acct = olm.Account()
    acct.generate_one_time_keys(3)
    out.ed25519 = acct.identity_keys["ed25519"]
    out.curve25519 = acct.identity_keys["curve25519"]
    pickled = acct.pickle(spec.account_key)
    if spec.corrupt_account:
        pickled = b"this is not a pickle!"
    add(
        (
            "INSERT INTO crypto_account (account_id, device_id, shared, sync_token, account) "
            "VALUES (?, ?, ?, ?, ?)",
            ("", spec.device_id, True, "s1_2_3", pickled),
        )
    )
    skey = spec.session_key if spec.session_key is not None else spec.account_key
    peer = olm.Account()
    peer.generate_one_time_keys(1)
    otk = next(iter(peer.one_time_keys["curve25519"].values()))
    olm_sess = olm.OutboundSession(acct, peer.identity_keys["curve25519"], otk)
    outbound = olm.OutboundGroupSession()
    inbound = olm.InboundGroupSession(outbound.session_key)
    add(
        (
            "INSERT INTO crypto_olm_session (account_id, session_id, sender_key, session) VALUES (?, ?, ?, ?)",
            ("", olm_sess.id[:43], peer.identity_keys["curve25519"], olm_sess.pickle(skey)),
        )
    )
    add(
        (
            "INSERT INTO crypto_megolm_inbound_session (account_id, session_id, sender_key, signing_key, "
            "room_id, session) VALUES (?, ?, ?, ?, ?, ?)",
            (
                "",
                inbound.id,
                out.curve25519,
                out.ed25519,
                "!portal1:example.com",
                inbound.pickle(skey),
            ),
        )
    )
    add(
        (
            "INSERT INTO crypto_megolm_outbound_session (account_id, room_id, session_id, session, shared, "
            "max_messages, message_count, max_age) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "",
                "!portal1:example.com",
                outbound.id,
                outbound.pickle(skey),
                True,
                100,
                1,
                604800000,
            ),
        )
    )
    out.statements.extend(spec.extra)
    return out


def seal(plain: bytes, key: str | bytes) -> bytes:
    """Our own libolm envelope (for crypto_secrets, which mautrix-go pickles as raw values, and
    for pickles python-olm would never write)."""
    raw_key = key.encode() if isinstance(key, str) else key
    okm = HKDF(algorithm=SHA256(), length=80, salt=None, info=b"Pickle").derive(raw_key)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plain) + padder.finalize()
    enc = Cipher(algorithms.AES(okm[:32]), modes.CBC(okm[64:80])).encryptor()
    ct = enc.update(data) + enc.finalize()
    mac = hmac.new(okm[32:64], ct, hashlib.sha256).digest()[:8]
    return base64.b64encode(ct + mac).rstrip(b"=")


def session_rows(
    key: str,
    *,
    olm_sessions: int = 0,
    inbound: int = 0,
    outbound: int = 0,
    secrets: int = 0,
    tag: str = "k",
) -> list[tuple[str, tuple]]:
    """INSERTs (mautrix-go tables) of genuine python-olm pickles under `key`, and sealed secrets.
    `tag` keeps ids unique between several calls for one store."""
    out: list[tuple[str, tuple]] = []
    acct, peer = olm.Account(), olm.Account()
    peer.generate_one_time_keys(max(olm_sessions, 1))
    otks = list(peer.one_time_keys["curve25519"].values())
    for i in range(olm_sessions):
        sess = olm.OutboundSession(acct, peer.identity_keys["curve25519"], otks[i])
        out.append(
            (
                "INSERT INTO crypto_olm_session (account_id, session_id, sender_key, session) "
                "VALUES (?, ?, ?, ?)",
                ("", f"{tag}-olm-{i}", peer.identity_keys["curve25519"], sess.pickle(key)),
            )
        )
    for i in range(inbound):
        group = olm.InboundGroupSession(olm.OutboundGroupSession().session_key)
        out.append(
            (
                "INSERT INTO crypto_megolm_inbound_session (account_id, session_id, sender_key, "
                "signing_key, room_id, session) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    "",
                    f"{tag}-in-{i}",
                    "s" * 43,
                    "g" * 43,
                    f"!{tag}{i}:example.com",
                    group.pickle(key),
                ),
            )
        )
    for i in range(outbound):
        group = olm.OutboundGroupSession()
        out.append(
            (
                "INSERT INTO crypto_megolm_outbound_session (account_id, room_id, session_id, "
                "session, shared, max_messages, message_count, max_age) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    "",
                    f"!{tag}-out{i}:example.com",
                    f"{tag}-out-{i}",
                    group.pickle(key),
                    True,
                    100,
                    0,
                    604800000,
                ),
            )
        )
    for i in range(secrets):
        out.append(
            (
                "INSERT INTO crypto_secrets (account_id, name, secret) VALUES (?, ?, ?)",
                ("", f"{tag}.secret.{i}", seal(f"secret value {i}".encode(), key)),
            )
        )
    return out


def write_sqlite(path: Path, spec: StoreSpec) -> BuiltStore:
    path.parent.mkdir(parents=True, exist_ok=True)
    built = build(spec, "BLOB")
    conn = sqlite3.connect(path)
    try:
        for sql, params in built.statements:
            conn.execute(sql, params)
        conn.commit()
    finally:
        conn.close()
    return built


def _pg_sql(sql: str) -> str:
    n = 0
    out = []
    for ch in sql:
        if ch == "?":
            n += 1
            out.append(f"${n}")
        else:
            out.append(ch)
    return "".join(out)


async def write_postgres(
    server: PgServer, dbname: str, user: str, password: str, spec: StoreSpec
) -> BuiltStore:
    """Create role and database (as MDAD's managed databases do) and fill them as spec says."""
    built = build(spec, "bytea")
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        exists = await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user)
        verb = "ALTER" if exists else "CREATE"
        await admin.execute(f"{verb} ROLE \"{user}\" LOGIN PASSWORD '{password}'")
        await admin.execute(
            f'CREATE DATABASE "{dbname}" OWNER "{user}" TEMPLATE template0 '
            "LC_CTYPE 'C' LC_COLLATE 'C'"
        )
    finally:
        await admin.close()
    conn = await asyncpg.connect(
        host=server.host, port=server.port, user=user, password=password, database=dbname
    )
    try:
        for sql, params in built.statements:
            await conn.execute(_pg_sql(sql), *params)
    finally:
        await conn.close()
    return built
