"""Build BridgeFacts directly, for rule tests that need no files, database or systemd."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bridgedoctor import logline
from bridgedoctor.facts import (
    AppserviceFacts,
    BridgeFacts,
    ConfigFacts,
    DbFacts,
    HomeserverFacts,
    JournalFacts,
    ProbeError,
    RegistrationFacts,
    ServiceFacts,
    UnitFacts,
)
from bridgedoctor.findings import BridgeReport
from bridgedoctor.knowledge import load
from bridgedoctor.naming import NamingDecision
from bridgedoctor.probes.config import token_digest
from bridgedoctor.rules import RuleContext, evaluate

ROOT = Path("/matrix")
NOW = 10_000_000_000  # µs since boot, "now" for journals below


def ctx(naming: str = "current") -> RuleContext:
    return RuleContext(kb=load(), naming=NamingDecision(naming, "test"))  # type: ignore[arg-type]


def appservice(as_token: str = "as-token-1", hs_token: str = "hs-token-1") -> AppserviceFacts:
    return AppserviceFacts(
        id="x",
        address="http://x:8080",
        as_token=token_digest(as_token),
        hs_token=token_digest(hs_token),
    )


def config(bridge: str = "whatsapp", **kw: object) -> ConfigFacts:
    layout = load().bridges[bridge].framework
    base = ConfigFacts(
        path=ROOT / f"mautrix-{bridge}" / "config" / "config.yaml",
        layout=layout,
        encryption_allow=True,
        pickle_key=load().bridges[bridge].default_key if layout == "bridgev2" else None,
        db_type="postgres",
        db_uri="postgres://u:p@matrix-postgres/db",
        appservice=appservice(),
        msc4190=False if layout == "bridgev2" else None,
        double_puppet=(("example.com", "as_token"),) if layout == "bridgev2" else (),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def registration(bridge: str = "whatsapp", **kw: object) -> RegistrationFacts:
    base = RegistrationFacts(
        path=ROOT / f"mautrix-{bridge}" / "config" / "registration.yaml",
        appservice=appservice(),
        msc4190=False,
        mtime=1_000.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def homeserver(bridges: tuple[str, ...] = ("whatsapp",), **kw: object) -> HomeserverFacts:
    base = HomeserverFacts(
        config=ROOT / "synapse" / "config" / "homeserver.yaml",
        app_service_files=tuple(f"/matrix-mautrix-{b}-registration.yaml" for b in bridges),
        mounts={
            f"/matrix-mautrix-{b}-registration.yaml": ROOT
            / f"mautrix-{b}"
            / "config"
            / "registration.yaml"
            for b in bridges
        },
        started_at=2_000.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def service(bridge: str = "whatsapp", state: str = "running", **kw: object) -> ServiceFacts:
    """A unit in one of the shapes systemd shows: running (up 1 h), crash_loop (between two
    restarts), start_pre (the next start under way: systemd forgot the exit), failed, stopped."""
    shapes: dict[str, dict[str, object]] = {
        "running": dict(active_state="active", sub_state="running", result="success", age=3600.0),
        "crash_loop": dict(
            active_state="activating",
            sub_state="auto-restart",
            result="exit-code",
            exit_code="exited",
            exit_status=1,
            restarts=7,
            age=20.0,
        ),
        "start_pre": dict(
            active_state="activating",
            sub_state="start-pre",
            result="success",
            restarts=7,
            main_start_mono=0,
            age=None,
        ),
        "failed": dict(
            active_state="failed",
            sub_state="failed",
            result="start-limit-hit",
            exit_code="exited",
            exit_status=1,
            restarts=0,
            age=100.0,
        ),
        "stopped": dict(active_state="inactive", sub_state="dead", result="success", age=500.0),
    }
    base = ServiceFacts(
        unit=f"matrix-mautrix-{bridge}.service",
        load_state="loaded",
        active_state="active",
        sub_state="running",
        result="success",
        exit_code="",
        exit_status=None,
        restarts=0,
        main_start_mono=NOW - 3_600_000_000,
        active_enter_mono=NOW - 3_600_000_000,
        age=3600.0,
    )
    return replace(base, **{**shapes[state], **kw})  # type: ignore[arg-type]


def journal(
    *lines: str,
    previous: tuple[str, ...] = (),
    ago: float = 5.0,
    last_exit: tuple[str, int] | None = None,
    bridge: str = "whatsapp",
) -> JournalFacts:
    """Lines as a bridge printed them (raw), received `ago` seconds before NOW."""
    at = NOW - int(ago * 1e6)
    return JournalFacts(
        unit=f"matrix-mautrix-{bridge}.service",
        lines=tuple(logline.group(logline.parse(x, mono=at) for x in lines)),
        previous=tuple(logline.group(logline.parse(x, mono=at) for x in previous)),
        read_mono=NOW,
        last_exit=last_exit,
    )


def facts(
    bridge: str = "whatsapp",
    *,
    cfg: ConfigFacts | ProbeError | None = None,
    db: DbFacts | ProbeError | None = None,
    svc: ServiceFacts | ProbeError | None = None,
    lines: JournalFacts | ProbeError | None = None,
    reg: RegistrationFacts | ProbeError | None = None,
    hs: HomeserverFacts | ProbeError | None = None,
) -> BridgeFacts:
    spec = load().bridges[bridge]
    return BridgeFacts(
        spec=spec,
        base_dir=ROOT / spec.dirname,
        unit=UnitFacts(
            path=Path(f"/etc/systemd/system/{spec.service}.service"),
            image=spec.image,
            tag="v0.2608.0",
        ),
        config=cfg if cfg is not None else config(bridge),
        db=db,
        service=svc,
        journal=lines,
        registration=reg,
        homeserver=hs,
    )


def report(bridge: str = "whatsapp", **kw: object) -> BridgeReport:
    return evaluate(facts(bridge, **kw), ctx())  # type: ignore[arg-type]


def codes(r: BridgeReport) -> list[str]:
    return [f.code for f in r.findings]
