r"""The one pass over a data set: seeded chunks on the device, sharded across ranks, gathered in order.

Every evaluation of pyrovae (:func:`~pyrovae.log_likelihood`, :func:`~pyrovae.bounds`,
:func:`~pyrovae.ais`, :func:`~pyrovae.bdmc`, :func:`~pyrovae.latent_stats`, the anomaly scores,
:mod:`~pyrovae.analysis.latent_space`, the trainer's validation pass) is a per-chunk function handed to
:meth:`Sweep.map`, which

1. cuts the :math:`N` data points into chunks of ``chunk_size`` (the last one shorter);
2. deals the chunks out to the :math:`W` ranks of a distributed run in contiguous shares
   (:func:`pyrovae.distributed.shard`), with the chunk boundaries of the whole data set, so that a
   data point lands in the same chunk whatever :math:`W` is;
3. runs the function on each of this rank's chunks, on the device, without gradients (unless asked), with
   Pyro's validation off, at the sweep's arithmetic precision (:mod:`pyrovae.precision`), and with the
   random state seeded from ``(seed, lo)`` alone, ``lo`` the chunk's first data point
   (:func:`pyrovae.distributed.derived_seed`): the draws of a data point do not depend on the rank that makes
   them, nor on the chunks before it; the caller's random state is restored afterwards;
4. shows one progress bar, on rank 0;
5. moves each chunk's per-datapoint rows to the CPU, optionally reduces them in blocks of at
   least ``reduce_rows`` rows (to bound memory, or to amortize a reduction's fixed cost), and
   gathers every rank's blocks in input order, on every rank.

The per-chunk function returns a tensor, or a tuple of tensors (or ``None``), each with one row per data point
of the chunk; :meth:`Sweep.map` returns the same structure with :math:`N` rows. An exception on one rank ends
the sweep on every rank: the failing rank raises it, the others a :class:`~pyrovae.errors.RankError` that
names the rank and the error, so that no rank is left waiting in a collective.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from tqdm.auto import tqdm

from pyrovae import devices, distributed
from pyrovae.data.source import DataSource
from pyrovae.errors import DataError, RankError
from pyrovae.options import check_option
from pyrovae.precision import check_precision, using_precision
from pyrovae.seeds import seeded

__all__ = ["Chunk", "Sweep"]

Rows = tuple[torch.Tensor | None, ...]


@dataclass
class Chunk:
    """Data points ``lo:hi`` of a sweep, as the per-chunk function of :meth:`Sweep.map` sees them.

    :ivar int lo: the first data point.
    :ivar int hi: one past the last.
    :ivar tuple args: the data points' columns on the device, then the sweep's ``model_args``.
    :ivar int seed: the chunk's seed, derived from the sweep's seed and ``lo`` (``None`` unseeded).
    :ivar bool validate: whether Pyro's validation was enabled when the sweep started (it is off
        inside the chunk; a function that checks its data checks them when this is set).
    """

    lo: int
    hi: int
    args: tuple
    seed: int | None
    validate: bool
    _bar: tqdm | None = field(default=None, repr=False)
    _advanced: int = field(default=0, repr=False)

    @property
    def size(self) -> int:
        """The number of data points, ``hi - lo``."""
        return self.hi - self.lo

    def advance(self, units: int = 1) -> None:
        """Report ``units`` of progress within the chunk (the bar counts data points unless the
        sweep says otherwise; what the function does not report is added when it returns)."""
        self._advanced += units
        if self._bar is not None:
            self._bar.update(units)


class Sweep:
    """One pass over ``data`` in chunks of ``chunk_size`` data points (see the module docstring).

    :param data: a tensor ``(N, ...)``, a tuple of tensors sharing ``N``, or a data set
        (:class:`~pyrovae.data.DataSource`).
    :param int chunk_size: data points per chunk.
    :param device: where the chunks go (default the CPU).
    :param int seed: the seed each chunk's is derived from; ``None`` leaves the random state alone.
    :param tuple model_args: appended to each chunk's columns (on the device).
    :param bool progress: show a progress bar (on rank 0).
    :param str desc: the progress bar's label.
    :param str unit: what the bar counts.
    :param work: the bar's units per chunk, ``work(lo, hi)`` (default: its data points).
    :param str precision: the arithmetic precision of the per-chunk function, one of
        :data:`~pyrovae.precision.PRECISIONS` (default ``"highest"``).
    """

    def __init__(
        self,
        data,
        chunk_size: int,
        *,
        device: torch.device | None = None,
        seed: int | None = None,
        model_args: tuple = (),
        progress: bool = False,
        desc: str = "sweep",
        unit: str = "x",
        work: Callable[[int, int], int] | None = None,
        precision: str = "highest",
    ):
        self.data = DataSource(data)
        self.num_data = self.data.num_data
        self.chunk_size = min(check_option("chunk_size", chunk_size), self.num_data)
        self.device = device or torch.device("cpu")
        self.precision = check_precision(precision, self.device)
        self.seed = seed
        self.model_args = devices.move(tuple(model_args), self.device)
        self.progress, self.desc, self.unit = progress, desc, unit
        self.work = work or (lambda lo, hi: hi - lo)
        self.span = distributed.shard(self.num_data, self.chunk_size)

    def __len__(self) -> int:
        """The number of data points this rank sweeps."""
        return self.span[1] - self.span[0]

    def args(self, lo: int, hi: int) -> tuple:
        """Data points ``lo:hi`` on the device, then ``model_args``; a
        :class:`~pyrovae.errors.DataError` if a floating-point column holds NaN or infinite values."""
        columns = devices.move(self.data.chunk(lo, hi), self.device)
        for t in columns:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(1).sum())
                raise DataError(
                    f"the data contain NaN or infinite values in {bad} of data points {lo} to {hi - 1}; "
                    "remove or impute them first"
                )
        return columns + self.model_args

    def chunks(self, span: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """The ``(lo, hi)`` of the chunks of this rank's share (or of ``span``, a range of data
        points starting at a chunk boundary)."""
        lo, hi = self.span if span is None else span
        return [(i, min(i + self.chunk_size, hi)) for i in range(lo, hi, self.chunk_size)]

    def each(self) -> Iterator[tuple[int, int, tuple]]:
        """Every chunk of the whole data set, in order, on every rank: ``(lo, hi, args)``, neither
        seeded nor sharded, for a pass whose unit is not the data point (the aggregate posterior of
        :func:`~pyrovae.latent_stats` sums over every data point for each of this rank's rows)."""
        for lo, hi in self.chunks((0, self.num_data)):
            yield lo, hi, self.args(lo, hi)

    def chunk_seed(self, lo: int) -> int | None:
        """The seed of the chunk that starts at data point ``lo``."""
        return None if self.seed is None else distributed.derived_seed(self.seed, lo)

    def map(
        self,
        fn: Callable[[Chunk], torch.Tensor | tuple | None],
        *,
        grad: bool = False,
        reduce: Callable[[Rows], Rows] | None = None,
        reduce_rows: int = 1,
    ):
        """``fn`` on every chunk of this rank; the rows of every rank, gathered in input order.

        :param fn: ``fn(chunk)`` returns a tensor, or a tuple of tensors (or ``None``), each with
            ``chunk.size`` rows.
        :param bool grad: run ``fn`` with gradients enabled (for an optimization per chunk).
        :param reduce: applied to blocks of at least ``reduce_rows`` rows (the tuple of the
            outputs' rows, on the CPU) before they are kept; returns a tuple of row tensors.
        :returns: the outputs' structure (the reduction's, a tuple, with ``reduce``), with the rows
            of all :math:`N` data points, on the CPU.
        """
        validate = is_validation_enabled()
        chunks = self.chunks()
        single = None
        blocks: list[Rows] = []
        pending: list[Rows] = []
        error = None

        def flush() -> None:
            if pending:
                block = _concat(pending)
                blocks.append(tuple(reduce(block)) if reduce is not None else block)
                pending.clear()

        shown = self.progress and distributed.is_main()
        bar = tqdm(
            total=sum(self.work(lo, hi) for lo, hi in chunks),
            unit=self.unit,
            desc=self.desc,
            disable=not shown,
        )
        try:
            for lo, hi in chunks:
                seed = self.chunk_seed(lo)
                # the global modes are set per chunk: the caller's code runs in its own modes
                with (
                    torch.set_grad_enabled(grad),
                    pyro.validation_enabled(False),
                    seeded(seed),
                    using_precision(self.precision, self.device),
                ):
                    chunk = Chunk(lo, hi, self.args(lo, hi), seed, validate, bar)
                    out = fn(chunk)
                single = not isinstance(out, tuple)
                pending.append(tuple(None if t is None else t.detach().cpu() for t in _as_tuple(out)))
                bar.update(self.work(lo, hi) - chunk._advanced)
                if sum(_num_rows(rows) for rows in pending) >= reduce_rows:
                    flush()
            flush()
        except Exception as e:  # reported to every rank before it is raised here
            error = e
        finally:
            bar.close()
        gathered, single = self._gather(blocks, single, error)
        rows = _concat(gathered)
        return rows[0] if single and reduce is None else rows

    def _gather(self, blocks: list[Rows], single: bool | None, error: Exception | None):
        """Every rank's blocks in rank order (and whether the outputs are one tensor), on every
        rank; an error on any rank raised on all of them."""
        if not distributed.active():
            if error is not None:
                raise error
            return blocks, single
        report = None if error is None else f"{type(error).__name__}: {error}"
        parts = distributed.all_gather_object((report, blocks if error is None else [], single))
        if error is not None:
            raise error
        for rank, (message, _, _) in enumerate(parts):
            if message is not None:
                raise RankError(f"rank {rank} of the distributed run failed in {self.desc}: {message}")
        kinds = [s for _, part, s in parts if part]
        return [block for _, part, _ in parts for block in part], kinds[0] if kinds else single


def _as_tuple(out) -> tuple:
    return out if isinstance(out, tuple) else (out,)


def _num_rows(rows: Rows) -> int:
    return next((t.shape[0] for t in rows if t is not None), 0)


def _concat(blocks: list[Rows]) -> Rows:
    """The blocks' rows concatenated position by position (``None`` where a position holds none)."""
    if not blocks:
        return ()
    return tuple(None if parts[0] is None else torch.cat(parts) for parts in zip(*blocks, strict=True))
