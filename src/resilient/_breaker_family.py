"""`CircuitBreakerFamily`: one breaker per key (per upstream host, say), bounded in number."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from resilient._validate import check_int


if TYPE_CHECKING:
    from collections.abc import Hashable, Iterator

    from resilient._breaker import CircuitBreaker


__all__ = ["CircuitBreakerFamily"]


class CircuitBreakerFamily:
    """Breakers created on first use, one per key, all configured like a template breaker.

    Made by `CircuitBreaker.family()`. Each member is named `"{template name}:{key}"` (keep keys
    bounded: they end up in metric attributes). Each has its own listeners, and the template's
    listeners hear every member too: subscribe on a member to hear that member, on the template
    to hear them all.

    At most *max_size* members live at once. Adding one more evicts the least recently used
    member that is closed; if none is closed, the least recently used one goes anyway, so the bound
    always holds. A caller that still holds an evicted breaker finishes its call against it
    harmlessly.

    Args:
        template: the breaker whose configuration the members copy.
        max_size: the most members kept (>= 1, default 1024).
    """

    __slots__ = ("_lock", "_members", "max_size", "template")

    def __init__(self, template: CircuitBreaker, *, max_size: int = 1024) -> None:
        check_int("max_size", max_size, "an int >= 1", lambda v: v >= 1)
        self.template = template
        self.max_size = max_size
        self._members: OrderedDict[Hashable, CircuitBreaker] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, key: Hashable) -> CircuitBreaker:
        """Return the breaker of *key*, creating it (and evicting one, if full) on first use."""
        with self._lock:
            breaker = self._members.get(key)
            if breaker is not None:
                self._members.move_to_end(key)
                return breaker
            if len(self._members) >= self.max_size:
                self._evict()
            breaker = self._members[key] = self._create(key)
            return breaker

    def _create(self, key: Hashable) -> CircuitBreaker:
        template = self.template
        name = f"{template.name}:{key}" if template.name is not None else str(key)
        member = type(template)(name, **template._options)
        # Its own listeners first, then the template's (live: later subscriptions count too).
        member._listener_lists = (member._listeners, *template._listener_lists)
        return member

    def _evict(self) -> None:
        for key, breaker in self._members.items():
            if breaker.state == "closed":
                del self._members[key]
                return
        self._members.popitem(last=False)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[Hashable]:
        """Iterate over a snapshot of the keys, least recently used first."""
        with self._lock:
            return iter(list(self._members))

    def __repr__(self) -> str:
        return f"CircuitBreakerFamily(template={self.template!r}, size={len(self)}/{self.max_size})"
