"""The plugin's waiting plans: a plan is taken once, only by who asked, where they asked, and
never after it expired (the timer that announces expiry may run late; `take` must not)."""

from __future__ import annotations

from bridgedoctor_maubot.pending import Busy, Registry

ADMIN, OTHER, ROOM, ELSEWHERE = "@admin:x", "@other:x", "!room:x", "!elsewhere:x"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def registry() -> tuple[Registry, Clock]:
    clock = Clock()
    return Registry(clock=clock), clock


def plan(reg: Registry, ttl: float = 60.0) -> str:
    return reg.add("reset", "gmessages", ADMIN, ROOM, "0123456789abcdef", "id", "crypto", ttl).code


def test_expired_plan_cannot_be_taken() -> None:
    reg, clock = registry()
    code = plan(reg, ttl=60)
    clock.now += 60  # the very moment it expires
    assert reg.take(code, ADMIN, ROOM) is None
    clock.now += 3600
    assert reg.take(code, ADMIN, ROOM) is None


def test_plan_is_taken_once_by_its_requester_before_expiry() -> None:
    reg, clock = registry()
    code = plan(reg, ttl=60)
    clock.now += 59.9
    assert reg.take(code, OTHER, ROOM) is None  # someone else
    assert reg.take(code, ADMIN, ELSEWHERE) is None  # another room
    taken = reg.take(code, ADMIN, ROOM)
    assert taken is not None and taken.code == code and taken.requester == ADMIN
    assert reg.take(code, ADMIN, ROOM) is None  # once only
    assert reg.waiting() == []


def test_wrong_code_takes_nothing() -> None:
    reg, _ = registry()
    code = plan(reg)
    assert reg.take("zzzzzz" if code != "zzzzzz" else "yyyyyy", ADMIN, ROOM) is None
    assert [p.code for p in reg.waiting()] == [code]


def test_a_busy_bridge_says_what_it_is_busy_with() -> None:
    reg, _ = registry()
    reg.claim("gmessages", "a reset plan is being prepared")
    try:
        reg.claim("gmessages", "a restore plan is being prepared")
    except Busy as b:
        assert str(b) == "gmessages is busy: a reset plan is being prepared."
    else:
        raise AssertionError("claimed a busy bridge twice")
    reg.claim("whatsapp", "another bridge is free")


def test_dropping_a_plan_frees_its_bridge_and_unknown_things_are_no_error() -> None:
    reg, _ = registry()
    reg.claim("gmessages", "a reset plan is being prepared")
    code = plan(reg)
    assert reg.by_event("$nothing") is None
    dropped = reg.drop(code)
    assert dropped is not None and dropped.code == code
    reg.claim("gmessages", "free again")  # would raise Busy if the drop kept it
    assert reg.drop(code) is None and reg.drop("zzzzzz") is None
    reg.release("never-claimed")
    reg.release("gmessages")
    reg.claim("gmessages", "free after release")
