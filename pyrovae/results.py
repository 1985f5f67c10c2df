"""One base for every result pyrovae returns: readable, tabular and saved the same way.

A :class:`Result` prints a readable summary (``print(result)``, ``summary()``), renders as a
compact table in Jupyter (``_repr_html_``), and converts to a :class:`pandas.DataFrame`
(``to_dataframe``), an :class:`xarray.Dataset` (``to_xarray``, ``from_xarray``), a netCDF file
(``to_netcdf``, ``from_netcdf``) and plain JSON (``to_json_dict``). The same names mean the same
things across results: ``num_data`` (data points), ``mean`` and ``stderr`` (of the per-datapoint
estimate of :math:`\\log p(x)`, across data points).
"""

from __future__ import annotations

import html
import math
import os

import pandas as pd
import torch

from pyrovae.storage import atomic_path

__all__ = ["Result", "mean_stderr"]


def mean_stderr(values: torch.Tensor) -> float:
    r"""Standard error of the mean of ``values`` across data points, :math:`\mathrm{sd}/\sqrt N`
    (NaN for fewer than two)."""
    n = values.shape[0]
    return float(values.double().std() / math.sqrt(n)) if n > 1 else math.nan


def _scalars(d: dict, prefix: str = "") -> dict:
    """The scalar entries of a nested dict, keys joined by dots."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_scalars(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[f"{prefix}{key}"] = value
    return out


class Result:
    """The base of pyrovae's results. A subclass writes :meth:`summary`, :meth:`to_dataframe`,
    :meth:`to_xarray`, :meth:`from_xarray` and :meth:`to_json_dict`; it may write
    :meth:`summary_table` for its HTML rendering (by default the scalars of :meth:`to_json_dict`)."""

    def summary(self) -> str:
        """A readable multi-line summary."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.summary()

    def __str__(self) -> str:
        return self.summary()

    def summary_table(self) -> pd.DataFrame:
        """The compact table shown in Jupyter."""
        items = _scalars(self.to_json_dict())
        return pd.DataFrame({"value": list(items.values())}, index=pd.Index(list(items), name="figure"))

    def _repr_html_(self) -> str:
        title = html.escape(self.summary().splitlines()[0])
        frame = self.summary_table()
        named = frame.index.name is not None  # a column then: a named index takes a header row of its own
        table = (frame.reset_index() if named else frame).to_html(
            index=not named, float_format=lambda v: f"{v:.4g}"
        )
        return f"<div><p><b>{title}</b></p>{table}</div>"

    def to_dataframe(self) -> pd.DataFrame:
        """The figures as a :class:`pandas.DataFrame` (one row per data point where there are such)."""
        raise NotImplementedError

    def to_xarray(self):
        """The result as an :class:`xarray.Dataset`, what :meth:`to_netcdf` writes."""
        raise NotImplementedError

    @classmethod
    def from_xarray(cls, ds):
        """The result read back from a dataset of :meth:`to_xarray`."""
        raise NotImplementedError

    def to_json_dict(self) -> dict:
        """The summary figures as plain Python values, ready for :func:`json.dump`."""
        raise NotImplementedError

    def to_netcdf(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_xarray` to a netCDF-4 file (h5netcdf engine), atomically."""
        ds = self.to_xarray()
        with atomic_path(path) as tmp:
            ds.to_netcdf(tmp, engine="h5netcdf")

    @classmethod
    def from_netcdf(cls, path: str | os.PathLike):
        """Read a file written by :meth:`to_netcdf`."""
        import xarray as xr

        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return cls.from_xarray(ds.load())
