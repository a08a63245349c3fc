"""Short hints for error messages: the closest valid name, and a bounded list of the valid ones."""

from __future__ import annotations

import difflib
from collections.abc import Collection


def did_you_mean(word: str, choices: Collection[str]) -> str:
    """ "did you mean 'x'? " for the closest choice, or "" (cheap: never quadratic on huge input)."""
    if len(choices) > 500 or len(str(word)) > 100:  # difflib is quadratic; a hint must stay cheap
        return ""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def listing(names, limit: int = 20) -> str:
    """Some names for a hint, never thousands."""
    names = sorted(str(n) for n in names)
    return ", ".join(names[:limit]) + (f" (and {len(names) - limit} more)" if len(names) > limit else "")
