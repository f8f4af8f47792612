"""Parsers for the MovieLens file formats (from bytes, so zips and bundled xz files share them).

Every version ends in the same shape: interactions user/item/timestamp/rating with the
GroupLens integer ids, and items with "title" (year stripped), "year", "genres" and, where
the release has tags, "tags".
"""

from __future__ import annotations

import csv
from typing import BinaryIO

import pandas as pd

from lightning_rec.data.sources.columns import (
    id_column,
    number_column,
    read_lines_table,
    require_columns,
    timestamp_column,
)

_TITLE_YEAR = r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$"


def interactions_from(
    frame: pd.DataFrame, where: str, user: str, item: str, rating: str, timestamp: str
) -> pd.DataFrame:
    """Checked user/item/timestamp/rating columns from a ratings table indexed by line."""
    require_columns(frame, [user, item, rating, timestamp], where)
    return pd.DataFrame(
        {
            "user": id_column(frame[user], where, user),
            "item": id_column(frame[item], where, item),
            "timestamp": timestamp_column(frame[timestamp], where, timestamp),
            "rating": number_column(frame[rating], where, rating),
        }
    ).reset_index(drop=True)


def split_title(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ "Toy Story (1995)" -> ("Toy Story", 1995); titles without a trailing year keep their text, year NA."""
    parts = titles.str.extract(_TITLE_YEAR)
    title = parts["title"].fillna(titles.str.strip())
    year = pd.to_numeric(parts["year"]).astype("Int64")
    return title, year


def genres_text(genres: pd.Series) -> pd.Series:
    """ "Comedy|Drama" -> "Comedy, Drama"; "(no genres listed)" -> ""."""
    genres = genres.fillna("").replace("(no genres listed)", "")
    return genres.str.replace("|", ", ", regex=False)


def ratings_csv(data: bytes | BinaryIO, where: str) -> pd.DataFrame:
    """ratings.csv of ml-latest(-small), ml-20m and ml-25m: userId,movieId,rating,timestamp."""
    frame = read_lines_table(data, where, sep=",")
    return interactions_from(frame, where, "userId", "movieId", "rating", "timestamp")


def movies_csv(movies: bytes | BinaryIO, tags: bytes | BinaryIO, movies_where: str, tags_where: str) -> pd.DataFrame:
    """movies.csv (movieId,title,genres) joined with the tags of tags.csv (userId,movieId,tag,timestamp)."""
    frame = read_lines_table(movies, movies_where, sep=",", dtype={"title": str, "genres": str})
    require_columns(frame, ["movieId", "title", "genres"], movies_where)
    title, year = split_title(frame["title"])
    items = pd.DataFrame(
        {
            "item": id_column(frame["movieId"], movies_where, "movieId"),
            "title": title,
            "year": year,
            "genres": genres_text(frame["genres"]),
        }
    )
    tag_frame = read_lines_table(tags, tags_where, sep=",", dtype={"tag": str})
    require_columns(tag_frame, ["movieId", "tag"], tags_where)
    tag_frame = pd.DataFrame(
        {"item": id_column(tag_frame["movieId"], tags_where, "movieId"), "tag": tag_frame["tag"].str.strip()}
    )
    tag_frame = tag_frame[tag_frame["tag"].fillna("") != ""].drop_duplicates()
    joined = tag_frame.groupby("item", sort=False)["tag"].agg(", ".join)
    items["tags"] = items["item"].map(joined).fillna("").astype(str)
    return items.reset_index(drop=True)


def ratings_100k(data: bytes, where: str) -> pd.DataFrame:
    """ml-100k u.data: user, item, rating, timestamp separated by tabs, no header."""
    names = ["user", "item", "rating", "timestamp"]
    frame = read_lines_table(data, where, sep="\t", names=names)
    return interactions_from(frame, where, "user", "item", "rating", "timestamp")


def items_100k(items: bytes, genres: bytes, items_where: str, genres_where: str) -> pd.DataFrame:
    """ml-100k u.item (latin-1, '|': id, title, release date, video date, URL, 19 genre flags)
    with the genre names from u.genre (name|index)."""
    genre_frame = read_lines_table(genres, genres_where, sep="|", names=["name", "index"], encoding="latin-1")
    names = genre_frame.sort_values("index")["name"].astype(str).tolist()
    columns = ["item", "title", "release", "video_release", "url", *names]
    frame = read_lines_table(
        items, items_where, sep="|", names=columns, encoding="latin-1", quoting=csv.QUOTE_NONE, dtype={"title": str}
    )
    title, year = split_title(frame["title"])
    release_year = pd.to_datetime(frame["release"], format="%d-%b-%Y", errors="coerce").dt.year.astype("Int64")
    flags = frame[names].fillna(0).astype(bool)
    genre_lists = flags.dot(pd.Index(names) + ", ").str.removesuffix(", ")
    return pd.DataFrame(
        {
            "item": id_column(frame["item"], items_where, "movie id"),
            "title": title,
            "year": year.fillna(release_year),
            "genres": genre_lists.astype(str),
        }
    ).reset_index(drop=True)


def _double_colon(data: bytes) -> bytes:
    """ml-1m separates fields by '::'; as a one-byte separator pandas' fast C parser reads it."""
    return data.replace(b"::", b"\x1f")


def ratings_1m(data: bytes, where: str) -> pd.DataFrame:
    """ml-1m ratings.dat: UserID::MovieID::Rating::Timestamp."""
    names = ["UserID", "MovieID", "Rating", "Timestamp"]
    frame = read_lines_table(_double_colon(data), where, sep="\x1f", names=names)
    return interactions_from(frame, where, "UserID", "MovieID", "Rating", "Timestamp")


def movies_1m(data: bytes, where: str) -> pd.DataFrame:
    """ml-1m movies.dat (latin-1): MovieID::Title::Genres."""
    frame = read_lines_table(
        _double_colon(data),
        where,
        sep="\x1f",
        names=["MovieID", "Title", "Genres"],
        encoding="latin-1",
        quoting=csv.QUOTE_NONE,
        dtype={"Title": str, "Genres": str},
    )
    title, year = split_title(frame["Title"])
    return pd.DataFrame(
        {
            "item": id_column(frame["MovieID"], where, "MovieID"),
            "title": title,
            "year": year,
            "genres": genres_text(frame["Genres"]),
        }
    ).reset_index(drop=True)
