"""reset/safetar.py: a data-directory backup comes back exactly, and a hostile archive writes
nothing at all (checked before the directory is emptied)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bridgedoctor.reset.backup import (
    copy_file,
    dir_digest,
    tar_dir,
    untar_into,
    verify_copy,
    verify_tar,
)
from bridgedoctor.reset.errors import ResetError

REPO = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = Path("/usr/bin/python3")
UID = 64_991  # MDAD's matrix user is a system uid like this; no passwd entry needed


def tree(root: Path) -> dict[str, tuple[int, int, int, int, str]]:
    """Every entry: (type, mode, uid, mtime, content or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            what = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            what = p.read_bytes().hex()
        else:
            what = ""
        out[str(p.relative_to(root))] = (
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            int(st.st_mtime),
            what,
        )
    return out


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory as a bridge leaves it, with everything a tar can hold but devices."""
    d = tmp_path / "data"
    (d / "media" / "deep").mkdir(parents=True)
    (d / "mautrix-x.db").write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 64)
    (d / "media" / "deep" / "blob").write_bytes(b"\x00\xff" * 5000)
    (d / "media" / "a b\tc").write_text("odd name")
    (d / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(d / "run.sh", 0o4750)
    (d / "media" / "to-blob").symlink_to("deep/blob")
    (d / "media" / "deep" / "up").symlink_to("../../mautrix-x.db")
    (d / "dangling").symlink_to("media/not-there")
    os.link(d / "media" / "deep" / "blob", d / "media" / "blob-again")
    os.mkfifo(d / "fifo", 0o640)
    os.chmod(d / "media", 0o750)
    if os.geteuid() == 0:
        for p in [d, *d.rglob("*")]:
            os.chown(p, UID, UID, follow_symlinks=False)
        os.chmod(d / "run.sh", 0o4750)  # chown cleared the setuid bit
    for p in d.rglob("*"):
        os.utime(p, (1_700_000_000, 1_700_000_000), follow_symlinks=False)
    return d


def test_round_trip_is_exact(data: Path, tmp_path: Path) -> None:
    before = tree(data)
    digest = dir_digest(data)
    tar = tmp_path / "data.tar"
    tar_dir(data, tar)
    (data / "new-since").write_text("made by the bridge after the reset")
    untar_into(tar, data)
    assert tree(data) == before and dir_digest(data) == digest
    assert (
        os.stat(data / "media" / "blob-again").st_ino
        == os.stat(data / "media" / "deep" / "blob").st_ino
    )


@pytest.mark.skipif(not DEBIAN_PYTHON.exists(), reason="Debian's /usr/bin/python3 is not here")
def test_round_trip_on_debian_python_without_tarfile_filter(data: Path, tmp_path: Path) -> None:
    """Debian 12's Python 3.11.2 has no extraction filter; ours does not need one."""
    tar = tmp_path / "data.tar"
    tar_dir(data, tar)
    before = tree(data)
    out = tmp_path / "restored"
    out.mkdir()
    # Every site-packages this interpreter imports from (a venv's own, or one a .pth adds).
    site = os.pathsep.join(p for p in sys.path if os.path.basename(p) == "site-packages")
    code = (
        "import sys, tarfile, inspect; from pathlib import Path;"
        "from bridgedoctor.reset.backup import untar_into;"
        "untar_into(Path(sys.argv[1]), Path(sys.argv[2]));"
        "print(sys.version_info[:3], 'filter' in inspect.signature(tarfile.TarFile.extractall).parameters)"
    )
    proc = subprocess.run(
        [str(DEBIAN_PYTHON), "-c", code, str(tar), str(out)],
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith("(3, 11, 2)"):
        assert proc.stdout.strip().endswith("False")
    assert tree(out) == before


def add(tf: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, link: str = "",
        data: bytes = b"x") -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


HOSTILE = {
    "absolute name": [("/etc/cron.d/x", tarfile.REGTYPE, "")],
    "dot-dot name": [("a", tarfile.DIRTYPE, ""), ("a/../../escape", tarfile.REGTYPE, "")],
    "absolute symlink": [("key", tarfile.SYMTYPE, "/root/.ssh/authorized_keys")],
    "escaping symlink": [("up", tarfile.SYMTYPE, "../outside")],
    "symlink chain": [
        ("sub", tarfile.DIRTYPE, ""),
        ("sub/up", tarfile.SYMTYPE, ".."),
        ("sub/out", tarfile.SYMTYPE, "up/../outside"),
    ],
    "symlink loop": [("a", tarfile.SYMTYPE, "b"), ("b", tarfile.SYMTYPE, "a")],
    "write through a symlink": [
        ("sub", tarfile.DIRTYPE, ""),
        ("link", tarfile.SYMTYPE, "sub"),
        ("link/file", tarfile.REGTYPE, ""),
    ],
    "hard link outside": [("h", tarfile.LNKTYPE, "../outside")],
    "hard link to a later file": [("h", tarfile.LNKTYPE, "later"), ("later", tarfile.REGTYPE, "")],
    "hard link to a symlink": [("s", tarfile.SYMTYPE, "x"), ("h", tarfile.LNKTYPE, "s")],
    "device node": [("zero", tarfile.CHRTYPE, "")],
    "twice": [("f", tarfile.REGTYPE, ""), ("f", tarfile.REGTYPE, "")],
    "missing parent": [("nowhere/f", tarfile.REGTYPE, "")],
    "bidi name": [("\u202egnp.exe/../x", tarfile.REGTYPE, "")],
    "dot name": [("./x", tarfile.REGTYPE, "")],
    "empty component": [("a", tarfile.DIRTYPE, ""), ("a//x", tarfile.REGTYPE, "")],
    "hard link through dot-dot": [("f", tarfile.REGTYPE, ""), ("h", tarfile.LNKTYPE, "a/../f")],
    "write through a deeper symlink": [
        ("a", tarfile.DIRTYPE, ""),
        ("a/b", tarfile.SYMTYPE, "."),
        ("a/b/c", tarfile.REGTYPE, ""),
    ],
    "symlink with an empty component": [("up", tarfile.SYMTYPE, ".//..")],
    "symlink through a dot": [("up", tarfile.SYMTYPE, "./../outside")],
    "symlink chain through a dot link": [
        ("sub", tarfile.DIRTYPE, ""),
        ("sub/here", tarfile.SYMTYPE, "./."),
        ("out", tarfile.SYMTYPE, "sub/here/../.."),
    ],
    # l0 leads through 41 more links: one more than MAX_LINK_HOPS.
    "symlink chain of 42 links": [(f"l{i}", tarfile.SYMTYPE, f"l{i + 1}") for i in range(42)]
    + [("l42", tarfile.REGTYPE, "")],
}

NOT_PLAIN = "is not a plain relative path inside the data directory; nothing was restored."
LEADS_OUT = "leads outside the data directory; nothing was restored."
BEFORE_DIR = "comes before its directory; nothing was restored."
# Why each hostile archive is refused, word for word: the first check that catches it.
REASON = {
    "absolute name": f"the backup's entry '/etc/cron.d/x' {NOT_PLAIN}",
    "dot-dot name": f"the backup's entry 'a/../../escape' {NOT_PLAIN}",
    "dot name": f"the backup's entry './x' {NOT_PLAIN}",
    "empty component": f"the backup's entry 'a//x' {NOT_PLAIN}",
    "bidi name": f"the backup's entry '\\u202egnp.exe/../x' {NOT_PLAIN}",
    "hard link outside": f"the backup's hard link target '../outside' {NOT_PLAIN}",
    "hard link through dot-dot": f"the backup's hard link target 'a/../f' {NOT_PLAIN}",
    "absolute symlink": "the backup's link 'key' points to an absolute path; nothing was restored.",
    "escaping symlink": f"the backup's link 'up' {LEADS_OUT}",
    "symlink chain": f"the backup's link 'sub/out' {LEADS_OUT}",
    "symlink loop": f"the backup's link 'a' {LEADS_OUT}",
    "symlink with an empty component": f"the backup's link 'up' {LEADS_OUT}",
    "symlink through a dot": f"the backup's link 'up' {LEADS_OUT}",
    "symlink chain through a dot link": f"the backup's link 'out' {LEADS_OUT}",
    "symlink chain of 42 links": f"the backup's link 'l0' {LEADS_OUT}",
    "write through a symlink": f"the backup's entry 'link/file' {BEFORE_DIR}",
    "write through a deeper symlink": f"the backup's entry 'a/b/c' {BEFORE_DIR}",
    "missing parent": f"the backup's entry 'nowhere/f' {BEFORE_DIR}",
    "hard link to a later file": (
        "the backup's hard link 'h' does not name a file earlier in the backup; "
        "nothing was restored."
    ),
    "hard link to a symlink": (
        "the backup's hard link 'h' does not name a file earlier in the backup; "
        "nothing was restored."
    ),
    "device node": "the backup's entry 'zero' is a device or special file; nothing was restored.",
    "twice": "the backup lists 'f' twice; nothing was restored.",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_writes_nothing(tmp_path: Path, case: str) -> None:
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "kept").write_text("the bridge's current data")
    outside = tmp_path / "outside"
    outside.write_text("another bridge's file")
    tar = tmp_path / "evil.tar"
    write_tar(tar, HOSTILE[case])
    before = tree(tmp_path)
    with pytest.raises(ResetError) as e:
        untar_into(tar, dest)
    message = str(e.value)
    assert message == REASON[case]
    assert "\n" not in message and "\u202e" not in message
    assert tree(tmp_path) == before  # not even emptied


def test_every_hostile_archive_has_its_reason() -> None:
    assert set(REASON) == set(HOSTILE)


def write_tar(tar: Path, members: list[tuple[str, bytes, str]]) -> None:
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, link in members:
            add(tf, name, kind, link)


def test_a_link_through_40_more_links_is_as_far_as_it_goes(tmp_path: Path) -> None:
    """MAX_LINK_HOPS: a link whose resolution follows 40 more links is kept, 41 more are
    refused (the case above)."""
    tar, dest = tmp_path / "ok.tar", tmp_path / "data"
    write_tar(tar, [(f"l{i}", tarfile.SYMTYPE, f"l{i + 1}") for i in range(41)]
              + [("l41", tarfile.REGTYPE, "")])  # fmt: skip
    untar_into(tar, dest)
    assert os.readlink(dest / "l0") == "l1" and (dest / "l41").read_bytes() == b"x"


def test_hard_links_deep_and_to_a_hard_link_come_back_linked(tmp_path: Path) -> None:
    """A hard link's target three levels down, and one naming another hard link (tar from
    other tools does that): all the same inode."""
    tar, dest = tmp_path / "links.tar", tmp_path / "data"
    write_tar(tar, [("a", tarfile.DIRTYPE, ""), ("a/b", tarfile.DIRTYPE, ""),
                    ("a/b/f", tarfile.REGTYPE, ""), ("h1", tarfile.LNKTYPE, "a/b/f"),
                    ("h2", tarfile.LNKTYPE, "h1")])  # fmt: skip
    untar_into(tar, dest)
    inodes = {os.lstat(dest / n).st_ino for n in ("a/b/f", "h1", "h2")}
    assert len(inodes) == 1 and (dest / "h2").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("n" * 80, "n" * 80),
        ("n" * 81, "n" * 77 + "..."),
        ("\u202e" + "n" * 74, "\\u202e" + "n" * 74),  # escaped: 80 characters shown
        ("\u202e" + "n" * 75, "\\u202e" + "n" * 71 + "..."),
    ],
)
def test_a_name_is_shown_escaped_and_at_most_80_characters(name: str, shown: str) -> None:
    from bridgedoctor.reset.safetar import shown as shown_name

    assert shown_name(name) == shown


def test_destination_that_is_a_symlink_is_refused(data: Path, tmp_path: Path) -> None:
    tar = tmp_path / "data.tar"
    tar_dir(data, tar)
    elsewhere = tmp_path / "root-only"
    elsewhere.mkdir()
    (elsewhere / "authorized_keys").write_text("ssh-ed25519 AAAA admin\n")
    swapped = tmp_path / "swapped"
    swapped.symlink_to(elsewhere)
    before = tree(elsewhere)
    with pytest.raises(ResetError, match="is not a plain directory"):
        untar_into(tar, swapped)
    assert tree(elsewhere) == before


def test_clear_follows_no_link(tmp_path: Path) -> None:
    from bridgedoctor.reset.backup import clear_dir

    other = tmp_path / "other-bridge"
    other.mkdir()
    (other / "mautrix-other.db").write_text("not ours")
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    (d / "to-other").symlink_to(other)
    (d / "sub" / "file-link").symlink_to(other / "mautrix-other.db")
    clear_dir(d)
    assert list(d.iterdir()) == []
    assert (other / "mautrix-other.db").read_text() == "not ours"


def test_a_tar_that_does_not_read_back_is_named(data: Path, tmp_path: Path) -> None:
    from bridgedoctor.reset.backup import verify_tar, verify_tar_sha

    tar = tmp_path / "data.tar"
    sha = tar_dir(data, tar)
    verify_tar(tar, sha, data)  # as written: silent
    verify_tar_sha(tar, sha)
    with pytest.raises(ResetError) as e:
        verify_tar(tar, "0" * 64, data)
    assert str(e.value) == f"the backup {tar} does not read back as written; nothing was changed."
    with pytest.raises(ResetError) as e:
        verify_tar_sha(tar, "0" * 64)
    assert str(e.value) == f"the backup {tar} is damaged; nothing restored."
    (data / "run.sh").write_text("#!/bin/sh\nchanged since the tar\n")
    with pytest.raises(ResetError) as e:
        verify_tar(tar, sha, data)
    assert str(e.value) == "run.sh differs in the backup; nothing was changed."


def test_a_missing_data_directory_is_made_with_its_parents(data: Path, tmp_path: Path) -> None:
    from bridgedoctor.reset.backup import clear_dir

    cleared = tmp_path / "gone" / "data"
    clear_dir(cleared)
    assert cleared.is_dir() and list(cleared.iterdir()) == []
    tar = tmp_path / "data.tar"
    tar_dir(data, tar)
    restored = tmp_path / "also-gone" / "data"
    untar_into(tar, restored)
    assert tree(restored) == tree(data)


def test_clear_covered_removes_a_link_the_tar_holds_and_keeps_a_changed_one(
    data: Path, tmp_path: Path
) -> None:
    """Symbolic links and both names of a hard link (the tar holds the second as a link to
    the first) go when unchanged; a link pointing elsewhere since the backup stays."""
    from bridgedoctor.reset.covered import clear_covered

    (data / "ends in a blank ").write_text("names are compared whole")
    (data / "media" / "endsX").write_text("")
    tar = tmp_path / "data.tar"
    tar_dir(data, tar)
    (data / "dangling").unlink()
    (data / "dangling").symlink_to("media/elsewhere")  # changed since the backup: kept
    (data / "run.sh").write_text("#!/bin/sh\nexit 1\n")  # changed content: kept
    (data / "media" / "new").mkdir()  # new: kept, named once with what is in it
    (data / "media" / "new" / "f").write_text("")
    (data / "fifo").unlink()
    kept = clear_covered(data, tar)
    assert kept == ["dangling", "media/new", "run.sh"]
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == [
        "dangling", "media", "media/new", "media/new/f", "run.sh",
    ]  # fmt: skip
    assert os.readlink(data / "dangling") == "media/elsewhere"


def test_a_copied_file_is_new_private_and_checked_against_both_sides(tmp_path: Path) -> None:
    src, copy = tmp_path / "mautrix-x.db", tmp_path / "backup" / "mautrix-x.db"
    src.write_bytes(b"store" * 1000)
    copy.parent.mkdir()
    sha = copy_file(src, copy)
    assert copy.read_bytes() == src.read_bytes() and stat.S_IMODE(copy.stat().st_mode) == 0o600
    verify_copy(copy, sha, src)
    with pytest.raises(FileExistsError):  # never over an existing file or through a link
        copy_file(src, copy)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        copy_file(src, tmp_path / "link")
    assert not (tmp_path / "elsewhere").exists()
    differs = f"mautrix-x.db differs from {src} in the backup; nothing was changed."
    src.write_bytes(b"changed since")  # the source moved on: the copy is not of it
    with pytest.raises(ResetError) as err:
        verify_copy(copy, sha, src)
    assert str(err.value) == differs
    src.write_bytes(b"store" * 1000)
    copy.write_bytes(b"store" * 999)  # the copy is not what was written
    with pytest.raises(ResetError) as err:
        verify_copy(copy, sha, src)
    assert str(err.value) == differs


def test_a_store_bigger_than_the_memory_allowed_is_backed_up_checked_and_put_back(
    tmp_path: Path,
) -> None:
    """A big store (a SQLite database in its data directory) is read piece by piece at every
    step: in a process that may map 128 MiB in all, a data directory holding a 192 MiB file
    (sparse: no disk spent on the source) is tarred, the tar verified against it, and the file
    copied back as a restore does (reset/paths.copy_new). The same steps on a small store run
    here first: the big one's outcome is then the limit's alone."""
    from bridgedoctor.reset.paths import copy_new

    data, back = tmp_path / "data", tmp_path / "back"
    data.mkdir()
    back.mkdir()
    (data / "mautrix-whatsapp.db").write_bytes(b"SQLite format 3\x00" * 4096)
    verify_tar(tmp_path / "small.tar", tar_dir(data, tmp_path / "small.tar"), data)
    copy_new(data / "mautrix-whatsapp.db", back / "small.db")
    assert (back / "small.db").read_bytes() == (data / "mautrix-whatsapp.db").read_bytes()
    with (data / "mautrix-whatsapp.db").open("wb") as f:
        f.truncate(192 << 20)
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "resource.setrlimit(resource.RLIMIT_AS, (128 << 20, 128 << 20))\n"
        "from bridgedoctor.reset.backup import tar_dir, verify_tar\n"
        "from bridgedoctor.reset.paths import copy_new\n"
        "data, tar, back = (Path(a) for a in sys.argv[1:])\n"
        "verify_tar(tar, tar_dir(data, tar), data)\n"
        "copy_new(data / 'mautrix-whatsapp.db', back / 'mautrix-whatsapp.db')\n"
        "print('done')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(data), str(tmp_path / "data.tar"), str(back)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr[-500:]
    assert (back / "mautrix-whatsapp.db").stat().st_size == 192 << 20
