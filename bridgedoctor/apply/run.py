"""Entry points: plan an apply, run it, plan and run its undo, recover after a crash.

Everything that changes runs under the bridge's lock (reset/lock.held, shared with resets and
restores: one change per bridge at a time), after the recovery of any apply a crash left behind.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import pickle
from ..diagnose import Options, gather, lookup
from ..facts import ConfigFacts, DbFacts, ProbeError
from ..findings import Finding
from ..fixes import key_fix
from ..knowledge import BridgeSpec, load
from ..naming import decide
from ..proof import candidates, in_force_key, prove
from ..reset import lock, services
from ..reset.engine import crashpoint
from ..reset.errors import ResetError
from ..reset.manifest import now, unfinished_dirs
from ..reset.paths import private_dir
from ..reset.plan import new_id
from ..reset.run import RestorePlan
from ..rules.context import RuleContext
from . import edit, files
from .errors import ApplyError
from .plan import ApplyPlan
from .record import FINAL, ApplyRecord, all_for

Confirm = Callable[[ApplyPlan], bool]
ConfirmUndo = Callable[[RestorePlan], bool]
MODE = "apply"


@dataclass(frozen=True)
class Target:
    spec: BridgeSpec
    unit: str
    base: Path
    config: Path
    key: str  # the proven key: only ever written into config.yaml, never shown


def _requester() -> str:
    try:
        return f"{getpass.getuser()} (uid {os.getuid()})"
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


async def _target(name: str, opts: Options) -> tuple[Target, ApplyPlan, files.Original]:
    """Read-only: the proven key, the file, the plan (without id and backup dir yet)."""
    kb = load()
    spec = lookup(name, kb)
    if isinstance(spec, Finding):
        raise ApplyError(spec.summary, usage=True)
    if spec.key_setting == "none":
        raise ApplyError(
            f"The pickle key of {spec.name} is compiled into the bridge: config.yaml has no key "
            "to set, nothing to apply."
        )
    facts = await gather(spec, opts)
    cfg = facts.config
    if isinstance(cfg, ProbeError):
        raise ApplyError(f"{cfg.message} Nothing was changed.", usage=True)
    assert isinstance(cfg, ConfigFacts)
    if cfg.layout != "bridgev2":
        raise ApplyError(
            f"{cfg.path} is in the {cfg.layout} layout, which has no encryption.pickle_key; "
            "nothing to apply."
        )
    db = facts.db
    if isinstance(db, ProbeError) or db is None:
        why = db.message if isinstance(db, ProbeError) else "it was not read"
        raise ApplyError(f"Cannot read the {spec.name} database: {why} Nothing was changed.")
    key, origin = _proven(spec, cfg, db, opts)
    naming = decide(spec, facts.unit, opts.naming)
    ctx = RuleContext(kb=kb, naming=naming, reveal_keys=opts.reveal_keys)
    configured = cfg.pickle_key or ""
    if key == in_force_key(spec, cfg.pickle_key):
        raise ApplyError(
            f"config.yaml already has the key that opens the {spec.name} store "
            f"({ctx.show(key)}); nothing to apply. `bridgedoctor check {spec.name}` says "
            "whether vars.yml should pin it."
        )
    base = facts.base_dir
    unit_dir = facts.unit.config_dir if facts.unit and facts.unit.config_dir else None
    path = (unit_dir or base / "config") / "config.yaml"
    original = files.read(path, base)
    edit.locate(original.data.decode("utf-8", "replace"))  # refuse early if it cannot be edited
    fix = key_fix(spec, ctx.snippet_key(key), naming, kb)
    unit = f"{spec.service}.service"
    plan = ApplyPlan(
        bridge=spec.name,
        unit=unit,
        was_active=services.is_active(unit),
        config=str(path),
        config_sha256=original.sha256,
        key_from=ctx.show(configured),
        key_to=ctx.show(key),
        key_to_id=pickle.fingerprint(key),
        origin=origin,
        backup_dir="",
        id="",
        vars_yml=fix.vars_yml if fix else "",
        pin_steps=fix.steps if fix else (),
    )
    return Target(spec, unit, base, path, key), plan, original


def _proven(spec: BridgeSpec, cfg: ConfigFacts, db: DbFacts, opts: Options) -> tuple[str, str]:
    if not db.accounts:
        raise ApplyError(
            f"The {spec.name} crypto store has no account yet, so no key can be proven; "
            "nothing to apply."
        )
    opened = set()
    origin = ""
    for acct in db.accounts:
        proof = prove(acct.pickle, candidates(spec, cfg.pickle_key, list(opts.try_keys), load()))
        if proof.opened_by is None:
            raise ApplyError(
                f"No known key opens the {spec.name} crypto account, so there is no key to "
                f"apply; `bridgedoctor check {spec.name}` shows the way out (a crypto reset)."
            )
        opened.add(proof.opened_by.key)
        origin = proof.opened_by.origin
    if len(opened) != 1:
        raise ApplyError(
            f"The {spec.name} store holds accounts that open with different keys; nothing to "
            "apply."
        )
    return opened.pop(), origin


async def prepare(
    name: str, opts: Options, backup_root: Path, ident: str | None = None
) -> tuple[Target, ApplyPlan, files.Original]:
    """The plan, with its id (a new one, or `ident` to re-plan what was shown before)."""
    target, plan, original = await _target(name, opts)
    bridge_dir = backup_root / target.spec.name
    if ident is not None and (bridge_dir / ident).exists():
        raise ApplyError(f"backup {ident} of {target.spec.name} already exists; plan again.")
    ident = ident or new_id(bridge_dir, MODE)
    plan = dataclasses.replace(plan, id=ident, backup_dir=str(bridge_dir / ident))
    return target, plan, original


async def apply(
    name: str,
    opts: Options,
    backup_root: Path,
    confirm: Confirm,
    requested_by: str | None = None,
    plan_id: str | None = None,
) -> ApplyRecord:
    bridge_dir = backup_root / name
    private_dir(backup_root)  # a backup anyone else could swap could be "restored" later
    bridge_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with lock.held(bridge_dir):
        await recover_locked(bridge_dir)
        target, plan, original = await prepare(name, opts, backup_root, plan_id)
        if not confirm(plan):
            raise ApplyError("not confirmed; nothing was changed.")
        new = edit.replace_pickle_key(original.data.decode("utf-8"), target.key)
        new_bytes = new.text.encode("utf-8")
        d = Path(plan.backup_dir)
        d.mkdir(mode=0o700)
        r = ApplyRecord(
            id=plan.id,
            bridge=plan.bridge,
            unit=plan.unit,
            requested_by=requested_by or _requester(),
            created_at=now(),
            location=str(d),
            config=plan.config,
            base=str(target.base),
            was_active=plan.was_active,
            before_sha256=original.sha256,
            after_sha256=files.sha256(new_bytes),
            uid=original.uid,
            gid=original.gid,
            file_mode=original.mode,
            key_from=plan.key_from,
            key_to=plan.key_to,
            extra={"vars_yml": plan.vars_yml, "pin_steps": list(plan.pin_steps)},
        )
        r.save()  # planned: a crash from here on leaves a record to recover by
        _write_backup(r.backup, original.data)
        crashpoint("apply_backup")
        r.step("backup")
        if files.sha256(r.backup.read_bytes()) != r.before_sha256:
            r.state, r.error = "rolled_back", "the backup did not read back as written"
            r.save()
            raise ApplyError(
                f"the backup {r.backup} does not read back as written; nothing was changed."
            )
        r.step("verify", "backed_up")
        files.replace(Path(r.config), target.base, original.data, new_bytes, original)
        crashpoint("apply_write")
        r.step("write", "written")
        _restart(r)
        return r


def _write_backup(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _restart(r: ApplyRecord) -> None:
    undoing = r.state == "undoing"
    try:
        services.restart(r.unit)
    except ResetError as e:  # the file is changed either way: say so, keep the undo
        r.state, r.error = ("undone" if undoing else "failed"), str(e)
        r.save()
        what = "is back as before the apply" if undoing else "now holds the proven key"
        undo = "" if undoing else f" Undo: bridgedoctor restore {r.bridge} {r.id}"
        raise ApplyError(
            f"{r.config} {what}, but restarting {r.unit} failed: {e}{undo}", touched=True
        ) from None
    r.step("restart", "undone" if undoing else "done")


# --- undo -----------------------------------------------------------------------------------


def _record(bridge_dir: Path, ident: str) -> ApplyRecord:
    r = next((x for x in all_for(bridge_dir) if x.id == ident), None)
    if r is None:
        raise ApplyError(f"no apply {ident} in {bridge_dir}.", usage=True)
    return r


def _live_sha(r: ApplyRecord) -> str:
    return files.read(Path(r.config), Path(r.base)).sha256


def undo_plan(name: str, ident: str, backup_root: Path) -> RestorePlan:
    """Read-only: putting config.yaml back as it was before apply `ident`."""
    spec = lookup(name, load())
    if isinstance(spec, Finding):
        raise ApplyError(spec.summary, usage=True)
    r = _record(backup_root / spec.name, ident)
    _undoable(r)
    return RestorePlan(
        bridge=r.bridge,
        backup=r.id,
        mode=MODE,
        unit=r.unit,
        was_active=services.is_active(r.unit),
        location=r.location,
        backed_up_at=r.created_at,
        put_back=f"{r.config} exactly as it was before the apply (sha256 {r.before_sha256[:12]})",
        lost=f"the key the apply wrote ({r.key_to}); the bridge fails as before",
    )


def _undoable(r: ApplyRecord) -> None:
    if "write" not in r.done_steps():
        raise ApplyError(f"apply {r.id} never wrote config.yaml; there is nothing to undo.")
    if r.state == "undone":
        raise ApplyError(f"apply {r.id} was undone already; config.yaml is as before it.")
    live = _live_sha(r)
    if live == r.before_sha256:
        raise ApplyError(f"{r.config} is already as before apply {r.id}; nothing to undo.")
    if live != r.after_sha256:
        raise ApplyError(
            f"{r.config} changed since apply {r.id} (a playbook run renders it again); putting "
            "the old file back would undo that too, so nothing was changed."
        )
    if files.sha256(r.backup.read_bytes()) != r.before_sha256:
        raise ApplyError(f"the backup {r.backup} is damaged; nothing was changed.")


async def undo(
    name: str,
    ident: str,
    backup_root: Path,
    confirm: ConfirmUndo,
    requested_by: str | None = None,
) -> ApplyRecord:
    bridge_dir = backup_root / name
    private_dir(backup_root)
    with lock.held(bridge_dir):
        await recover_locked(bridge_dir)
        plan = undo_plan(name, ident, backup_root)
        if not confirm(plan):
            raise ApplyError("not confirmed; nothing was changed.")
        r = _record(bridge_dir, ident)
        r.undone_by = requested_by or _requester()
        r.state = "undoing"
        r.save()
        _put_back(r)
        _restart(r)
        return r


def _put_back(r: ApplyRecord) -> None:
    live = files.read(Path(r.config), Path(r.base))
    if live.sha256 == r.before_sha256:
        return  # already put back (a crash after the rename)
    owner = files.Original(b"", r.uid, r.gid, r.file_mode)
    files.replace(Path(r.config), Path(r.base), live.data, r.backup.read_bytes(), owner)
    crashpoint("apply_put_back")
    r.step("put_back")


# --- recovery -------------------------------------------------------------------------------


async def recover_locked(bridge_dir: Path) -> list[ApplyRecord]:
    """Finish or roll back every apply (or undo) a crash interrupted. config.yaml is replaced
    by one rename, so it is either the old or the new file: the record is brought to match it,
    and the unit restarted when the file was changed."""
    out = []
    for r in all_for(bridge_dir):
        if r.state in FINAL:
            continue
        out.append(r)
        try:
            _recover(r)
        except ApplyError as e:
            if r.state not in FINAL:  # _restart records its own failure
                r.state, r.error = "failed", f"interrupted, then: {e}"
                r.save()
    return out


def _recover(r: ApplyRecord) -> None:
    if r.state == "undoing":
        _put_back(r)
        _restart(r)
        return
    live = _live_sha(r)
    if live == r.after_sha256:  # the rename happened: finish
        if "write" not in r.done_steps():
            r.step("write", "written")
        _restart(r)
    elif live == r.before_sha256:
        r.state, r.error = "rolled_back", "interrupted before config.yaml was written"
        r.save()
    else:
        r.state, r.error = "failed", "interrupted, and config.yaml changed since"
        r.save()


async def recover(backup_root: Path) -> list[ApplyRecord]:
    """At the helper's start and before every apply or undo (under each bridge's lock)."""
    out: list[ApplyRecord] = []
    for d in unfinished_dirs(backup_root, ApplyRecord, FINAL):
        try:
            with lock.held(d):
                out += await recover_locked(d)
        except ResetError:
            continue  # another process holds the lock and finishes its own work
    return out
