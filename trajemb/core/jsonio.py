"""Reading the small JSON files trajemb writes beside its artefacts (cards, configs, manifests, reports).

Every such file is read back as untrusted input: a file that is missing, too large, not UTF-8, not
JSON, nested too deeply or not a JSON object becomes one ``DataError`` naming the file, so a damaged
artefact is reported, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trajemb.core.errors import DataError
from trajemb.core.paths import regular_file_size

#: Our JSON files are a few kilobytes (reports with many columns stay well under a megabyte); a cap
#: keeps a crafted multi-gigabyte "card" from being read into memory.
MAX_JSON_BYTES = 64 * 1024 * 1024


def read_json_object(path: Path | str, what: str, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The JSON object in ``path``.

    Args:
        path: the file.
        what: what the file is, for messages (``"model card"``, ``"bundle manifest"``).
        max_bytes: refuse larger files.

    Raises:
        DataError: missing or unreadable file, not a regular file, larger than ``max_bytes``,
            not UTF-8, invalid or too deeply nested JSON, or a top level that is not an object.
    """
    path = Path(path)
    regular_file_size(path, what, max_bytes)
    try:
        data = path.read_bytes()[: max_bytes + 1]
        value = json.loads(data.decode("utf-8"))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: the {what} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: the {what} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    except RecursionError:
        raise DataError(f"{path}: the {what} is nested too deeply to be one of ours") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: the {what} must be a JSON object, got {type(value).__name__}")
    return value


def parse_json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """The JSON object in ``text`` (e.g. metadata embedded in a parquet file); errors as above."""
    try:
        value = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"the {what} is not valid JSON ({exc})") from exc
    except RecursionError:
        raise DataError(f"the {what} is nested too deeply") from None
    if not isinstance(value, dict):
        raise DataError(f"the {what} must be a JSON object, got {type(value).__name__}")
    return value
