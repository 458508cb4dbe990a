"""Per-sender bookkeeping of pushes: which arrived (retried POSTs are taken once) and which are done.

A sender is one task attempt, ``(epoch, partition, attempt)``; its pushes carry sequence
numbers 0, 1, 2, ... in the order the task made them. The book keeps, per sender of an
epoch not yet settled, which pushes arrived (so the copy of a POST the client retried is
dropped) and how many the applier has finished (so the task's next pull can wait for its own
last push: read your own writes). Both are bounded, and both are forgotten when the epoch
is settled.
"""

from __future__ import annotations

import threading

from .errors import SupersededAttemptError

#: Task attempts (epoch, partition, attempt) of unsettled epochs whose pushes are tracked;
#: a push from one more is refused. An epoch's are forgotten when it is settled.
MAX_SENDERS = 1 << 16
#: Pushes of one attempt that may arrive ahead of a missing one (a task pushes in order).
MAX_SEQS_AHEAD = 16


class PushRefusedError(SupersededAttemptError):
    """A push beyond the store's bookkeeping bounds (too many senders, too far out of order): a 409."""


class SenderBook:
    """Which pushes of each sender arrived, and how many the applier finished.

    ``on_reject(reason)`` is told of every push refused or dropped as a duplicate.
    """

    def __init__(self, on_reject=lambda reason: None):
        self._on_reject = on_reject
        self._cond = threading.Condition()
        # sender -> [floor, seqs >= floor that arrived...]: every seq below floor arrived
        self._seen: dict = {}
        # sender -> how many of its pushes the applier has finished (applied or refused)
        self._finished: dict = {}

    def admit(self, sender: tuple, seq: int) -> bool:
        """Book push ``seq`` of ``sender``; False if it was booked already (a retried POST).

        Bounded: a sender's pushes come in order, so it keeps the number below which every seq
        arrived plus at most ``MAX_SEQS_AHEAD`` seqs beyond a gap; at most ``MAX_SENDERS``
        senders are tracked. Past either bound the push is refused (:class:`PushRefusedError`).
        """
        with self._cond:
            book = self._seen.get(sender)
            if book is None:
                if len(self._seen) >= MAX_SENDERS:
                    self._on_reject("too_many_senders")
                    raise PushRefusedError(
                        f"the server already tracks {MAX_SENDERS} task attempts of unsettled epochs; "
                        f"refusing epoch {sender[0]} partition {sender[1]} attempt {sender[2]}")
                book = self._seen[sender] = [0]
            floor = book[0]
            if seq < floor or seq in book[1:]:
                self._on_reject("duplicate")
                return False
            if seq == floor:
                floor += 1
                while floor in book[1:]:
                    book.remove(floor)
                    floor += 1
                book[0] = floor
            elif len(book) > MAX_SEQS_AHEAD:
                self._on_reject("out_of_order")
                raise PushRefusedError(
                    f"push {seq} of partition {sender[1]} attempt {sender[2]} is out of order: "
                    f"push {floor} has not arrived and {MAX_SEQS_AHEAD} later ones have")
            else:
                book.append(seq)
            return True

    def forget_push(self, sender: tuple, seq: int) -> None:
        """Un-book push ``seq`` (it was not queued), so that its retry is taken."""
        with self._cond:
            book = self._seen.get(sender)
            if book is None:
                return
            if seq in book[1:]:
                book.remove(seq)
            elif seq == book[0] - 1:
                book[0] = seq
            elif seq < book[0]:  # later pushes arrived meanwhile: they stay booked
                if book[0] - seq - 1 + len(book) - 1 > MAX_SEQS_AHEAD:
                    return       # cannot reopen it within the bound: its retry is refused as a duplicate
                book[1:] = sorted(set(book[1:]) | set(range(seq + 1, book[0])))
                book[0] = seq

    def finish(self, sender: tuple, seq: int) -> None:
        """The applier is done with push ``seq`` of ``sender`` (applied or refused)."""
        with self._cond:
            self._finished[sender] = max(self._finished.get(sender, 0), seq + 1)
            self._cond.notify_all()

    def wait_finished(self, sender: tuple, seq: int, timeout: float, given_up=lambda: False) -> bool:
        """Block until push ``seq`` of ``sender`` (and so every earlier one) is finished, or
        ``given_up()`` holds (checked on every :meth:`finish` and :meth:`forget`); False
        after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: self._finished.get(sender, 0) > seq or given_up(), timeout)

    def forget(self, epoch: int) -> None:
        """Drop the bookkeeping of ``epoch``'s senders (it is settled) and wake their waiters."""
        with self._cond:
            self._seen = {key: book for key, book in self._seen.items() if key[0] != epoch}
            self._finished = {key: n for key, n in self._finished.items() if key[0] != epoch}
            self._cond.notify_all()

    def arrived(self, sender: tuple) -> list | None:
        """``[floor, seqs beyond it...]`` of ``sender``: every push below floor arrived, and those."""
        with self._cond:
            book = self._seen.get(sender)
            return None if book is None else list(book)

    def senders(self) -> set:
        """The senders with any bookkeeping left."""
        with self._cond:
            return set(self._seen) | set(self._finished)
