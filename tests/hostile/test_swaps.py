"""Paths swapped while `systemctl stop` waits for the container's SIGTERM handler: the helper
notices after the stop, touches nothing, and puts the unit back as it was."""

from __future__ import annotations

from collections.abc import Callable

from tests.hostile.world import EVIL, UNIT, World

SWAP_DATA = """
    import os
    os.rename('data', 'data.real')
    os.symlink({target!r}, 'data')
"""


def refused_after_stop(w: World, answer: dict) -> str:
    assert not answer["ok"], answer
    message = answer["error"]["message"]
    assert "while the bridge was stopping" in message and "nothing was" in message, message
    calls = [c.split()[0] for c in w.sd.calls() if c.split()[0] in ("stop", "start")]
    assert calls[-2:] == ["stop", "start"], w.sd.calls()
    assert w.sd.get(UNIT) == "active"  # as the admin had it
    return message


def test_full_reset_of_sqlite_bridge_cannot_delete_another_bridges_store(
    world: Callable[..., World],
) -> None:
    """data/ becomes a link to signal's data directory during the stop: without the check
    after the stop, the full reset would empty signal's directory, its store included."""
    w = world("sqlite")
    before_evil = w.outside()
    w.on_stop(SWAP_DATA.format(target=str(w.base("signal") / "data")))
    refused_after_stop(w, w.reset("full"))
    assert w.outside() == before_evil
    assert w.store("signal").exists()
    w.alive()


def test_full_reset_of_postgres_bridge_same_swap(world: Callable[..., World]) -> None:
    w = world("postgres")
    outside = w.outside()
    w.on_stop(SWAP_DATA.format(target=str(w.secrets)))
    refused_after_stop(w, w.reset("full"))
    assert w.outside() == outside
    w.alive()


def test_restore_cannot_write_into_a_root_only_directory(world: Callable[..., World]) -> None:
    """A legitimate full reset first (its backup holds the bridge's data directory); then, as
    the restore stops the unit, data/ becomes a link to a root-only directory holding an
    authorized_keys. The restore would have written the backup's files there."""
    w = world("postgres")
    done = w.reset("full")
    assert done["ok"], done
    outside = w.outside()
    w.on_stop(SWAP_DATA.format(target=str(w.secrets)))
    refused_after_stop(w, w.restore(done["result"]["id"]))
    assert w.outside() == outside
    w.alive()


def test_sqlite_store_swapped_for_a_link_during_a_crypto_reset(
    world: Callable[..., World],
) -> None:
    """The store itself becomes a link to signal's store: the crypto rows would be deleted
    from signal's database."""
    w = world("sqlite")
    outside = w.outside()
    store = w.store().name
    w.on_stop(f"""
        import os
        os.rename('data/{store}', 'data/{store}.real')
        os.symlink({str(w.store("signal"))!r}, 'data/{store}')
    """)
    message = refused_after_stop(w, w.reset("crypto"))
    assert "symbolic link" in message
    assert w.outside() == outside
    w.alive()


def test_sqlite_store_replaced_by_another_file_during_a_restore(
    world: Callable[..., World],
) -> None:
    w = world("sqlite")
    done = w.reset("crypto")
    assert done["ok"], done
    outside = w.outside()
    store = w.store().name
    w.on_stop(f"""
        import os, shutil
        shutil.copy('data/{store}', 'data/{store}.new')
        os.replace('data/{store}.new', 'data/{store}')
    """)
    message = refused_after_stop(w, w.restore(done["result"]["id"]))
    assert "was replaced" in message
    assert w.outside() == outside
    w.alive()


def test_link_leading_out_is_refused_before_anything(world: Callable[..., World]) -> None:
    """A link in data/ pointing at a root-only directory: a full reset would back it up and a
    restore recreate it, so the plan is refused; nothing stops, nothing changes."""
    w = world("postgres")
    w.attack(f"import os; os.symlink({str(w.secrets)!r}, 'data/keys')")
    outside = w.outside()
    answer = w.reset("full")
    assert not answer["ok"] and "leading out of the data directory" in answer["error"]["message"]
    assert not [c for c in w.sd.calls() if c.startswith("stop")]
    assert w.outside() == outside
    w.alive()


def test_link_leading_out_made_during_the_stop(world: Callable[..., World]) -> None:
    w = world("postgres")
    outside = w.outside()
    w.on_stop("import os; os.symlink('../../../root-only', 'data/media/up')")
    message = refused_after_stop(w, w.reset("full"))
    assert "leading out of the data directory" in message
    assert w.outside() == outside
    w.alive()


def test_deep_tree_made_during_the_stop(world: Callable[..., World]) -> None:
    """Thousands of nested directories would exhaust descriptors or recursion while emptying."""
    w = world("postgres")
    outside = w.outside()
    w.on_stop("""
        import os
        os.chdir('data')
        for _ in range(2000):
            os.mkdir('d')
            os.chdir('d')
    """)
    message = refused_after_stop(w, w.reset("full"))
    assert "nests deeper than" in message
    assert w.outside() == outside
    w.alive()


def test_own_links_and_hard_links_come_back_exactly(world: Callable[..., World]) -> None:
    """What a bridge may do in its own directory survives a full reset and restore as it was:
    relative links that stay inside, hard links between its own files, odd modes."""
    w = world("sqlite")
    w.attack("""
        import os
        os.symlink('media/blob.bin', 'data/current')
        os.link('data/media/blob.bin', 'data/media/blob.hard')
        os.chmod('data/media', 0o750)
    """)
    before = w.outside()
    tree = {p.relative_to(w.base(EVIL)): p.lstat() for p in w.base(EVIL).rglob("*")}
    done = w.reset("full")
    assert done["ok"], done
    assert w.restore(done["result"]["id"])["ok"]
    after = {p.relative_to(w.base(EVIL)): p.lstat() for p in w.base(EVIL).rglob("*")}
    assert sorted(after) == sorted(tree)
    for rel, st in tree.items():
        assert (after[rel].st_mode, after[rel].st_uid) == (st.st_mode, st.st_uid), rel
    hard = w.base(EVIL) / "data" / "media"
    assert (hard / "blob.hard").stat().st_ino == (hard / "blob.bin").stat().st_ino
    assert w.outside() == before
    w.alive()
