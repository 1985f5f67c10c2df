"""One base for every result pyrovae returns: readable, tabular and saved the same way.

A :class:`Result` is a dataclass that declares its fields: :func:`column` (a tensor along named dimensions,
one row per data point by default), :func:`table` (a :class:`pandas.DataFrame` along one dimension),
:func:`columns` (named tensors along the rows), :func:`nested` (another result on the same rows), :func:`live`
(kept in memory only, such as a module) and plain scalars. From these the base prints a readable summary
(``print(result)``, ``summary()``), renders a compact table in Jupyter (``_repr_html_``), and converts to a
:class:`pandas.DataFrame` (``to_dataframe``), an :class:`xarray.Dataset` (``to_xarray``, ``from_xarray``), a
netCDF file (``to_netcdf``, ``from_netcdf``) and plain JSON (``to_json_dict``). The same names mean the same
things across results: ``num_data`` (data points), ``mean`` and ``stderr`` (of the per-datapoint estimate of
:math:`\\log p(x)`, across data points).
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pyrovae.storage import write_netcdf

__all__ = ["Result", "column", "columns", "live", "mean_stderr", "nested", "scalars", "table"]


def mean_stderr(values: torch.Tensor) -> float:
    r"""Standard error of the mean of ``values`` across data points, :math:`\mathrm{sd}/\sqrt N`
    (NaN for fewer than two)."""
    n = values.shape[0]
    return float(values.double().std() / math.sqrt(n)) if n > 1 else math.nan


def _declare(kind: str, default=dataclasses.MISSING, **meta) -> dataclasses.Field:
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata={"kind": kind, **meta})
    return dataclasses.field(default=default, metadata={"kind": kind, **meta})


def column(*dims: str, default=dataclasses.MISSING) -> dataclasses.Field:
    """A tensor field along ``dims`` (by default the result's rows); ``None`` values are not stored."""
    return _declare("column", default, dims=dims)


def columns(default=dataclasses.MISSING) -> dataclasses.Field:
    """A field of named ``(N,)`` tensors along the result's rows, each stored under its name."""
    return _declare("columns", default)


def table(dim: str, prefix: str = "", index: str | None = None) -> dataclasses.Field:
    """A :class:`pandas.DataFrame` field whose rows run along ``dim`` (its index, or its column
    ``index``), each column stored as ``prefix + name``."""
    return _declare("table", dim=dim, prefix=prefix, index=index)


def nested(cls: type, default=dataclasses.MISSING, same_rows: bool = True) -> dataclasses.Field:
    """A result of class ``cls``, stored with its field's name as a prefix; on the same rows as the
    result that holds it, or with rows of its own."""
    return _declare("nested", default, cls=cls, same_rows=same_rows)


def live(default=dataclasses.MISSING) -> dataclasses.Field:
    """A field kept in memory only (a module, simulated data): ``default`` (or ``None``) when read back."""
    return _declare("live", default)


def _plain(value):
    """A scalar field's value as plain JSON."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic | torch.Tensor):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _attr(value):
    """A scalar as a netCDF attribute: booleans as ints, lists as lines, dicts as JSON."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list | tuple):
        return "\n".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(_plain(value))
    return _plain(value)


def _from_attr(field: dataclasses.Field, attrs: dict):
    """A scalar field read back from its attribute, by the field's annotation."""
    if field.name not in attrs:
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return None if field.default is dataclasses.MISSING else field.default
    value, kind = attrs[field.name], str(field.type)
    if kind.startswith("list"):
        return [line for line in str(value).split("\n") if line]
    if kind.startswith("dict"):
        return json.loads(value)
    for name, cast in (("bool", bool), ("int", int), ("float", float), ("Path", Path), ("str", str)):
        if kind.startswith(name):
            return cast(value)
    return value


def scalars(d: dict, prefix: str = "") -> dict:
    """The scalar entries of a nested dict, keys joined by dots: ``{"a": {"b": 1}}`` gives ``{"a.b": 1}``."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(scalars(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[f"{prefix}{key}"] = value
    return out


def prefixed(ds, prefix: str, dims: dict | None = None):
    """``ds`` with ``prefix`` before the name of each variable and attribute, and its dimensions
    renamed by ``dims``."""
    ds = ds.rename_vars({name: prefix + name for name in ds.data_vars})
    ds.attrs = {prefix + k: v for k, v in ds.attrs.items()}
    return ds.rename(dims or {})


def unprefixed(ds, prefix: str, dims: dict | None = None):
    """The variables and attributes of ``ds`` whose names start with ``prefix``, without it (the
    inverse of :func:`prefixed`)."""
    names = [name for name in ds.data_vars if name.startswith(prefix)]
    out = ds[names].rename_vars({name: name[len(prefix) :] for name in names})
    out.attrs = {k[len(prefix) :]: v for k, v in ds.attrs.items() if k.startswith(prefix)}
    return out.rename(dims or {})


class Result:
    """The base of pyrovae's results, a dataclass of declared fields. A subclass writes
    :meth:`summary`; it may add derived summary figures (:meth:`figures`), name its
    rows (``rows``, ``"datapoint"`` by default) and write :meth:`summary_table` for its HTML
    rendering (by default the scalars of :meth:`to_json_dict`)."""

    #: the dimension of the result's rows: data points by default
    rows: str = "datapoint"

    def summary(self) -> str:
        """A readable multi-line summary."""
        raise NotImplementedError

    @property
    def num_data(self) -> int:
        """Number of rows (data points): the length of the first column."""
        return next(v for _, v in self._fields("column") if v is not None).shape[0]

    def __repr__(self) -> str:
        return self.summary()

    def __str__(self) -> str:
        return self.summary()

    def figures(self) -> dict:
        """Summary figures derived from the fields, as plain Python values."""
        return {}

    def summary_table(self) -> pd.DataFrame:
        """The compact table shown in Jupyter."""
        items = scalars(self.to_json_dict())
        return pd.DataFrame({"value": list(items.values())}, index=pd.Index(list(items), name="figure"))

    def _repr_html_(self) -> str:
        title = html.escape(self.summary().splitlines()[0])
        frame = self.summary_table()
        named = frame.index.name is not None  # a column then: a named index takes a header row of its own
        table = (frame.reset_index() if named else frame).to_html(
            index=not named, float_format=lambda v: f"{v:.4g}"
        )
        return f"<div><p><b>{title}</b></p>{table}</div>"

    def _fields(self, *kinds: str):
        return [
            (f, getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("kind") in kinds
        ]

    def to_json_dict(self) -> dict:
        """The scalar fields and the summary figures as plain Python values, ready for
        :func:`json.dump` (the per-row values are :meth:`to_dataframe`)."""
        out = {"num_data": self.num_data}
        out.update({f.name: _plain(v) for f, v in self._fields(None)})
        out.update({f.name: v.to_json_dict() for f, v in self._fields("nested") if v is not None})
        return {**out, **self.figures()}

    def attributes(self) -> dict:
        """The scalar fields (dictionaries as JSON, lists as lines, booleans as integers) and the
        scalar summary figures: the ``attrs`` of :meth:`to_xarray`."""
        figures = {k: v for k, v in self.figures().items() if not isinstance(v, dict)}
        values = {"num_data": self.num_data, **figures, **{f.name: v for f, v in self._fields(None)}}
        return {k: _attr(v) for k, v in values.items() if v is not None}

    def to_dataframe(self) -> pd.DataFrame:
        """The figures per row as a :class:`pandas.DataFrame`: the result's table, or its
        one-dimensional columns, one row per data point."""
        tables = self._fields("table")
        if tables:
            return tables[0][1].copy()
        data = {f.name: v for f, v in self._fields("column") if v is not None and v.dim() == 1}
        for _, named in self._fields("columns"):
            data.update(named)
        data = {name: v.cpu().numpy() for name, v in data.items()}
        return pd.DataFrame(data, index=pd.RangeIndex(self.num_data, name=self.rows))

    def to_xarray(self):
        """The result as an :class:`xarray.Dataset`, what :meth:`to_netcdf` writes: tensors and
        tables as variables, scalar fields and summary figures as attributes."""
        import xarray as xr

        data_vars, parts = {}, []
        for f, v in self._fields("column", "columns", "table", "nested"):
            kind = f.metadata["kind"]
            if v is None:
                continue
            if kind == "column":
                data_vars[f.name] = (f.metadata["dims"] or (self.rows,), v.detach().cpu().numpy())
            elif kind == "columns":
                data_vars.update({name: (self.rows, t.cpu().numpy()) for name, t in v.items()})
            elif kind == "nested":
                rows = {v.rows: self.rows} if f.metadata["same_rows"] else {}
                parts.append(prefixed(v.to_xarray(), f"{f.name}_", rows))
            else:
                dim, prefix, index = (f.metadata[k] for k in ("dim", "prefix", "index"))
                frame = v if index is None else v.set_index(index)
                for name, values in frame.items():
                    values = values.to_numpy()
                    data_vars[prefix + name] = (dim, values.astype(str) if values.dtype == object else values)
                data_vars[dim] = (dim, frame.index.to_numpy())
        ds = xr.Dataset(data_vars, attrs=self.attributes())
        if self.rows in ds.dims and self.rows not in ds.coords:
            ds = ds.assign_coords({self.rows: np.arange(ds.sizes[self.rows])})
        return xr.merge([ds, *parts], combine_attrs="no_conflicts")

    @classmethod
    def from_xarray(cls, ds):
        """The result read back from a dataset of :meth:`to_xarray` (without its :func:`live` fields).

        :param xarray.Dataset ds: a dataset made by :meth:`to_xarray` of this class, as it is or read
            back from a file.
        """
        values, claimed = {}, set()
        for f in dataclasses.fields(cls):
            kind = f.metadata.get("kind")
            if kind == "column":
                values[f.name] = torch.as_tensor(ds[f.name].values) if f.name in ds else None
                claimed.add(f.name)
            elif kind == "table":
                dim, prefix, index = (f.metadata[k] for k in ("dim", "prefix", "index"))
                names = [n for n in ds.data_vars if n.startswith(prefix) and ds[n].dims == (dim,)]
                frame = pd.DataFrame(
                    {n[len(prefix) :]: ds[n].values for n in names}, index=pd.Index(ds[dim].values, name=dim)
                )
                values[f.name] = frame if index is None else frame.rename_axis(index).reset_index()
                claimed.update(names)
            elif kind == "nested":
                rows = {cls.rows: f.metadata["cls"].rows} if f.metadata["same_rows"] else {}
                part = unprefixed(ds, f"{f.name}_", rows)
                values[f.name] = f.metadata["cls"].from_xarray(part) if part.data_vars else None
                claimed.update(f"{f.name}_{n}" for n in part.data_vars)
            elif kind == "live":
                values[f.name] = None if f.default is dataclasses.MISSING else f.default
            elif kind is None:
                values[f.name] = _from_attr(f, ds.attrs)
        for f in dataclasses.fields(cls):
            if f.metadata.get("kind") == "columns":
                rest = [n for n in ds.data_vars if n not in claimed and ds[n].ndim == 1]
                values[f.name] = {n: torch.as_tensor(ds[n].values) for n in rest}
        return cls(**values)

    def to_netcdf(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_xarray` to a netCDF-4 file (h5netcdf engine), atomically.

        :param path: the file, replaced if it exists; missing parent directories are created.
        """
        write_netcdf(path, self.to_xarray())

    @classmethod
    def from_netcdf(cls, path: str | os.PathLike):
        """Read a file written by :meth:`to_netcdf`.

        :param path: the netCDF file, written by :meth:`to_netcdf` of this class.
        """
        import xarray as xr

        with xr.open_dataset(path, engine="h5netcdf") as ds:
            return cls.from_xarray(ds.load())
