"""The server's cycle-collector policy: freeze survivors of full collections, rescan now and then."""

from __future__ import annotations

import gc
import weakref

import pytest

from rtcore.config import GcConfig, config_from_mapping
from rtcore.errors import ConfigError
from rtcore.server.gc_policy import FreezeSurvivors, install_gc_policy


@pytest.fixture(autouse=True)
def _restore_gc() -> None:
    yield
    gc.unfreeze()


def test_full_collections_freeze_their_survivors_and_every_nth_rescans() -> None:
    policy = install_gc_policy(GcConfig(rescan_every=3))
    assert isinstance(policy, FreezeSurvivors)
    try:
        gc.collect(1)  # not a full collection: nothing frozen
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert gc.get_freeze_count() > 0
        kept = [object() for _ in range(10)]  # untracked; a list is tracked
        gc.collect()
        assert gc.get_freeze_count() > 0
        gc.collect()  # the third: unfrozen, so the next one walks everything
        assert gc.get_freeze_count() == 0
        assert policy.full_collections == 3
        assert kept
    finally:
        policy.uninstall()
    assert policy not in gc.callbacks
    assert gc.get_freeze_count() == 0


def test_a_frozen_cycle_is_freed_after_the_rescan() -> None:
    class Node:
        other: Node

    policy = install_gc_policy(GcConfig(rescan_every=3))
    assert policy is not None
    try:
        gc.collect()  # 1: frozen after it
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        gc.collect()  # 2: the cycle is still referenced, survives and is frozen
        del a, b
        gc.collect()  # 3: walks only unfrozen objects, then unfreezes
        assert alive() is not None
        gc.collect()  # 4: walks everything
        assert alive() is None
    finally:
        policy.uninstall()


def test_off_and_checked() -> None:
    assert install_gc_policy(GcConfig(freeze=False)) is None
    assert config_from_mapping({}).gc.freeze is True
    with pytest.raises(ConfigError, match="gc.rescan_every"):
        config_from_mapping({"gc": {"rescan_every": -1}})
