"""``Recent``: the cache of built objects is single-flight per key, across threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctxasr.recent import Recent

TIMEOUT = 10  # seconds any one test may wait on a thread: a deadlock fails, not hangs


def test_keeps_the_last_size_objects():
    cache: Recent[str, int] = Recent(2)
    builds: list[str] = []

    def build(key: str):
        return lambda: builds.append(key) or len(builds)

    assert [cache.get(k, build(k)) for k in ("a", "b", "a", "c", "a", "b")] == [1, 2, 1, 3, 1, 4]
    assert builds == ["a", "b", "c", "b"]  # "b" was the least recent when "c" came


def test_concurrent_callers_of_one_key_share_one_build():
    cache: Recent[str, object] = Recent(4)
    builds = 0
    started = threading.Event()
    release = threading.Event()

    def build() -> object:
        nonlocal builds
        builds += 1
        started.set()
        assert release.wait(TIMEOUT)
        return object()

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(cache.get, "ctx", build) for _ in range(4)]
        assert started.wait(TIMEOUT)
        time.sleep(0.05)  # the three others reach the cache and wait for the first
        release.set()
        values = [f.result(TIMEOUT) for f in futures]
    assert builds == 1
    assert all(v is values[0] for v in values)
    assert cache.get("ctx", lambda: pytest.fail("built again")) is values[0]


def test_a_failed_build_raises_in_every_waiter_and_is_not_kept():
    cache: Recent[str, str] = Recent(4)
    started = threading.Event()
    release = threading.Event()
    builds = 0

    def failing() -> str:
        nonlocal builds
        builds += 1
        started.set()
        assert release.wait(TIMEOUT)
        raise ValueError("corrupt index")

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(cache.get, "ctx", failing) for _ in range(3)]
        assert started.wait(TIMEOUT)
        time.sleep(0.05)
        release.set()
        for f in futures:
            with pytest.raises(ValueError, match="corrupt index"):
                f.result(TIMEOUT)
    assert builds == 1
    assert cache.get("ctx", lambda: "rebuilt") == "rebuilt"  # the failure was not cached


def test_builds_of_different_keys_run_in_parallel():
    cache: Recent[str, str] = Recent(4)
    both = threading.Barrier(2, timeout=TIMEOUT)  # broken unless both builds run at once

    def build(key: str):
        def go() -> str:
            both.wait()
            return key

        return go

    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(cache.get, "a", build("a"))
        b = pool.submit(cache.get, "b", build("b"))
        assert (a.result(TIMEOUT), b.result(TIMEOUT)) == ("a", "b")


def test_a_build_may_get_another_key_but_not_its_own():
    cache: Recent[str, str] = Recent(4)

    def outer() -> str:
        return "outer of " + cache.get("inner", lambda: "inner")

    done: list[str] = []
    thread = threading.Thread(target=lambda: done.append(cache.get("outer", outer)))
    thread.start()
    thread.join(TIMEOUT)
    assert done == ["outer of inner"]

    with pytest.raises(RuntimeError, match="its own key"):
        cache.get("loop", lambda: cache.get("loop", lambda: "never"))
    assert cache.get("loop", lambda: "fine") == "fine"
