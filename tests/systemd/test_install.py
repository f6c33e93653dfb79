"""The helper installed on an MDAD host exactly as docs/helper.md says, run by real systemd."""

from __future__ import annotations

import re

from tests.support.nspawn import Machine

from .mdad_host import HELPER, MdadHost, install_commands

UNIT = "bridgedoctor-helper.service"
FILES = (
    "/etc/bridgedoctor/token",
    "/etc/bridgedoctor/helper.yaml",
    "/etc/systemd/system/bridgedoctor-helper.service",
    "/etc/systemd/system/bridgedoctor-helper.service.d/reset.conf",
    "/etc/tmpfiles.d/bridgedoctor.conf",
)


def docs_install(m: Machine, *extra: str) -> str:
    cmd = next(c for c in install_commands() if "bridgedoctor-helper install" in c)
    r = m.sh(" ".join([cmd, *extra]), check=False, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def fingerprint(m: Machine) -> str:
    return m.sh(
        f"stat -c '%n %Y %a %U:%G' {' '.join(FILES)} 2>&1; sha256sum {' '.join(FILES)} 2>&1",
        check=False,
    ).stdout


def as_if_older(m: Machine, path: str, extra: str) -> None:
    """`path` as an earlier version of install wrote it: other text, recorded as its own."""
    m.sh(f"printf '%s' '{extra}' >> {path}")
    m.run(
        "python3",
        "-c",
        "import hashlib, json, sys; p, f = '/var/lib/bridgedoctor/install.json', sys.argv[1]; "
        "d = json.load(open(p)); "
        "d['files'][f] = hashlib.sha256(open(f, encoding='utf-8').read().encode()).hexdigest(); "
        "json.dump(d, open(p, 'w'))",
        path,
    )


def section(out: str, title: str) -> list[str]:
    """The lines of one part of install's or uninstall's report ("Changed:", "Kept:", ...)."""
    lines = out.splitlines()
    start = lines.index(f"{title}:") + 1
    part = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        part.append(line.strip())
    return part


def test_one_command_install_again_and_uninstall(mdad_host: MdadHost) -> None:
    m = mdad_host.m
    out = docs_install(m, "--allow-reset")
    assert section(out, "Changed")[-2:] == [f"enabled {UNIT}", f"started {UNIT}"], out
    assert set(FILES) <= set(section(out, "Changed")), out
    token = m.run("cat", "/etc/bridgedoctor/token").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    # What the admin pastes: the vars.yml lines for maubot and the plugin settings.
    mount = "--mount type=bind,src=/run/bridgedoctor,dst=/run/bridgedoctor,readonly"
    assert f"matrix_bot_maubot_container_extra_arguments:\n  - '{mount}'" in out
    assert f'token: "{token}"' in out and "socket_path: /run/bridgedoctor/helper.sock" in out
    assert "bridges found: gmessages, whatsapp" in out
    config = m.run("cat", "/etc/bridgedoctor/helper.yaml").stdout
    assert "db_host: /matrix/postgres/run" in config  # found by itself
    assert "allowed_uids: [991]" in config and "socket_group: 991" in config
    assert "allow_reset: true" in config
    assert m.run("stat", "-c", "%a %U:%G", "/etc/bridgedoctor/token").stdout.split() == [
        "640",
        "root:matrix",
    ]
    assert m.run("stat", "-c", "%a %U:%G", "/etc/bridgedoctor/helper.yaml").stdout.split() == [
        "640",
        "root:matrix",
    ]
    assert m.run("stat", "-c", "%a %g", "/run/bridgedoctor/helper.sock").stdout.split() == [
        "660",
        "991",
    ]
    assert m.show(UNIT, "ActiveState") == "active"
    assert m.systemctl("is-enabled", UNIT).stdout.strip() == "enabled"
    # The installed unit and drop-in are the deploy files as they are (the venv is /opt/bridgedoctor).
    from tests.systemd.mdad_host import REPO

    assert (
        m.run("cat", "/etc/systemd/system/bridgedoctor-helper.service").stdout
        == (REPO / "deploy" / "bridgedoctor-helper.service").read_text()
    )
    assert (
        m.run("cat", "/etc/systemd/system/bridgedoctor-helper.service.d/reset.conf").stdout
        == (REPO / "deploy" / "bridgedoctor-helper.service.d" / "reset.conf").read_text()
    )

    # Again: nothing is written, the helper is not restarted.
    before, invocation = fingerprint(m), m.show(UNIT, "InvocationID")
    out = docs_install(m)
    assert "Nothing changed" in out
    assert fingerprint(m) == before and m.show(UNIT, "InvocationID") == invocation

    # An upgrade whose unit differs from the one an earlier install wrote: rewritten, loaded
    # (no daemon-reload left pending) and the helper restarted on it.
    as_if_older(m, FILES[2], "# written by an older bridgedoctor\n")
    out = docs_install(m)
    assert f"Changed:\n  {FILES[2]}\n" in out and f"restarted {UNIT}" in out
    assert m.show(UNIT, "NeedDaemonReload") == "no"
    assert m.show(UNIT, "InvocationID") != invocation and m.show(UNIT, "ActiveState") == "active"
    assert "# written by an older" not in m.run("cat", FILES[2]).stdout

    # An edited config is kept, and said so; so is an edited drop-in, which keeps resets
    # possible in the unit, so turning resets off does not remove it.
    m.sh("echo 'naming: legacy' >> /etc/bridgedoctor/helper.yaml")
    dropin = m.run("cat", FILES[3]).stdout
    m.write(FILES[3], dropin + "# the admin's\n")
    out = docs_install(m, "--no-allow-reset")
    assert "helper.yaml (kept: changed by you" in out
    assert "reset.conf (kept: changed by you; the unit still lets resets write" in out
    assert m.run("cat", FILES[3]).stdout == dropin + "# the admin's\n"
    m.write(FILES[3], dropin)  # the admin's edit undone: ours again, removed with resets off
    out = docs_install(m, "--no-allow-reset")
    assert f"{FILES[3]} (removed: resets off)" in out
    assert m.run("test", "-e", FILES[3], check=False).returncode != 0  # drop-in gone: resets off

    # A helper that cannot start (a setting it does not know): install says so and shows why.
    m.systemctl("stop", UNIT)
    m.sh("echo 'not_a_setting: 1' >> /etc/bridgedoctor/helper.yaml")
    cmd = next(c for c in install_commands() if "bridgedoctor-helper install" in c)
    r = m.sh(cmd, check=False, timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "The helper does not answer on /run/bridgedoctor/helper.sock. Its journal:" in r.stdout
    assert "unknown setting 'not_a_setting'" in r.stdout
    assert "bridges found" not in r.stdout
    # Ctrl-C while install waits for that answer: a sentence, not a traceback; what it changed
    # (the helper started) was done before the wait, and a second run does the rest.
    r = m.sh(f"timeout -s INT --preserve-status 8 {cmd}", check=False, timeout=180)
    assert r.returncode == 130, r.stdout + r.stderr
    assert f"started {UNIT}" in r.stdout and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert r.stderr.endswith("bridgedoctor-helper install: interrupted; run it again to finish.\n")
    m.sh("sed -i '/^not_a_setting/d' /etc/bridgedoctor/helper.yaml")
    assert "bridges found: gmessages, whatsapp" in docs_install(m)  # started again
    assert m.show(UNIT, "ActiveState") == "active"

    out = m.run(HELPER, "uninstall").stdout
    removed, kept = section(out, "Removed"), section(out, "Kept")
    assert {FILES[0], FILES[2], FILES[4], f"{FILES[3].rsplit('/', 1)[0]}/"} <= set(removed), out
    assert kept == ["/etc/bridgedoctor/helper.yaml (kept: changed since install)",
                    "/etc/bridgedoctor/ (kept: not empty)"], out  # fmt: skip
    assert m.show(UNIT, "LoadState") == "not-found"
    assert m.show(UNIT, "ActiveState") == "inactive"  # stopped, not only disabled
    assert m.run("test", "-e", "/var/lib/bridgedoctor/install.json", check=False).returncode != 0
    for f in (FILES[0], FILES[2], FILES[4], "/run/bridgedoctor"):
        assert m.run("test", "-e", f, check=False).returncode != 0, f
    assert "helper.yaml (kept: changed since install)" in out
    assert m.run("test", "-d", "/var/lib/bridgedoctor/backups").returncode == 0
    assert "Nothing to remove" in m.run(HELPER, "uninstall").stdout

    # Installed again, and the socket directory gone before uninstall (an admin's clean-up):
    # uninstall still ends its work.
    docs_install(m)
    m.sh("rm -rf /run/bridgedoctor")
    assert "Removed:" in m.run(HELPER, "uninstall").stdout
    assert m.show(UNIT, "LoadState") == "not-found"
