"""One Python-source parse at a time in the explorer's process (CPython 3.11 and 3.12, gh-106905).

CPython before 3.13 keeps the depth counter of the code that turns a parse into ``ast`` objects in one
place per interpreter, shared by every thread. Two threads inside ``ast.parse`` at once, one of them
interrupted mid-way (a garbage collection running Python finalizers is enough), make the other fail
with ``SystemError: AST constructor recursion depth mismatch``. The explorer meets exactly that: the
script thread parses each page file on its first visit (Streamlit's "magic"), while a background thread
(the bundle's full check, the rarity warm-up, the completion of a bundle) imports torch for the first
time, and torch's import parses source 26 times (torch 2.13). It failed one first page in a
fresh clone's test run. Every caller goes through the module attribute ``ast.parse`` (Streamlit's and
torch's included), so holding one lock around it removes the race without making the first page wait
for torch (2 s of CPU) before it starts anything in the background.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any

#: Held by whichever thread is inside ``ast.parse``; re-entrant, as a finalizer run by the garbage
#: collector in the middle of a parse may parse again on the same thread.
_PARSE_LOCK = threading.RLock()
_MARK = "_trajemb_one_at_a_time"


def serialize_ast_parse() -> None:
    """Make ``ast.parse`` take one process-wide lock (once; nothing to do from CPython 3.13 on)."""
    if sys.version_info >= (3, 13) or getattr(ast.parse, _MARK, False):
        return
    unlocked = ast.parse

    @functools.wraps(unlocked)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _PARSE_LOCK:
            return unlocked(*args, **kwargs)

    setattr(parse, _MARK, True)
    ast.parse = parse
