"""MovieLens ml-latest-small, shipped inside the package so a fresh install works offline."""

from __future__ import annotations

import hashlib
import lzma
from importlib import resources
from importlib.resources.abc import Traversable

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.movielens_format import movies_csv, ratings_csv

_FILES = ("ratings.csv", "movies.csv", "tags.csv")


class MovieLensLatestSmall(DataSource):
    """The bundled MovieLens ml-latest-small: 610 users, 9,742 movies, 100,836 ratings (1996-2018).

    Stored xz-compressed under lightning_rec/data/bundled/ml-latest-small/ with its README
    (GroupLens licence: research use, redistribution under the same conditions). Each file is
    checked against the SHA256SUMS published with it, so a damaged install fails loudly.
    Items carry title (year stripped), year, genres ("Comedy, Drama") and the users' tags.
    """

    def __init__(self) -> None:
        self._root: Traversable = resources.files("lightning_rec.data").joinpath("bundled", "ml-latest-small")

    def _checksums(self) -> dict[str, str]:
        sums = self._root.joinpath("SHA256SUMS").read_text(encoding="ascii")
        return {name: digest for digest, name in (line.split() for line in sums.splitlines() if line.strip())}

    def _read(self, name: str, expected: dict[str, str]) -> bytes:
        packed = self._root.joinpath(f"{name}.xz")
        try:
            data = lzma.decompress(packed.read_bytes())
        except FileNotFoundError as error:
            raise DataError(f"{packed}: bundled file missing; reinstall lightning-rec") from error
        except lzma.LZMAError as error:
            raise DataError(f"{packed}: bundled file is damaged ({error}); reinstall lightning-rec") from error
        if hashlib.sha256(data).hexdigest() != expected.get(name):
            raise DataError(
                f"{packed}: SHA256 of the decompressed {name} differs from SHA256SUMS; reinstall lightning-rec"
            )
        return data

    def load(self) -> RawData:
        expected = self._checksums()
        ratings, movies, tags = (self._read(name, expected) for name in _FILES)
        where = {name: str(self._root.joinpath(f"{name}.xz")) for name in _FILES}
        return RawData(
            interactions=ratings_csv(ratings, where["ratings.csv"]),
            items=movies_csv(movies, tags, where["movies.csv"], where["tags.csv"]),
            name="ml-latest-small",
        )

    def fingerprint(self) -> str:
        names = ["SHA256SUMS", *(f"{name}.xz" for name in _FILES)]
        return fingerprint_of(self, {}, [self._root.joinpath(name).read_bytes() for name in names])
