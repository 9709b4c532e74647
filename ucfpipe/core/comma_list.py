"""Option values given as comma-separated lists (`--seeds 1,2,3`, `--precisions float32,bfloat16`): one parser,
one wording for what is wrong with them."""

from __future__ import annotations

from collections.abc import Iterable

from ucfpipe.core.errors import UcfpipeError

_NOUNS = {(int, False): "integers", (int, True): "positive integers", (float, False): "numbers",
          (float, True): "positive numbers", (str, False): "names"}


def comma_list(text: str | None, flag: str, kind=str, *, positive: bool = False, choices: Iterable[str] | None = None,
               repeats: str = "keep", empty_ok: bool = False) -> tuple:
    """"1, 2,3" -> (1, 2, 3); blank items are skipped. `kind` converts each item (int, float, str); `positive`
    refuses values below 1 (int) or 0 and below (float); `choices` is the set the items must come from;
    `repeats` is "keep", "drop" (each value once, in the order given) or "refuse"; `empty_ok` lets an empty or
    missing value mean (). `flag` names the option in the one-line error."""
    choices = tuple(choices) if choices is not None else None
    if choices is not None:
        wrong = f"{flag} must be a comma-separated subset of {', '.join(choices)}, got {text!r}"
    else:
        wrong = f"{flag} must be comma-separated {_NOUNS[kind, positive]}, got {text!r}"
    items = [item.strip() for item in str(text or "").split(",") if item.strip()]
    if not items:
        if empty_ok:
            return ()
        raise UcfpipeError(wrong)
    try:
        values = [kind(item) for item in items]
    except ValueError:
        raise UcfpipeError(wrong) from None
    if choices is not None and any(v not in choices for v in values):
        raise UcfpipeError(wrong)
    if positive and any(v < 1 if kind is int else v <= 0 for v in values):
        raise UcfpipeError(wrong)
    if repeats == "drop":
        values = list(dict.fromkeys(values))
    elif repeats == "refuse" and len(set(values)) != len(values):
        raise UcfpipeError(f"{flag} lists {text!r}: each value once")
    return tuple(values)
