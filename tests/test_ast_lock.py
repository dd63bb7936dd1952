"""The explorer's parses one at a time: CPython 3.11's shared AST counter (gh-106905) under two threads."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "app"))
import ast_lock

#: Three hundred small functions: one parse builds tens of thousands of nodes, long enough to be interrupted.
SOURCE = "\n".join(
    f"def f{i}(a, b=[1, (2, 3)], *c, **d):\n    return [x * y for x in a if x for y in b] + [{i}]"
    for i in range(300)
)


class _Finalized:
    """Cyclic garbage with a finalizer: the garbage collector runs Python code in the middle of a parse."""

    def __del__(self) -> None:
        pass


def _parse_beside_each_other(seconds: float) -> list[str]:
    errors: list[str] = []
    deadline = time.monotonic() + seconds

    def work() -> None:
        while time.monotonic() < deadline and not errors:
            try:
                ast.parse(SOURCE)
            except SystemError as exc:
                errors.append(str(exc))
            for _ in range(200):
                cycle = _Finalized()
                cycle.self = cycle  # type: ignore[attr-defined]

    switch_s = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads as often as a busy machine does
    try:
        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch_s)
    return errors


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="CPython 3.13 keeps the counter per call")
def test_two_threads_parse_without_a_recursion_depth_mismatch() -> None:
    # Unguarded, this fails within half a second on CPython 3.11 ("AST constructor recursion depth
    # mismatch"): the first page of the explorer met it while torch was imported in the background.
    ast_lock.serialize_ast_parse()
    assert _parse_beside_each_other(seconds=2.0) == []


def test_a_parse_waits_for_the_one_under_way() -> None:
    ast_lock.serialize_ast_parse()
    ast_lock.serialize_ast_parse()  # twice is once: one lock, not two wrappers
    if sys.version_info >= (3, 13):
        return
    assert ast.parse.__wrapped__.__name__ == "parse"
    assert not hasattr(ast.parse.__wrapped__, "__wrapped__")
    done = threading.Event()
    with ast_lock._PARSE_LOCK:  # another thread is inside a parse
        thread = threading.Thread(target=lambda: (ast.parse("x = 1"), done.set()))
        thread.start()
        assert not done.wait(0.3)
    assert done.wait(10)
    thread.join()
    assert isinstance(ast.parse("x = 1", mode="exec"), ast.Module)  # the signature is ast.parse's


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="CPython 3.13 keeps the counter per call")
def test_the_explorer_takes_the_lock_before_it_starts_a_thread() -> None:
    # app/cache.py starts every background thread of the explorer; importing it puts the lock in place
    probe = (
        "import ast, sys; sys.path.insert(0, 'app'); import cache; print(ast.parse._trajemb_one_at_a_time)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "True"
