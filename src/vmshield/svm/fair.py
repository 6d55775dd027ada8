"""Per-VM fair admission to the scan workers: round robin across VMs, a per-VM limit, a bounded queue.

One busy VM queues behind its own requests; another VM's next request is admitted at the next free
slot, so it waits for at most one scan per busy VM, not for the busy VM's whole backlog.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque


class Busy(Exception):
    """The scan queue is full; the agent applies its failure mode."""


class FairSlots:
    def __init__(self, capacity: int, per_vm: int, max_waiting: int) -> None:
        self.capacity = capacity
        self.per_vm = per_vm
        self.max_waiting = max_waiting
        self.running = 0
        self.per_vm_running: Counter[str] = Counter()
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self.waiting = 0
        self._tick = 0
        self._last: dict[str, int] = {}  # when each VM was last admitted

    async def acquire(self, vm: str) -> None:
        if (
            not self._queues
            and self.running < self.capacity
            and self.per_vm_running[vm] < self.per_vm
        ):
            self._take(vm)
            return
        if self.waiting >= self.max_waiting:
            raise Busy(f"scan queue full ({self.waiting} waiting)")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(vm, deque()).append(fut)
        self.waiting += 1
        self._dispatch()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(vm)  # admitted just as we were cancelled: give the slot back
            else:
                fut.cancel()
            raise

    def _take(self, vm: str) -> None:
        self.running += 1
        self.per_vm_running[vm] += 1
        self._tick += 1
        self._last[vm] = self._tick

    def release(self, vm: str) -> None:
        self.running -= 1
        self.per_vm_running[vm] -= 1
        if self.per_vm_running[vm] <= 0:
            del self.per_vm_running[vm]
            if vm not in self._queues:
                self._last.pop(vm, None)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.running < self.capacity and self._queues:
            best: str | None = None
            for vm in list(self._queues):
                q = self._queues[vm]
                while q and q[0].cancelled():
                    q.popleft()
                    self.waiting -= 1
                if not q:
                    del self._queues[vm]
                    continue
                if self.per_vm_running[vm] >= self.per_vm:
                    continue
                # Fewest scans running first, then the VM served longest ago (round robin).
                if best is None or (self.per_vm_running[vm], self._last.get(vm, 0)) < (
                    self.per_vm_running[best],
                    self._last.get(best, 0),
                ):
                    best = vm
            if best is None:
                return
            q = self._queues[best]
            fut = q.popleft()
            self.waiting -= 1
            if not q:
                del self._queues[best]
            self._take(best)
            fut.set_result(None)
