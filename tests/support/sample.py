"""Write the bundled sample MDAD host: a SQLite-backed fleet with the classic breakages.

python -m tests.support.sample DIR      # DIR/matrix (the root) and DIR/systemd
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from .fleet import Host
from .store import StoreSpec

FLEET: list[tuple[str, StoreSpec, dict]] = [
    # gmessages installed before bridgev2: pickled with its legacy key, MDAD renders another.
    (
        "gmessages",
        StoreSpec("gmessages", account_key="go.mau.fi/mautrix-gmessages", migrated=True),
        {},
    ),
    # slack created while MDAD rendered `generate`: the random key was never saved.
    ("slack", StoreSpec("slack", account_key=secrets.token_hex(32)), {}),
    # signal set up with 2023 pre-release code.
    ("signal", StoreSpec("signal", account_key="maunium.net/go/mautrix-signal"), {}),
    ("whatsapp", StoreSpec("whatsapp", account_key="maunium.net/go/mautrix-whatsapp"), {}),
    ("meta-messenger", StoreSpec("meta-messenger"), {}),
    ("telegram", StoreSpec("telegram", account_key=None), {}),
    ("discord", StoreSpec("discord", account_key="maunium.net/go/mautrix-whatsapp"), {}),
    ("googlechat", StoreSpec("googlechat", flavour="python"), {}),
]


def write(dest: Path) -> Host:
    host = Host.at(dest)
    for bridge, store, kwargs in FLEET:
        host.add(bridge, store, engine="sqlite", **kwargs)
    return host


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.support.sample DIR")
    h = write(Path(sys.argv[1]))
    print(f"sample host: --root {h.root} --systemd-dir {h.systemd}")
