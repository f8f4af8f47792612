"""Reading delimited text with line numbers kept, and turning raw columns into checked ones.

Frames read here carry the 1-based line (or row) number of each record as their index, so a
bad value can be reported as "file: line 17, field 'timestamp'" without any per-row Python.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import BinaryIO, NoReturn

import pandas as pd

from lightning_rec.data.errors import DataError


def require_file(path: Path) -> Path:
    """The path itself, or DataError if it is missing or empty."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def read_lines_table(
    source: Path | bytes | BinaryIO,
    where: str,
    *,
    sep: str,
    names: list[str] | None = None,
    dtype: dict[str, object] | None = None,
    encoding: str = "utf-8",
    quoting: int = csv.QUOTE_MINIMAL,
) -> pd.DataFrame:
    """Read a delimited file (with a header row unless `names` is given), indexed by line number.

    Blank lines are dropped after numbering so the numbers stay those of the file.
    """
    if isinstance(source, bytes) and not source.strip():
        raise DataError(f"{where}: file is empty")
    buffer = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        frame = pd.read_csv(
            buffer,
            sep=sep,
            header=None if names else 0,
            names=names,
            dtype=dtype,
            encoding=encoding,
            quoting=quoting,
            skip_blank_lines=False,
        )
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{where}: file is empty") from error
    except pd.errors.ParserError as error:
        raise DataError(f"{where}: cannot parse as '{sep}'-separated text: {str(error).strip()}") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{where}: not valid {encoding} text ({error.reason} at byte {error.start})") from error
    first = 1 if names else 2
    frame.index = pd.RangeIndex(first, first + len(frame))
    frame = frame.dropna(how="all")
    if frame.empty:
        raise DataError(f"{where}: no data rows")
    return frame


def number_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Index a frame without lines (e.g. Parquet) by its 1-based row number."""
    frame.index = pd.RangeIndex(1, len(frame) + 1)
    return frame


def require_columns(frame: pd.DataFrame, required: list[str], where: str) -> None:
    """DataError naming the first missing column and listing the columns that are there."""
    missing = [name for name in required if name not in frame.columns]
    if missing:
        found = ", ".join(repr(str(name)) for name in frame.columns)
        raise DataError(f"{where}: missing column {missing[0]!r} (columns found: {found})")


def _raise_at_first(values: pd.Series, bad: pd.Series, where: str, field: str, problem: str, unit: str) -> NoReturn:
    label = bad.idxmax()
    value = values.loc[label]
    shown = "value is missing" if pd.isna(value) else f"{value!r} {problem}"
    raise DataError(f"{where}: {unit} {label}, field {field!r}: {shown}")


def _check(values: pd.Series, bad: pd.Series, where: str, field: str, problem: str, unit: str) -> None:
    if bad.any():
        _raise_at_first(values, bad, where, field, problem, unit)


def _compact(numbers: pd.Series) -> pd.Series:
    """int64 when every value is whole, float64 otherwise."""
    if pd.api.types.is_integer_dtype(numbers):
        return numbers.astype("int64")
    numbers = numbers.astype("float64")
    return numbers.astype("int64") if bool((numbers % 1 == 0).all()) else numbers


def id_column(values: pd.Series, where: str, field: str, unit: str = "line") -> pd.Series:
    """Ids as given (int or str); whole floats (from NaN-widened int columns) back to int64."""
    _check(values, values.isna(), where, field, "", unit)
    if pd.api.types.is_float_dtype(values) and bool((values % 1 == 0).all()):
        return values.astype("int64")
    return values


def integer_id_column(values: pd.Series, where: str, field: str, unit: str = "line") -> pd.Series:
    """int64 ids from text, or DataError at the first missing or non-integer one (for datasets whose
    ids are integers, so that "7" and "7.0" are one id)."""
    _check(values, values.isna(), where, field, "", unit)
    numbers = pd.to_numeric(values, errors="coerce")
    _check(values, numbers.isna() | (numbers % 1 != 0), where, field, "is not an integer id", unit)
    return numbers.astype("int64")


def number_column(values: pd.Series, where: str, field: str, unit: str = "line", missing_ok: bool = False) -> pd.Series:
    """float64 values, or DataError at the first non-numeric (or, unless missing_ok, missing) one."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna() & values.notna() if missing_ok else numbers.isna()
    _check(values, bad, where, field, "is not a number", unit)
    return numbers.astype("float64")


def timestamp_column(values: pd.Series, where: str, field: str, unit: str = "line") -> pd.Series:
    """Seconds (int64 when whole, else float64) from numbers, datetimes or ISO 8601 strings."""
    if pd.api.types.is_datetime64_any_dtype(values):
        _check(values, values.isna(), where, field, "", unit)
        return _seconds(values)
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return _compact(numbers)
    if pd.api.types.is_string_dtype(values) or values.dtype == object:
        dates = pd.to_datetime(values, errors="coerce", format="ISO8601", utc=True)
        if dates.notna().sum() > numbers.notna().sum():
            _check(values, dates.isna(), where, field, "is not an ISO 8601 date-time", unit)
            return _seconds(dates)
    _raise_at_first(values, numbers.isna(), where, field, "is not a number", unit)


def _seconds(dates: pd.Series) -> pd.Series:
    epoch = pd.Timestamp(0, tz=dates.dt.tz)
    return _compact((dates - epoch) / pd.Timedelta(seconds=1))
