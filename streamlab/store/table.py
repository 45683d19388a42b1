"""A `Table`: Zarr arrays in one group that grow together along their first dimension.

Zarr appends are not transactional (the new shape is written before the chunks), so a table
keeps a commit counter, the group attribute `rows`, written only after every column's data.
Readers trust `rows`; `trim()` cuts columns back to it after a crash, so no torn row survives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from streamlab.errors import StoreError

TARGET_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Column:
    """One array of a table: its dtype (`str` for text), shape after the row axis, and the
    dimension names of every axis (the row axis first)."""

    dtype: str | type
    dims: tuple[str, ...]
    trailing: tuple[int, ...] = ()

    def chunk_rows(self) -> int:
        itemsize = 64 if self.dtype is str else np.dtype(self.dtype).itemsize
        row_bytes = itemsize * int(np.prod(self.trailing, dtype=np.int64))
        return int(min(65536, max(256, TARGET_CHUNK_BYTES // max(row_bytes, 1))))


class Table:
    """Create (or open) the columns of a table in `group` and append rows to all of them."""

    def __init__(self, group: zarr.Group, columns: dict[str, Column]) -> None:
        self.group = group
        self.columns = columns
        existing = set(group.array_keys())
        # t and seq label the rows: xarray reads them as coordinates of `time` (CF convention)
        coordinates = " ".join(c for c in ("t", "seq") if c in columns)
        for name, column in columns.items():
            if name in existing:
                continue
            array = group.create_array(
                name,
                shape=(0, *column.trailing),
                chunks=(column.chunk_rows(), *(max(1, s) for s in column.trailing)),
                dtype=column.dtype,
                dimension_names=list(column.dims),
                fill_value="" if column.dtype is str else 0,
            )
            if coordinates and name not in ("t", "seq") and column.dims[:1] == ("time",):
                array.attrs["coordinates"] = coordinates
        self._arrays = {name: group[name] for name in columns}
        if "rows" not in group.attrs:
            group.attrs["rows"] = 0
        self._rows = int(group.attrs["rows"])

    @property
    def rows(self) -> int:
        """Committed rows: every column holds at least these, and they are whole."""
        return self._rows

    def append(self, **blocks: np.ndarray) -> None:
        """Append a block of rows to every column, then commit the new row count."""
        if set(blocks) != set(self.columns):
            raise StoreError(
                f"append to {self.group.path} needs columns {sorted(self.columns)}, "
                f"got {sorted(blocks)}"
            )
        lengths = {len(block) for block in blocks.values()}
        if len(lengths) != 1:
            raise StoreError(
                f"append to {self.group.path}: columns have different lengths {lengths}"
            )
        n = lengths.pop()
        if n == 0:
            return
        for name, block in blocks.items():
            array = self._arrays[name]
            if array.shape[0] != self._rows:  # a torn tail from an earlier crash
                array.resize((self._rows, *array.shape[1:]))
            array.append(
                np.asarray(block, dtype=object if self.columns[name].dtype is str else None), axis=0
            )
        self._rows += n
        self.group.attrs["rows"] = self._rows

    def truncate(self, rows: int) -> None:
        """Cut every column back to `rows` (<= committed) and commit that count."""
        if rows > self._rows:
            raise StoreError(
                f"cannot truncate {self.group.path} to {rows} rows: only {self._rows} committed"
            )
        for array in self._arrays.values():
            array.resize((rows, *array.shape[1:]))
        self._rows = rows
        self.group.attrs["rows"] = rows

    def trim(self) -> None:
        """Drop uncommitted rows (a crash between data and commit) from every column."""
        self.truncate(self._rows)

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Committed rows [start, stop) of one column."""
        stop = self._rows if stop is None else min(stop, self._rows)
        return self._arrays[name][start:stop]
