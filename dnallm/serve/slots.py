"""One generation at a time, a bounded line of requests waiting for their turn.

Lives on the server's event loop (no threads touch it). A request takes a ``Ticket`` when
it is accepted (refused at once when the line is full), waits for the slot, and releases
the ticket exactly once however it ends: finished, failed, or its client gone.
"""

from __future__ import annotations

import asyncio


class QueueFull(Exception):
    pass


class Slots:
    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.waiting = 0
        self.active = 0
        self.completed = 0
        self.cancelled = 0
        self.failed = 0
        self.generated_tokens = 0
        self._lock = asyncio.Lock()

    def reserve(self) -> "Ticket":
        if self.waiting + self.active >= 1 + self.max_queue:
            raise QueueFull(
                f"server busy: {self.active} generating and {self.waiting} waiting (max_queue={self.max_queue})"
            )
        self.waiting += 1
        return Ticket(self)

    def count(self, generation) -> None:
        """Tally a generation that has stopped: finished, cancelled (client gone) or failed."""
        self.generated_tokens += len(generation.new_tokens)
        if generation.error is not None:
            self.failed += 1
        elif generation.cancelled:
            self.cancelled += 1
        else:
            self.completed += 1

    def stats(self) -> dict:
        return {
            "active": self.active,
            "waiting": self.waiting,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "failed": self.failed,
            "generated_tokens": self.generated_tokens,
        }


class Ticket:
    def __init__(self, slots: Slots):
        self.slots = slots
        self.state = "waiting"  # -> active -> released

    async def acquire(self) -> None:
        await self.slots._lock.acquire()
        if self.state != "waiting":  # released while waiting: hand the slot straight back
            self.slots._lock.release()
            return
        self.slots.waiting -= 1
        self.slots.active += 1
        self.state = "active"

    def release(self) -> None:
        if self.state == "waiting":
            self.slots.waiting -= 1
        elif self.state == "active":
            self.slots.active -= 1
            self.slots._lock.release()
        self.state = "released"
