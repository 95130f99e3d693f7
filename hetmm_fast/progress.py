"""Progress bars for long work (template building, PTS, evaluation): tqdm on stderr, or a silent stand-in."""
from __future__ import annotations

import contextlib


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "it", enable: bool = True):
    """Yield an object with ``update(n)``; a tqdm bar when ``enable``, else a no-op."""
    if not enable:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False) as bar:
        yield bar
