"""Which PostgreSQL database and role are a bridge's own: its pinned identity.

A bridge's config.yaml names the database and role to connect as, and the bridge's container
can write that file. Over MDAD's Postgres socket (trust authentication, as the postgres image
sets up local connections) any role name connects, so the URI alone could make a reset of one
bridge empty another bridge's database, or run the helper's queries as a superuser. So:

- the expected identity is MDAD's managed name (knowledge table: database = role =
  `matrix_mautrix_<bridge>`), or an explicit entry for custom setups (helper.yaml `databases:`,
  the CLI's `--db-name`);
- a URI naming another bridge's database or role is `foreign`: never connected to;
- resets, restores and backups run only on the bridge's own identity (`own`);
- after connecting, `verify` asks the server who we are (and refuses a superuser or a role
  with server-wide powers) before any other statement, with every name qualified so the
  database's own search_path cannot redirect that first query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .knowledge import NAME_RE as BRIDGE_RE
from .knowledge import BridgeSpec, Knowledge

# What an allowlist entry may hold: plain identifiers, nothing libpq would read as a
# connection string ("dbname=x host=y") or a URI.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.$-]{0,62}$")
MDAD_HOST = "matrix-postgres"
_HOST_RE = re.compile(r"[A-Za-z0-9_.:/\[\]-]{1,200}")
# Predefined roles whose members reach beyond one database (files, programs, all data).
POWERFUL_ROLES = (
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_signal_backend",
    "pg_create_subscription",
)
# The role names are the constants above, written into the statement; the powers come back as
# one text. No array parameter or column: asyncpg would introspect the array types with one more
# query on every connection (a round trip per bridge in `check all`).
WHO = (
    "SELECT pg_catalog.current_database()::pg_catalog.text, current_user::pg_catalog.text, "
    "r.rolsuper, r.rolcreaterole, r.rolreplication, r.rolbypassrls, "
    "(SELECT pg_catalog.string_agg(g.rolname::pg_catalog.text, ',') FROM pg_catalog.pg_roles g "
    "WHERE g.rolname::pg_catalog.text OPERATOR(pg_catalog.=) ANY (ARRAY["
    + ", ".join(f"'{role}'" for role in POWERFUL_ROLES)
    + "]::pg_catalog.text[]) AND pg_catalog.pg_has_role(r.oid, g.oid, 'USAGE')) "
    "FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user"
)


def who_and(also: str) -> str:
    """The identity query with one more column, `also`: a scalar subquery in which every name
    is pg_catalog-qualified (it runs before the answer is judged, maybe with powers). Saves
    the round trips of a statement of its own (check's table list, on every bridge)."""
    head, tail = WHO.split(" FROM pg_catalog.pg_roles r WHERE ", 1)
    return f"{head}, {also} FROM pg_catalog.pg_roles r WHERE {tail}"


@dataclass(frozen=True)
class DbPin:
    database: str
    user: str
    host: str | None = None  # a custom setup's server, when no db_host overrides the URI's

    def __str__(self) -> str:
        return (
            self.database if self.user == self.database else f"{self.database} (role {self.user})"
        )


Pins = Mapping[str, DbPin]


class IdentityRefused(Exception):
    """The server says the connection is not the bridge's own, or too powerful; str() is one
    sentence."""


def parse_pin(value: Any, bridge: str) -> DbPin:
    """`DATABASE`, `DATABASE:ROLE`, or a mapping {database, user[, host]}; ValueError with one
    sentence otherwise."""
    if isinstance(value, str):
        database, _, user = value.partition(":")
        value = {"database": database, "user": user or database}
    if not isinstance(value, Mapping) or set(value) - {"database", "user", "host"}:
        raise ValueError(
            f"the database entry for {bridge} must be DATABASE, DATABASE:ROLE or a mapping with "
            "database, user and optionally host."
        )
    database = value.get("database")
    user = value.get("user", database)
    host = value.get("host")
    for what, name in (("database", database), ("role", user)):
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise ValueError(
                f"the {what} name for {bridge} must be a plain identifier (letters, digits, "
                "_ . $ -), at most 63 characters."
            )
    if host is not None and not (
        isinstance(host, str) and re.fullmatch(r"[A-Za-z0-9_.:/\[\]-]{1,200}", host)
    ):
        raise ValueError(
            f"the database host for {bridge} must be a host name or socket directory."
        )
    return DbPin(str(database), str(user), host)


def parse_pins(raw: Any, where: str) -> dict[str, DbPin]:
    """helper.yaml `databases:` (bridge -> entry) or the CLI's `--db-name BRIDGE=ENTRY`
    values; ValueError with one sentence."""
    if isinstance(raw, list):
        pairs = []
        for item in raw:
            bridge, sep, entry = str(item).partition("=")
            if not sep:
                raise ValueError(
                    f"{where} takes BRIDGE=DATABASE[:ROLE], not '{short(str(item))}'."
                )
            pairs.append((bridge, entry))
    elif isinstance(raw, Mapping):
        pairs = list(raw.items())
    else:
        raise ValueError(f"{where} must map bridge names to their database.")
    out: dict[str, DbPin] = {}
    for bridge, entry in pairs:
        if not isinstance(bridge, str) or not BRIDGE_RE.fullmatch(bridge):
            raise ValueError(f"{where}: '{short(str(bridge))}' is not a bridge name.")
        out[bridge] = parse_pin(entry, bridge)
    return out


def expected(spec: BridgeSpec, pins: Pins) -> tuple[DbPin, ...]:
    """The identities that are this bridge's own."""
    if spec.name in pins:
        return (pins[spec.name],)
    return tuple(DbPin(n, n) for n in spec.db_names)


Verdict = Literal["own", "foreign", "unpinned"]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    pin: DbPin | None  # own: which of the expected identities
    other: str | None  # foreign: the bridge whose name it is
    expected: tuple[DbPin, ...]

    def named(self, database: str, user: str) -> str:
        """What the config names, and whose it is when foreign."""
        text = _named(database, user)
        return f"{text}, which belongs to the {self.other} bridge" if self.other else text

    def refusal(self, bridge: str, database: str, user: str) -> str:
        """Why a reset will not touch this database, as one sentence without a full stop."""
        if self.verdict == "foreign":
            return (
                f"{bridge}'s config.yaml names {self.named(database, user)}; a reset of "
                f"{bridge} must not touch it"
            )
        allowed = " or ".join(str(p) for p in self.expected)
        return (
            f"{bridge}'s config.yaml names {_named(database, user)}, not {bridge}'s own "
            f"database {allowed}; if it is right for this host, allow it with "
            f"'databases: {{{bridge}: {database}:{user}}}' in helper.yaml or "
            f"--db-name {bridge}={database}:{user}"
        )


def _named(database: str, user: str) -> str:
    return f"the database {short(database)} as role {short(user)}"


def short(name: str) -> str:
    """A name from a config file as it may appear in a sentence: escaped, bounded."""
    text = name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 64 else text[:61] + "..."


def owners(kb: Knowledge, pins: Pins) -> dict[str, str]:
    """Every pinned database and role name -> the bridge it belongs to."""
    out: dict[str, str] = {}
    for spec in kb.bridges.values():
        for p in expected(spec, pins):
            out.setdefault(p.database, spec.name)
            out.setdefault(p.user, spec.name)
    return out


def judge(spec: BridgeSpec, database: str, user: str, kb: Knowledge, pins: Pins) -> Judgement:
    mine = expected(spec, pins)
    for p in mine:
        if (p.database, p.user) == (database, user):
            return Judgement("own", p, None, mine)
    names = owners(kb, pins)
    for name in (database, user):
        other = names.get(name)
        if other is not None and other != spec.name:
            return Judgement("foreign", None, other, mine)
    return Judgement("unpinned", None, None, mine)


def host_allowed(host: str, pin: DbPin, db_host: str | None) -> bool:
    """With no db_host set, the URI's host is the bridge's choice: only MDAD's server (or the
    entry's own host) is accepted for a reset."""
    return db_host is not None or host in (MDAD_HOST, pin.host)


async def verify(conn: Any, pin: DbPin | None, statement: str = WHO) -> Any:
    """Before any other statement: who are we, really? Raises IdentityRefused. `statement`:
    WHO, or who_and(...) whose last column is returned once the identity is accepted."""
    row = await conn.fetchrow(statement)
    if row is None:
        raise IdentityRefused("the server does not know the role it says we are.")
    database, user, superuser, createrole, replication, bypassrls, powers = tuple(row)[:7]
    if pin is not None and (database, user) != (pin.database, pin.user):
        raise IdentityRefused(
            f"the connection is to the database {short(database)} as role {short(user)}, not "
            f"the bridge's own {pin}; nothing was read or changed."
        )
    extra = [
        word
        for word, has in (
            ("superuser", superuser),
            ("CREATEROLE", createrole),
            ("REPLICATION", replication),
            ("BYPASSRLS", bypassrls),
        )
        if has
    ] + [p for p in (powers or "").split(",") if p]
    if extra:
        raise IdentityRefused(
            f"the role {short(user)} is {', '.join(extra)}; bridgedoctor does not run queries "
            "with such powers in a database the bridge can write (the bridge could make them "
            "run its own code). Give the bridge a role of its own, as MDAD does."
        )
    return tuple(row)[7] if len(row) > 7 else None
