r"""Anomaly and out-of-distribution detection: how well a score separates two data sets.

A detector gives every data point an anomaly score :math:`s(x)`, higher meaning more anomalous
(for a density model, typically :math:`s(x) = -\log p(x)`), and flags :math:`x` when
:math:`s(x) > t`. Given the scores :math:`\{a_i\}_{i=1}^{m}` of in-distribution data (the negatives)
and :math:`\{b_j\}_{j=1}^{n}` of out-of-distribution (OOD) data (the positives), :func:`detect`
reports the three threshold-free figures of the OOD benchmark of Hendrycks & Gimpel (2017):

- **AUROC**, the area under the ROC curve (true-positive rate against false-positive rate as
  :math:`t` varies), which equals the probability that a random OOD score exceeds a random
  in-distribution score, ties counted half (the Mann-Whitney statistic; Hanley & McNeil 1982):

  .. math:: \mathrm{AUROC} = \frac{1}{mn} \sum_{i=1}^{m} \sum_{j=1}^{n}
            \Big( \mathbb 1[b_j > a_i] + \tfrac12\, \mathbb 1[b_j = a_i] \Big).

  1 is perfect separation, 0.5 chance, and 0 perfect separation the wrong way round: what
  :math:`-\log p(x)` gives when a generative model assigns the OOD data *higher* likelihood, as
  Nalisnick et al. (2019) found for SVHN under models trained on CIFAR-10.
- **AUPRC**, the area under the precision-recall curve with OOD as the positive class, computed as
  the average precision :math:`\sum_k (R_k - R_{k-1})\, P_k` over the distinct thresholds
  (:func:`sklearn.metrics.average_precision_score`). Chance level is the fraction of OOD data,
  :math:`n/(m+n)`, so AUPRC depends on the ratio of the two sets' sizes; AUROC does not.
- **FPR95**, the false-positive rate (fraction of in-distribution data flagged) at the highest
  threshold whose true-positive rate (fraction of OOD data flagged) is at least 95 %, read off the
  exact ROC curve (:func:`sklearn.metrics.roc_curve`). Lower is better; 0 is perfect.

All three depend on the scores only through their joint ranking, and scikit-learn computes them on the ranks,
so infinite scores are allowed and rank as expected (a data point of zero likelihood, :math:`-\log p(x) =
\infty`, is the most anomalous of all); NaN scores have no rank and are refused.

References:

- D. Hendrycks and K. Gimpel (2017), "A Baseline for Detecting Misclassified and
  Out-of-Distribution Examples in Neural Networks", ICLR.
- J. A. Hanley and B. J. McNeil (1982), "The Meaning and Use of the Area under a Receiver
  Operating Characteristic (ROC) Curve", Radiology 143(1).
- E. Nalisnick, A. Matsukawa, Y. W. Teh, D. Gorur and B. Lakshminarayanan (2019), "Do Deep
  Generative Models Know What They Don't Know?", ICLR.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pyrovae.errors import ConfigError, DataError
from pyrovae.results import Result, column

__all__ = ["Detection", "detect", "detection_table"]

#: the true-positive rate at which :attr:`Detection.fpr95` is read
TPR_LEVEL = 0.95
#: the columns of :func:`detection_table` (and of :meth:`Detection.summary_table`)
TABLE_COLUMNS = ("AUROC", "AUPRC", "FPR95", "in", "out")
#: the two sets' labels, in :meth:`Detection.to_dataframe`
SETS = ("in", "out")


@dataclass(repr=False, eq=False)
class Detection(Result):
    """What :func:`detect` returns: how well the scores separate in-distribution from OOD data.

    Two results are equal (``==``) when their names, figures and scores are.

    :ivar torch.Tensor in_scores: ``(num_in,)`` scores of the in-distribution data (the negatives),
        float64 on the CPU.
    :ivar torch.Tensor out_scores: ``(num_out,)`` scores of the out-of-distribution data (the
        positives), float64 on the CPU.
    :ivar float auroc: area under the ROC curve, :math:`P(b > a) + \\tfrac12 P(b = a)`.
    :ivar float auprc: average precision, OOD as the positive class.
    :ivar float fpr95: false-positive rate at 95 % true-positive rate.
    :ivar str name: a label for the scores (the scoring method), or ``None``.
    """

    in_scores: torch.Tensor = column("in_datapoint")
    out_scores: torch.Tensor = column("out_datapoint")
    auroc: float
    auprc: float
    fpr95: float
    name: str | None = None

    @property
    def num_in(self) -> int:
        """Number of in-distribution data points :math:`m`."""
        return self.in_scores.shape[0]

    @property
    def num_out(self) -> int:
        """Number of out-of-distribution data points :math:`n`."""
        return self.out_scores.shape[0]

    @property
    def num_data(self) -> int:
        """Data points in both sets, :math:`m + n`."""
        return self.num_in + self.num_out

    @property
    def auprc_chance(self) -> float:
        """The AUPRC of a score that ignores the data: the fraction of OOD data, :math:`n/(m+n)`."""
        return self.num_out / self.num_data

    def __eq__(self, other) -> bool:
        if not isinstance(other, Detection):
            return NotImplemented
        return (
            self.name == other.name
            and (self.auroc, self.auprc, self.fpr95) == (other.auroc, other.auprc, other.fpr95)
            and torch.equal(self.in_scores, other.in_scores)
            and torch.equal(self.out_scores, other.out_scores)
        )

    __hash__ = None

    def summary(self) -> str:
        """A readable multi-line summary, with a note when the scores rank the sets the wrong way round."""
        label = "" if self.name is None else f" by {self.name!r}"
        lines = [
            f"out-of-distribution detection{label}: {self.num_in} in-distribution and "
            f"{self.num_out} out-of-distribution data points",
            f"  AUROC {self.auroc:.4f}   P(OOD score > in-distribution score), ties half; chance 0.5",
            f"  AUPRC {self.auprc:.4f}   average precision, OOD positive; chance {self.auprc_chance:.4f}",
            f"  FPR95 {self.fpr95:.4f}   in-distribution data flagged when 95 % of the OOD data are",
        ]
        infinite = [int(torch.isinf(s).sum()) for s in (self.in_scores, self.out_scores)]
        if any(infinite):
            lines.append(
                f"  infinite scores: {infinite[0]} in-distribution, {infinite[1]} out-of-distribution"
            )
        if self.auroc < 0.5:
            lines.append(
                "  NOTE: AUROC below 0.5: the in-distribution data score as more anomalous than the OOD "
                "data (as -log p(x) can when a model gives OOD data higher likelihood)"
            )
        return "\n".join(lines)

    def summary_table(self) -> pd.DataFrame:
        """The figures as one row of :func:`detection_table`."""
        return detection_table([self])

    def to_dataframe(self) -> pd.DataFrame:
        """A :class:`pandas.DataFrame`, one row per data point (in-distribution first), with
        columns ``score`` and ``set`` (``"in"`` or ``"out"``)."""
        scores = torch.cat([self.in_scores, self.out_scores]).numpy()
        sets = np.repeat(np.array(SETS), [self.num_in, self.num_out])
        return pd.DataFrame(
            {"score": scores, "set": sets}, index=pd.RangeIndex(self.num_data, name="datapoint")
        )

    def figures(self) -> dict:
        """The sizes of both sets."""
        return {"num_in": self.num_in, "num_out": self.num_out}

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """The ROC curve's false- and true-positive rates, by decreasing threshold."""
        from sklearn.metrics import roc_curve

        return roc_curve(*_labelled_ranks(self.in_scores, self.out_scores))[:2]

    def plot(self, path: str | os.PathLike | None = None, *, bins: int | None = None):
        """Histograms of both sets' scores and the ROC curve with the FPR95 point
        (:func:`pyrovae.plots.results.detection`); saved when ``path`` is given. Returns the figure.

        :param path: where to save the figure, in the format its suffix names (PNG without one; see
            :func:`pyrovae.plots.save`); ``None`` only returns it.
        :param int bins: number of histogram bins; by default numpy's ``"auto"`` choice, at most 80.
        """
        from pyrovae.plots.results import detection

        return detection(self, path, bins=bins)


def detect(in_scores, out_scores, *, name: str | None = None) -> Detection:
    """How well anomaly scores separate in-distribution data from out-of-distribution data: AUROC,
    AUPRC and FPR95 (defined in :mod:`pyrovae.analysis.detection`; Hendrycks & Gimpel 2017).

    Each set of scores is a 1-D tensor, numpy array or list with one score per data point, higher
    meaning more anomalous (for :math:`\\log p(x)`, pass :math:`-\\log p(x)`), or an object with a
    ``score`` attribute holding one (and optionally a ``method`` string, which names the result).
    Scores may be infinite (they rank as expected) but not NaN.

    :param in_scores: scores of the in-distribution data: the negatives.
    :param out_scores: scores of the out-of-distribution data: the positives.
    :param str name: a label for the result (in :func:`detection_table`); default: the scores'
        ``method``, if they have one.
    :rtype: Detection
    :raises DataError: when a set is empty, not 1-D or holds NaN, or the two sets come from different methods.
    :raises ConfigError: when ``name`` is not a string.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    if name is not None and not isinstance(name, str):
        raise ConfigError(f"name must be a string, got {type(name).__name__}")
    a, in_method = _as_scores(in_scores, "in-distribution")
    b, out_method = _as_scores(out_scores, "out-of-distribution")
    if in_method is not None and out_method is not None and in_method != out_method:
        raise DataError(
            f"the in-distribution scores are by {in_method!r} and the out-of-distribution scores by "
            f"{out_method!r}: score both sets with the same method"
        )
    if name is None:
        name = in_method if in_method is not None else out_method
    labels, ranks = _labelled_ranks(a, b)
    # every threshold kept: dropping collinear points could skip the first one reaching the level
    fpr, tpr, _ = roc_curve(labels, ranks, drop_intermediate=False)
    # tpr rises as the threshold falls, and ends at 1: the first point at or above the level
    fpr95 = float(fpr[np.searchsorted(tpr, TPR_LEVEL, side="left")])
    auroc, auprc = float(roc_auc_score(labels, ranks)), float(average_precision_score(labels, ranks))
    return Detection(a, b, auroc, auprc, fpr95, name)


def detection_table(results: Sequence[Detection]) -> pd.DataFrame:
    """One row per result, indexed by its name (its position when it has none), with the columns ``AUROC``,
    ``AUPRC``, ``FPR95``, ``in`` and ``out`` (numbers of data points): several scoring methods side by side.

    :param results: results of :func:`detect`, with distinct names.
    :rtype: pandas.DataFrame
    """
    results = list(results)
    for r in results:
        if not isinstance(r, Detection):
            raise DataError(f"detection_table takes results of pyrovae.detect, got {type(r).__name__}")
    names = [str(i) if r.name is None else r.name for i, r in enumerate(results)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(
            f"several results are named {', '.join(map(repr, repeated))}: "
            "give each detect() call its own name="
        )
    rows = [(r.auroc, r.auprc, r.fpr95, r.num_in, r.num_out) for r in results]
    table = pd.DataFrame(rows, index=pd.Index(names, name="name", dtype=object), columns=list(TABLE_COLUMNS))
    return table.astype(dict(zip(TABLE_COLUMNS, ["float64"] * 3 + ["int64"] * 2, strict=True)))


# ---------------------------------------------------------------------------------------------
# helpers


def _as_scores(scores, which: str) -> tuple[torch.Tensor, str | None]:
    """``scores`` as a 1-D float64 CPU tensor, checked, with the ``method`` of a score object."""
    method = None
    if not torch.is_tensor(scores) and not isinstance(scores, np.ndarray) and hasattr(scores, "score"):
        method = getattr(scores, "method", None)
        method = None if method is None else str(method)
        scores = scores.score
    try:
        if torch.is_tensor(scores):
            values = scores.detach().to(device="cpu", dtype=torch.float64)
        else:
            values = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(
            f"{which} scores must be numbers in a 1-D tensor, array or list (or an object whose .score "
            f"holds one); got {type(scores).__name__} ({e})"
        ) from None
    if values.dim() != 1:
        raise DataError(
            f"{which} scores must be 1-D, one score per data point; got shape {tuple(values.shape)}"
        )
    if values.numel() == 0:
        raise DataError(f"no {which} scores: each set needs at least one data point")
    nan = torch.isnan(values)
    if nan.any():
        idx = torch.nonzero(nan).flatten().tolist()
        shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
        raise DataError(
            f"{len(idx)} of {values.numel()} {which} scores are NaN (data points {shown}); scores must be "
            "numbers (infinities are allowed): remove those data points or fix their estimates"
        )
    return values.contiguous(), method


def _labelled_ranks(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0 in-distribution, 1 OOD) and the dense ranks of the scores: the same order and ties,
    and finite, which scikit-learn requires."""
    scores = torch.cat([a, b]).numpy()
    ranks = np.unique(scores, return_inverse=True)[1].reshape(-1).astype(np.float64)
    labels = np.repeat(np.array([0, 1]), [a.numel(), b.numel()])
    return labels, ranks
