"""Benchmark: `check all` on a full MDAD fleet, the key proof on its own, and a crypto reset plus
restore (backup, verify, clear, put back) with a fake systemctl on PATH.

    .venv/bin/python scripts/bench.py [--rounds N]

Prints figures; asserts nothing. Starts a throwaway PostgreSQL like the tests do.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import olm  # noqa: E402

from bridgedoctor import pickle  # noqa: E402
from bridgedoctor.diagnose import Options, check_all  # noqa: E402
from bridgedoctor.knowledge import load  # noqa: E402
from bridgedoctor.proof import candidates, prove  # noqa: E402
from tests.fixtures import mdad  # noqa: E402
from tests.support.fleet import Host, flavour, mdad_default_key  # noqa: E402
from tests.support.pg import TempCluster  # noqa: E402
from tests.support.store import StoreSpec  # noqa: E402


def timed(rounds: int, fn) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def show(label: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"{label:<52} median {statistics.median(ms):9.3f} ms   p95 {p95:9.3f} ms   n={len(ms)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    rounds = ap.parse_args().rounds

    kb = load()
    acct = olm.Account()
    acct.generate_one_time_keys(50)
    stored = acct.pickle("never-a-candidate")
    cands = candidates(kb.bridges["slack"], "maunium.net/go/mautrix-whatsapp", [], kb)
    show(
        f"key proof, lost key ({len(cands)} candidates)",
        timed(rounds * 10, lambda: prove(stored, cands)),
    )
    env = pickle.decode(stored)
    show("one candidate (HKDF + HMAC)", timed(rounds * 50, lambda: pickle.mac_matches(env, b"k")))

    cluster = TempCluster()
    server = cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            host = Host.at(Path(tmp) / "pg", server)
            for b in mdad.BRIDGES:
                key = "go.mau.fi/mautrix-gmessages" if b == "gmessages" else mdad_default_key(b)
                host.add(b, StoreSpec(b, flavour=flavour(b), account_key=key))
            opts = Options(
                root=host.root, systemd_dir=host.systemd, db_host=f"{server.host}:{server.port}"
            )
            show(
                f"check all, {len(mdad.BRIDGES)} bridges, PostgreSQL",
                timed(rounds, lambda: asyncio.run(check_all(opts))),
            )
            from tests.support.sample import write

            sample = write(Path(tmp) / "sqlite")
            sopts = Options(root=sample.root, systemd_dir=sample.systemd)
            show(
                "check all, sample fleet (8 bridges), SQLite",
                timed(rounds, lambda: asyncio.run(check_all(sopts))),
            )
            bench_reset(host, opts, Path(tmp), max(3, rounds // 4))
    finally:
        cluster.stop()


def bench_reset(host: Host, opts: Options, tmp: Path, rounds: int) -> None:
    import os

    from bridgedoctor.reset import run as runner
    from tests.support.reset_env import fake_systemd

    (tmp / "systemd").mkdir()
    sd = fake_systemd(tmp / "systemd")
    os.environ.update(sd.env())
    sd.set("matrix-mautrix-whatsapp.service", "active")
    backups = tmp / "backups"
    ids: list[str] = []

    def reset() -> None:
        m = asyncio.run(runner.reset("whatsapp", "crypto", opts, backups, lambda p: True, "bench"))
        ids.append(m.id)

    def restore() -> None:
        asyncio.run(runner.restore("whatsapp", ids.pop(0), opts, backups, lambda p: True, "bench"))

    reset_ms, restore_ms = [], []
    for _ in range(rounds):  # alternate, so every reset starts from the full store
        reset_ms += timed(1, reset)
        restore_ms += timed(1, restore)
    show("crypto reset, whatsapp, PostgreSQL (fake systemctl)", reset_ms)
    show("restore of that backup", restore_ms)


if __name__ == "__main__":
    main()
