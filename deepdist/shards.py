"""Sharded models: every parameter split by rows over N model servers, and the client that routes.

``DeepDist(model, servers=N)`` runs N model servers, each holding a contiguous range of rows of
every parameter, with its own port, ledger and applier (:mod:`deepdist.shard_server`). Tasks talk
to all of them through a :class:`ShardedClient`, which has :class:`~deepdist.client.ModelClient`'s
methods: it splits each update by the shards' row ranges, sends the pieces in parallel, and joins
what the shards answer back into whole parameters.

Every push goes to every shard, with the same sequence number (a shard whose rows a sparse update
misses gets an empty piece). Each shard's ledger then books the same pushes of the same attempts,
so reconciling every shard with the winning attempts Spark kept leaves each shard, and so the
whole model, exactly as if each partition ran once.

Example::

    >>> import numpy as np
    >>> from deepdist.shards import ShardLayout
    >>> layout = ShardLayout.of({"w": np.zeros((50_000, 2)), "b": np.zeros(10)}, 2)
    >>> layout.ranges("w"), layout.ranges("b")      # b is small: it stays whole on shard 0
    ([(0, 25000), (25000, 50000)], [(0, 10), (10, 10)])
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np

from .errors import ConfigurationError, InvalidUpdateError
from .params import ModelSpec
from .sparse import SparseRows, copy_rows
from .validation import check_int
from . import wire

__all__ = ["ShardLayout", "ShardedClient", "flat_aliases"]

# One pool of sender threads per process, shared by every client in it: a PySpark worker runs
# task after task, each with a fresh client, and a pool per client would leave its threads behind
_pool_lock = threading.Lock()
_pool: tuple | None = None   # (pid, workers, executor)


def _sender_pool(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < workers:
            # a forked child must not use its parent's threads (they did not come with it)
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            _pool = (os.getpid(), workers, concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="deepdist-shard-sender"))
        return _pool[2]


#: parameters of fewer rows live whole on shard 0 (the driver's): split, they would cost every push
#: N pieces for no relief, and counters a descent keeps (words done, rounds) stay whole where the
#: driver reads them. A row count, not a size, so that parameters of as many rows (word vectors
#: and their per-row push counts) are always split alike
WHOLE_BELOW_ROWS = 1024


def flat_aliases(params: dict) -> dict:
    """``{flat: base}`` for each one-dimensional parameter that is ``base.reshape(-1)`` of a
    C-contiguous parameter of more dimensions (GibbsLDA's counts take sparse deltas by flat index
    and serve rows of the table): sharded, the two must be cut at the same places and stay one
    array on every shard."""
    out = {}
    for name, flat in params.items():
        if not isinstance(flat, np.ndarray) or flat.ndim != 1 or not flat.flags.c_contiguous:
            continue
        for other, base in params.items():
            if (isinstance(base, np.ndarray) and base.ndim > 1 and base.flags.c_contiguous
                    and base.size == flat.size and base.dtype == flat.dtype
                    and base.__array_interface__["data"][0] == flat.__array_interface__["data"][0]):
                out[name] = other
                break
    return out


class ShardLayout:
    """Which rows of each parameter each of ``n`` shards holds: contiguous ranges, shard 0 first.

    Shard ``s`` holds rows ``[ceil(R s / n), ceil(R (s + 1) / n))`` of a parameter of R rows, so
    row 0 always lives on shard 0 (where a wait on ``name[0]`` is answered) and a parameter of
    fewer than ``n`` rows leaves the last shards without it. Parameters of fewer than
    ``whole_below`` rows live whole on shard 0. A flat alias (``aliases``: ``{flat: base}``, see
    :func:`flat_aliases`) is cut where its base is, times the base's row length.

    Two roles serve a descent that keeps state beside the rows it splits (OnlineLDA's):
    ``replicated`` parameters (small bookkeeping: a tag naming each update's chunk, a step count
    tasks wait for) are whole on every shard, every update of them reaches every shard whole, and
    reads are answered by shard 0 (a wait by every shard, on its own copy); a ``per_shard``
    parameter has one row per shard, row ``s`` on shard ``s`` (a partial sum over each shard's rows
    that readers add up).
    """

    def __init__(self, spec: ModelSpec, n: int, whole_below: int | None = None, aliases: dict | None = None,
                 replicated=(), per_shard=()):
        self.spec = spec
        self.n = check_int("servers", n)
        self.aliases = dict(aliases or {})
        self.replicated = frozenset(replicated)
        whole_below = WHOLE_BELOW_ROWS if whole_below is None else whole_below
        self.edges = {}
        for name, p in spec.items():
            rows = p.shape[0]
            if name in per_shard:
                if rows != n:
                    raise ConfigurationError(f"{name!r} has one row per model server: {n} rows for servers={n}, "
                                             f"got {rows}")
                self.edges[name] = np.arange(n + 1, dtype=np.int64)
            elif rows < whole_below or name in self.replicated:
                self.edges[name] = np.array([0] + [rows] * n, dtype=np.int64)
            else:
                self.edges[name] = np.array([-(-rows * s // n) for s in range(n + 1)], dtype=np.int64)
        for flat, base in self.aliases.items():
            width = int(np.prod(spec[base].shape[1:]))
            if spec[flat].shape != (spec[base].shape[0] * width,):
                raise ConfigurationError(f"{flat!r} {spec[flat].shape} is not a flat view of {base!r} "
                                         f"{spec[base].shape}")
            self.edges[flat] = self.edges[base] * width

    @classmethod
    def of(cls, params: dict, n: int, whole_below: int | None = None) -> "ShardLayout":
        return cls(ModelSpec.of(params), n, whole_below, flat_aliases(params))

    def ranges(self, name: str) -> list:
        edges = self.edges[name]
        return [(int(edges[s]), int(edges[s + 1])) for s in range(self.n)]

    def holds(self, shard: int, name: str) -> bool:
        edges = self.edges[name]
        return edges[shard + 1] > edges[shard]

    @property
    def used(self) -> int:
        """How many shards hold rows at all (1 when every parameter stays whole on shard 0)."""
        return sum(1 for s in range(self.n) if self.names(s))

    def names(self, shard: int) -> list:
        """The parameters shard ``shard`` serves rows of (a replicated one: shard 0 only)."""
        return [name for name in self.spec if self.holds(shard, name)]

    def slices(self, params: dict, shard: int) -> dict:
        """What shard ``shard`` keeps of full-size ``params`` (some or all of the model): its rows,
        and the replicated parameters whole. Views, not copies."""
        out = {}
        for name in self.spec:
            if name not in params:
                continue
            if name in self.replicated:
                out[name] = params[name]
            elif self.holds(shard, name):
                lo, hi = self.ranges(name)[shard]
                out[name] = params[name][lo:hi]
        return out

    def _cuts(self, name: str, indices: np.ndarray):
        """Per shard, the ``indices`` it owns: ``[(shard, lo, selector)]``, where the selector is a
        slice when the indices are sorted (what tasks send: no mask, no copy) and a mask otherwise."""
        edges = self.edges[name]
        if indices.size and (indices.min() < 0 or indices.max() >= edges[-1]):
            raise InvalidUpdateError(f"row index out of range for {name!r}: rows must be in [0, {edges[-1]}), "
                                     f"got [{indices.min()}, {indices.max()}]")
        if indices.size < 2 or bool((indices[1:] >= indices[:-1]).all()):
            bounds = np.searchsorted(indices, edges)
            return [(s, int(edges[s]), slice(int(bounds[s]), int(bounds[s + 1])))
                    for s in range(self.n) if bounds[s + 1] > bounds[s]]
        owner = np.searchsorted(edges, indices, side="right") - 1
        out = []
        for s in range(self.n):
            mask = owner == s
            if edges[s + 1] > edges[s] and mask.any():
                out.append((s, int(edges[s]), mask))
        return out

    def split_update(self, update: dict) -> list:
        """``update`` cut into one update per shard, row indices made local to each shard.

        A shard that gets nothing gets an empty sparse piece of one of its parameters, so that
        every shard sees every push (same count, same sequence numbers).
        """
        pieces = [{} for _ in range(self.n)]
        for name, part in update.items():
            param = self.spec.get(name)
            if param is None:
                raise InvalidUpdateError(f"unknown parameter {name!r}; the model has {sorted(self.spec)}")
            ranges = self.ranges(name)
            if isinstance(part, SparseRows):
                if tuple(part.shape) != param.shape:
                    raise InvalidUpdateError(f"sparse rows for {name!r} claim shape {part.shape}, "
                                             f"the parameter is {param.shape}")
                cuts = self._cuts(name, part.indices)   # refuses rows out of range
                if name in self.replicated:   # every shard's descent reads it: every shard gets it whole
                    for piece in pieces:
                        piece[name] = part
                    continue
                for shard, lo, pick in cuts:
                    hi = ranges[shard][1]
                    indices = part.indices[pick]
                    pieces[shard][name] = SparseRows(indices - indices.dtype.type(lo) if lo else indices,
                                                     part.values[pick], (hi - lo,) + param.shape[1:])
            else:
                part = np.asarray(part)
                if part.shape != param.shape:
                    raise InvalidUpdateError(f"update for {name!r} has shape {part.shape}, "
                                             f"the parameter is {param.shape}")
                if name in self.replicated:
                    for piece in pieces:
                        piece[name] = part
                    continue
                for shard, (lo, hi) in enumerate(ranges):
                    if hi > lo:
                        pieces[shard][name] = part[lo:hi]
        for shard, piece in enumerate(pieces):
            if not piece:
                name = self.names(shard)[0]
                param = self.spec[name]
                lo, hi = self.ranges(name)[shard]
                piece[name] = SparseRows(np.zeros(0, np.int32), np.zeros((0,) + param.shape[1:], param.dtype),
                                         (hi - lo,) + param.shape[1:])
        return pieces

    def split_rows(self, rows: dict) -> tuple[list, dict]:
        """``rows`` ``{name: indices}`` as one request per shard (local indices), and for each
        name the order that puts the shards' answers back in the caller's order."""
        pieces = [{} for _ in range(self.n)]
        order = {}
        for name, idx in rows.items():
            if name not in self.spec:
                raise InvalidUpdateError(f"unknown parameter {name!r}; the model has {sorted(self.spec)}")
            idx = np.asarray(idx)
            cuts = self._cuts(name, idx)
            for shard, lo, pick in cuts:
                pieces[shard][name] = idx[pick] - lo if lo else idx[pick]
            # sorted rows come back in order by shard: nothing to put back
            order[name] = (None if all(isinstance(pick, slice) for _, _, pick in cuts)
                           else np.concatenate([np.flatnonzero(pick) for _, _, pick in cuts]))
        return pieces, order

    def join_rows(self, rows: dict, order: dict, answers: list) -> dict:
        """The shards' :class:`SparseRows` answers to :meth:`split_rows` as one per name, in
        the caller's order and with global row indices."""
        out = {}
        for name, idx in rows.items():
            param = self.spec[name]
            parts = [answer[name].values for answer in answers if name in answer]
            values = (parts[0] if len(parts) == 1 else np.concatenate(parts) if parts
                      else np.zeros((0,) + param.shape[1:], param.dtype))
            if order[name] is not None:
                back = np.empty_like(values)
                back[order[name]] = values
                values = back
            out[name] = SparseRows(np.asarray(idx), values, param.shape)
        return out

    def join_changes(self, answers: list) -> dict:
        """The shards' ``/changes`` (local rows) as one update with global row indices."""
        out = {}
        for shard, answer in enumerate(answers):
            for name, part in answer.items():
                if not self.holds(shard, name):   # another shard's copy of a replicated parameter
                    continue
                lo = self.ranges(name)[shard][0]
                shifted = SparseRows(part.indices.astype(np.int64) + lo, part.values, self.spec[name].shape)
                if name in out:
                    prev = out[name]
                    shifted = SparseRows(np.concatenate([prev.indices, shifted.indices]),
                                         np.concatenate([prev.values, shifted.values]), prev.shape)
                out[name] = shifted
        return out


class ShardedClient:
    """:class:`~deepdist.client.ModelClient`'s methods over N shards, each a ``ModelClient``.

    Versions: each shard counts its own. Methods return their sum (it grows whenever any shard's
    does); the client remembers each shard's version from its last answer and stamps each
    piece of a push with its own shard's, so a shard measures staleness in its own versions.
    One client belongs to one task (Spark gives every task its own copy of the closure).

    Example::

        >>> client = dd.client                                   # doctest: +SKIP
        >>> version, params = client.pull()                      # the whole model, joined
    """

    def __init__(self, clients: list, layout: ShardLayout):
        if len(clients) != layout.n:
            raise ConfigurationError(f"{len(clients)} clients for {layout.n} shards")
        self.clients = list(clients)
        self.layout = layout
        self._seen = [0] * layout.n

    def __repr__(self) -> str:
        return f"ShardedClient({[c.url for c in self.clients]!r})"

    @property
    def url(self) -> str:
        return self.clients[0].url

    def _each(self, calls: list) -> list:
        """Run ``calls`` (one zero-argument callable per shard) in parallel; their results in order."""
        pool = _sender_pool(max(1, self.layout.n - 1))
        futures = [pool.submit(call) for call in calls[1:]]
        first = calls[0]()
        return [first] + [f.result() for f in futures]

    def _version(self) -> int:
        return int(sum(self._seen))

    def _remember(self, versions) -> int:
        for shard, version in enumerate(versions):
            self._seen[shard] = int(version)
        return self._version()

    # -- ModelClient's API ------------------------------------------------------------------
    def health(self) -> dict:
        answers = self._each([c.health for c in self.clients])
        return {**answers[0], "shards": answers}

    def status(self) -> dict:
        answers = self._each([c.status for c in self.clients])
        return {**answers[0], "version": sum(a["version"] for a in answers), "shards": answers}

    def pull(self, names=None, after=None) -> tuple[int, dict]:
        names = list(names) if names else list(self.layout.spec)
        calls = []
        for shard, client in enumerate(self.clients):
            mine = [n for n in names if self.layout.holds(shard, n)]
            calls.append((lambda c=client, m=mine: c.pull(m, after)) if mine else (lambda: (None, {})))
        answers = self._each(calls)
        versions = [v if v is not None else self._seen[s] for s, (v, _) in enumerate(answers)]
        out = {}
        for name in names:
            out[name] = np.concatenate([arrays[name] for _, arrays in answers if name in arrays])
        return self._remember(versions), out

    def pull_into(self, target: dict, names=None, after=None) -> int:
        version, arrays = self.pull(names, after)
        for name, array in arrays.items():
            np.copyto(target[name], array)
        return version

    def _rows_by_shard(self, rows: dict, ask) -> tuple[int, dict]:
        pieces, order = self.layout.split_rows(rows)
        calls = [(lambda s=s, p=p: ask(s, p)) if p else (lambda: (None, {}))
                 for s, p in enumerate(pieces)]
        answers = self._each(calls)
        versions = [a[0] if a[0] is not None else self._seen[s] for s, a in enumerate(answers)]
        return self._remember(versions), self.layout.join_rows(rows, order, [a[1] for a in answers])

    def pull_rows(self, rows: dict, after=None) -> tuple[int, dict]:
        return self._rows_by_shard(rows, lambda s, p: self.clients[s].pull_rows(p, after))

    def pull_rows_when(self, rows: dict, name: str, at_least: float, timeout: float,
                       after=None) -> tuple[int, dict, bool]:
        """Shard 0 holds ``name[0]``: it alone waits, and the other shards are read after it. A
        replicated ``name`` is waited for by every shard on its own copy, all at once: each
        shard's descent moves its copy when its own rows have moved."""
        everywhere = name in self.layout.replicated
        pieces, order = self.layout.split_rows(rows)
        ready = [True] * self.layout.n

        def ask(shard):
            piece = pieces[shard]
            if not (shard == 0 or everywhere):
                return self.clients[shard].pull_rows(piece, after) if piece else (None, {})
            injected = not piece   # the shard waits on a row nobody asked for: its answer is not theirs
            version, arrays, ready[shard] = self.clients[shard].pull_rows_when(
                piece if not injected else {name: np.zeros(1, np.int32)}, name, at_least, timeout, after)
            return version, ({} if injected else arrays)

        if everywhere:
            answers = self._each([(lambda s=s: ask(s)) for s in range(self.layout.n)])
        else:
            first = ask(0)
            answers = [first] + self._each([lambda: None] + [(lambda s=s: ask(s)) for s in range(1, self.layout.n)])[1:]
        versions = [a[0] if a[0] is not None else self._seen[s] for s, a in enumerate(answers)]
        arrays = [a[1] for a in answers]
        return self._remember(versions), self.layout.join_rows(rows, order, arrays), all(ready)

    def pull_rows_into(self, target: dict, rows: dict, after=None) -> int:
        version, arrays = self.pull_rows(rows, after)
        copy_rows(target, arrays)
        return version

    def pull_changes(self, since: int, partition: int, attempt: int):
        """Every shard's changes since the version this client last saw of it; None (pull the
        model) if any shard cannot tell."""
        seen = list(self._seen)
        answers = self._each([(lambda c=c, v=v: c.pull_changes(v, partition, attempt))
                              for c, v in zip(self.clients, seen)])
        version = self._remember([v for v, _ in answers])
        if any(arrays is None for _, arrays in answers):
            return version, None
        return version, self.layout.join_changes([arrays for _, arrays in answers])

    def _metas(self, meta: wire.UpdateMeta) -> list:
        return [wire.UpdateMeta(version=self._seen[s], epoch=meta.epoch, partition=meta.partition,
                                attempt=meta.attempt, seq=meta.seq, metrics=meta.metrics if s == 0 else {})
                for s in range(self.layout.n)]

    def push(self, update: dict, meta: wire.UpdateMeta) -> int:
        pieces, metas = self.layout.split_update(update), self._metas(meta)
        sizes = self._each([(lambda c=c, p=p, m=m: c.push(p, m)) for c, p, m in zip(self.clients, pieces, metas)])
        return int(sum(sizes))

    def push_pull_rows(self, update: dict, meta: wire.UpdateMeta, rows: dict):
        pieces, metas = self.layout.split_update(update), self._metas(meta)
        wanted, order = self.layout.split_rows(rows)

        def exchange(shard):
            client = self.clients[shard]
            if wanted[shard]:
                return client.push_pull_rows(pieces[shard], metas[shard], wanted[shard])
            return client.push(pieces[shard], metas[shard]), None, {}

        answers = self._each([(lambda s=s: exchange(s)) for s in range(self.layout.n)])
        versions = [v if v is not None else self._seen[s] for s, (_, v, _) in enumerate(answers)]
        version = self._remember(versions)
        return int(sum(a[0] for a in answers)), version, self.layout.join_rows(rows, order, [a[2] for a in answers])

    def push_pull_changes(self, update: dict, meta: wire.UpdateMeta, since: int):
        pieces, metas, seen = self.layout.split_update(update), self._metas(meta), list(self._seen)
        answers = self._each([(lambda c=c, p=p, m=m, v=v: c.push_pull_changes(p, m, v))
                              for c, p, m, v in zip(self.clients, pieces, metas, seen)])
        version = self._remember([v for _, v, _ in answers])
        nbytes = int(sum(a[0] for a in answers))
        if any(arrays is None for _, _, arrays in answers):
            return nbytes, version, None
        return nbytes, version, self.layout.join_changes([arrays for _, _, arrays in answers])

