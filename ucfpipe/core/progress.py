"""The one progress bar: clips or frames counted on stderr, for a person watching (commands pass
`--no-progress`, or a stderr that is no terminal, as off). tqdm loads when a bar is made."""

from __future__ import annotations


def progress_bar(total: int | None, unit: str, enabled: bool, **options):
    """A tqdm bar of `total` `unit`s on stderr, shown only when `enabled` and stderr is a terminal; `options`
    (desc, leave, mininterval) pass through."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, disable=True if not enabled else None, smoothing=0.1, dynamic_ncols=True,
                **options)
