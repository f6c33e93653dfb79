"""The whole chaos suite of issue #9 (tests/support/chaos.py; its bounded part is
tests/test_reset_chaos.py), with figures:

    scripts/chaos [--trials 40] [--rows 2000000] [--engines postgres,sqlite] [--seed 9]
                  [--no-every-step]

Per engine: one MDAD host whose bridge store holds ROWS session rows (genuine pickles repeated,
bench/bulk.py) and a stand-in bridge writing while its unit is active; one clean run of each
operation (its time bounds the random kill moments); then a trial at every step each operation
records (with or without a reboot) and at each disk-full moment, then TRIALS seeded random ones.
Prints one line per trial and the figures; exits 1 if any trial ends otherwise than untouched or
fully reset with a restorable backup, the unit as it was, nothing left blocking, no row lost.
Needs root (tmpfs mounts). Starts its own PostgreSQL unless BRIDGEDOCTOR_TEST_PG is set.
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import load, machine  # noqa: E402
from tests.support.chaos import OPS, Result, World, plan  # noqa: E402
from tests.support.pg import TempCluster, from_env  # noqa: E402
from tests.support.reset_env import fake_systemd  # noqa: E402


def label(r: Result) -> str:
    """Outcomes named from the admin's side: a restore either happened or did not."""
    if r.trial.op.startswith("restore"):
        return "restored" if r.outcome == "untouched" else "not restored"
    return r.outcome


def engine_run(engine: str, args: argparse.Namespace, pg: object, tmp: Path) -> list[Result]:
    rng = random.Random(f"{args.seed}-{engine}")
    sd = fake_systemd(tmp)
    try:
        t0 = time.monotonic()
        world = World(tmp, pg if engine == "postgres" else None, engine, args.rows, sd)  # type: ignore[arg-type]
        built = time.monotonic() - t0
        world.calibrate()
        print(
            f"\n== {engine}: {args.rows} session rows (+ a few fixed rows), built in {built:.0f} s"
        )
        print(
            "   uninterrupted: "
            + ", ".join(f"{op} {world.seconds[op]:.1f} s" for op in OPS)
            + f"; disk trials on a {world.disk_size()} tmpfs"
        )
        every = not args.no_every_step
        trials = plan(rng, every_step=every, random_trials=args.trials, helper_steps=every)
        out = []
        for i, t in enumerate(trials, 1):
            try:
                r = world.trial(t, rng)
            except Exception as e:  # noqa: BLE001 - the run goes on to print its figures
                r = Result(t, outcome="(the trial itself failed)", problems=[repr(e)[-600:]])
            out.append(r)
            mark = "ok " if not r.problems else "BAD"
            extras = [x for x, on in (("reboot", t.reboot), ("unit stopped", not t.active),
                      (t.disk, t.disk != "ok"), ("recovery killed", t.kill_recovery),
                      ("helper", t.via == "helper")) if on]  # fmt: skip
            print(
                f"{mark} {i:3d} {t.op:14s} kill {t.kill:17s} after {r.killed_after or '-':20s} "
                f"{label(r):13s} {r.seconds:6.1f} s  bridge rows {r.bridge_rows:4d}  "
                + ", ".join(extras),
                flush=True,
            )
            if r.said and label(r) in ("untouched", "not restored"):  # why it changed nothing
                print(f"      it said: {r.said}")
            for p in r.problems:
                print(f"      {p}")
            if r.outcome == "(the trial itself failed)":
                break  # the store is in no known state: later trials would judge nothing
        return out
    finally:
        sd.kill()


def figures(engine: str, results: list[Result]) -> None:
    secs = [r.seconds for r in results]
    by = collections.Counter((r.trial.op, label(r)) for r in results)
    bad = [r for r in results if r.problems]
    print(f"-- {engine}: {len(results)} trials, {len(bad)} with problems")
    for op in OPS:
        row = {o: n for (o2, o), n in by.items() if o2 == op}
        print(f"   {op:14s} " + ", ".join(f"{o} {n}" for o, n in sorted(row.items())))
    killed = sum(1 for r in results if r.killed_after != "(ran to its end)")
    lost = (
        "none lost" if not any("lost" in p for r in results for p in r.problems) else "SOME LOST"
    )
    print(
        f"   killed mid-operation {killed}; trials through the helper "
        f"{sum(r.trial.via == 'helper' for r in results)}, reboots "
        f"{sum(r.trial.reboot for r in results)}, full disks "
        f"{sum(r.trial.disk != 'ok' for r in results)}, recovery killed "
        f"{sum(r.trial.kill_recovery for r in results)}, unit stopped by the admin "
        f"{sum(not r.trial.active for r in results)}; rows the bridge wrote during trials "
        f"{sum(r.bridge_rows for r in results)}, {lost}"
    )
    if secs:
        print(
            f"   trial time: min {min(secs):.1f} s, median {statistics.median(secs):.1f} s, "
            f"max {max(secs):.1f} s, total {sum(secs) / 60:.1f} min"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40, help="random trials per engine")
    ap.add_argument("--rows", type=int, default=2_000_000, help="session rows in the store")
    ap.add_argument("--engines", default="postgres,sqlite")
    ap.add_argument("--seed", default="9")
    ap.add_argument("--no-every-step", action="store_true", help="only the random trials")
    args = ap.parse_args()
    print("\n".join(machine()))
    print(f"{load()}; seed {args.seed}")
    started = time.monotonic()
    server, cluster = from_env(), None
    if server is None:
        cluster = TempCluster()
        server = cluster.start()
    all_results: dict[str, list[Result]] = {}
    try:
        for engine in args.engines.split(","):
            with tempfile.TemporaryDirectory(prefix=f"chaos-{engine}-") as tmp:
                all_results[engine] = engine_run(engine, args, server, Path(tmp))
    finally:
        if cluster is not None:
            cluster.stop()
    print()
    for engine, results in all_results.items():
        figures(engine, results)
    print(f"whole run {(time.monotonic() - started) / 60:.1f} min; {load()}")
    return 1 if any(r.problems for rs in all_results.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
