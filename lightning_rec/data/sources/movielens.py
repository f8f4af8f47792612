"""The official GroupLens MovieLens releases (100K, 1M, 20M, 25M), downloaded once into a cache."""

from __future__ import annotations

import http.client
import logging
import shutil
import urllib.request
import zipfile
from pathlib import Path
from typing import Literal, get_args

from lightning_rec.atomic import atomic_path
from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.movielens_format import (
    items_100k,
    movies_1m,
    movies_csv,
    ratings_1m,
    ratings_100k,
    ratings_csv,
)

log = logging.getLogger(__name__)

Version = Literal["100k", "1m", "20m", "25m"]
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/"


class MovieLens(DataSource):
    """MovieLens `version` read from `<root>/ml-<version>.zip`, the zip exactly as GroupLens serves it.

    When the zip is missing and `download` is true it is fetched from `base_url` (to a temporary
    name, checked to be a readable zip, then renamed, so an interrupted download leaves nothing
    behind). Offline, or with download=False, the error says which file to put where by hand.
    Items: title (year stripped), year, genres, and tags for 20m/25m.
    """

    def __init__(
        self,
        version: Version,
        root: str = "~/.cache/lightning_rec/movielens",
        download: bool = True,
        base_url: str = GROUPLENS_URL,
    ) -> None:
        if version not in get_args(Version):
            raise DataError(f"MovieLens: unknown version {version!r}; choose one of {', '.join(get_args(Version))}")
        self.version = version
        self.root = Path(root).expanduser()
        self.download = download
        self.base_url = base_url

    @property
    def archive(self) -> Path:
        """Where the zip is expected: <root>/ml-<version>.zip."""
        return self.root / f"ml-{self.version}.zip"

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/ml-{self.version}.zip"

    def _by_hand(self, reason: str) -> DataError:
        return DataError(
            f"MovieLens {self.version}: {self.archive} is missing and {reason}. "
            f"Download {self.url} by hand and save it, unchanged, as {self.archive} "
            f"(or set root to the folder that holds ml-{self.version}.zip)."
        )

    def _ensure_archive(self) -> Path:
        if self.archive.is_file():
            return self.archive
        if not self.download:
            raise self._by_hand("download=False")
        self._fetch()
        return self.archive

    def _fetch(self) -> None:
        """Download to a temporary file beside the target, check it, then rename atomically."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"MovieLens {self.version}: cannot create {self.root}: {error.strerror}") from error
        log.info("downloading %s to %s", self.url, self.archive)
        with atomic_path(self.archive) as temporary:
            with open(temporary, "wb") as out:
                try:
                    with urllib.request.urlopen(self.url, timeout=60) as response:
                        shutil.copyfileobj(response, out, 1 << 20)
                except (OSError, http.client.HTTPException) as error:
                    raise self._by_hand(f"downloading it failed ({getattr(error, 'reason', error)})") from error
            _check_zip(temporary, f"download from {self.url}")

    def load(self) -> RawData:
        path = self._ensure_archive()
        try:
            return self._parse(path)
        except zipfile.BadZipFile as error:
            raise DataError(f"{path}: damaged zip archive ({error}); delete it and download it again") from error

    def _parse(self, path: Path) -> RawData:
        prefix = f"ml-{self.version}/"
        with zipfile.ZipFile(path) as archive:
            present = set(archive.namelist())

            def member(name: str) -> str:
                if prefix + name not in present:
                    raise DataError(
                        f"{path}: member {prefix + name!r} not found; is this the official ml-{self.version}.zip?"
                    )
                return prefix + name

            def where(name: str) -> str:
                return f"{path}:{prefix}{name}"

            if self.version == "100k":
                interactions = ratings_100k(archive.read(member("u.data")), where("u.data"))
                items = items_100k(
                    archive.read(member("u.item")), archive.read(member("u.genre")), where("u.item"), where("u.genre")
                )
            elif self.version == "1m":
                interactions = ratings_1m(archive.read(member("ratings.dat")), where("ratings.dat"))
                items = movies_1m(archive.read(member("movies.dat")), where("movies.dat"))
            else:
                with archive.open(member("ratings.csv")) as ratings:
                    interactions = ratings_csv(ratings, where("ratings.csv"))
                with archive.open(member("movies.csv")) as movies, archive.open(member("tags.csv")) as tags:
                    items = movies_csv(movies, tags, where("movies.csv"), where("tags.csv"))
        return RawData(interactions=interactions, items=items, name=f"ml-{self.version}")

    def fingerprint(self) -> str:
        """The zip's bytes and the version; where the zip lives does not change the data."""
        return fingerprint_of(self, {"version": self.version}, [self._ensure_archive()])


def _check_zip(path: Path, what: str) -> None:
    """DataError unless `path` is a zip whose members all pass their CRC check."""
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{what}: not a readable zip archive ({error})") from error
    if broken is not None:
        raise DataError(f"{what}: zip member {broken!r} is corrupt")
