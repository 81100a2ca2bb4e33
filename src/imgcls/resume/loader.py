"""A DataLoader that can begin mid-epoch: the training data of a resumed run continues where the killed run was.

`start=(epoch, batches)` makes the first iteration begin at that epoch's batch `batches`: the sampler is set to
`epoch` and the first `batches` batches of indices are skipped without loading them. Lightning creates the
first iterator *before* it calls `set_epoch`, so without this a resumed run would replay epoch 0's order.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from imgcls.utils.compat import index_sampler


class ResumableDataLoader(DataLoader):
    """A subclass (not a wrapper) so Lightning can still re-create it with a DistributedSampler under DDP (it
    replays the constructor's arguments, `start` included)."""

    def __init__(self, *args: Any, start: tuple[int, int] | None = None, **kwargs: Any) -> None:
        self.start = tuple(start) if start is not None else None
        self._skip = 0
        super().__init__(*args, **kwargs)

    @property
    def _index_sampler(self) -> Any:  # overrides torch's private property, the indices its iterators draw
        return _SkipFirst(index_sampler(self), self)

    # Lightning warns that a loader without these cannot resume mid-epoch. This one can: the position travels
    # in the checkpoint (see imgcls.resume.state) and comes back as `start`; nothing to keep here.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass

    def begin(self) -> None:
        """Called at the start of `__iter__`: a pending `start` sets the sampler's epoch and the batches to skip."""
        if self.start is None:
            return
        epoch, self._skip = self.start
        self.start = None
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)


class _SkipFirst:
    """An index sampler that drops the loader's pending `_skip` batches from its next pass. The skip is taken
    when the pass yields its first batch, not when it is created: torch creates a pass and throws it away
    before the one it uses, and persistent workers re-iterate this same object every epoch."""

    def __init__(self, base: Any, loader: ResumableDataLoader) -> None:
        # A weak reference: the loader's iterator holds this object, and a loader <-> iterator cycle would keep
        # persistent workers alive until a garbage collection (in the bench, inherited by the next loader's
        # forked workers, whose collections then try to shut down workers that are not theirs).
        self.base, self._loader = base, weakref.ref(loader)

    def __iter__(self) -> Iterator[Any]:
        loader, skip = self._loader(), 0
        if loader is not None:
            skip, loader._skip = loader._skip, 0
        del loader  # not held by this generator's frame while it runs
        yield from itertools.islice(iter(self.base), skip, None)

    def __len__(self) -> int:
        return len(self.base)
