"""Data sources: every loader on tiny files, each bad-input error, and fingerprint stability."""

from __future__ import annotations

import lzma
import shutil
import time
import zipfile
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources import (
    Coat,
    InteractionFile,
    KuaiRand,
    KuaiRec,
    MovieLens,
    MovieLensLatestSmall,
    RecBoleAtomic,
    UserPerLineFile,
)

BUNDLED = resources.files("lightning_rec.data").joinpath("bundled", "ml-latest-small")


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


# --- bundled ml-latest-small ------------------------------------------------------------------


def test_bundled_movielens_loads_with_verified_contents():
    start = time.perf_counter()
    raw = MovieLensLatestSmall().load()
    assert time.perf_counter() - start < 3.0
    inter = raw.interactions
    assert raw.name == "ml-latest-small"
    assert len(inter) == 100836 and inter["user"].nunique() == 610
    assert inter.dtypes.to_dict() == {"user": "int64", "item": "int64", "timestamp": "int64", "rating": "float64"}
    assert inter.iloc[0].tolist() == [1, 1, 964982703, 4.0]
    items = raw.items.set_index("item")
    assert len(items) == 9742 and str(items["year"].dtype) == "Int64"
    assert items.loc[1, "title"] == "Toy Story" and items.loc[1, "year"] == 1995
    assert items.loc[1, "genres"] == "Adventure, Animation, Children, Comedy, Fantasy"
    assert items.loc[1, "tags"] == "pixar, fun"
    assert items.loc[11, "title"] == "American President, The"
    assert items.loc[58842, "title"] == "Assembly (Ji jie hao)"  # only the trailing year goes
    assert items.loc[171749, "genres"] == "" and pd.isna(items.loc[171749, "year"])
    assert items.loc[4, "tags"] == ""
    assert BUNDLED.joinpath("README.txt").is_file()


def bundled_copy(tmp_path: Path) -> MovieLensLatestSmall:
    for name in ["SHA256SUMS", "ratings.csv.xz", "movies.csv.xz", "tags.csv.xz"]:
        (tmp_path / name).write_bytes(BUNDLED.joinpath(name).read_bytes())
    source = MovieLensLatestSmall()
    source._root = tmp_path
    return source


def test_bundled_checksum_mismatch_names_the_file(tmp_path):
    source = bundled_copy(tmp_path)
    tags = lzma.decompress((tmp_path / "tags.csv.xz").read_bytes())
    (tmp_path / "tags.csv.xz").write_bytes(lzma.compress(tags.replace(b"pixar", b"Pixar")))
    with pytest.raises(DataError, match=r"tags\.csv\.xz.*SHA256.*tags\.csv"):
        source.load()


def test_bundled_fingerprint_follows_the_bytes(tmp_path):
    assert MovieLensLatestSmall().fingerprint() == MovieLensLatestSmall().fingerprint()
    copy = bundled_copy(tmp_path)
    assert copy.fingerprint() == MovieLensLatestSmall().fingerprint()
    (tmp_path / "tags.csv.xz").write_bytes(lzma.compress(b"userId,movieId,tag,timestamp\n"))
    assert copy.fingerprint() != MovieLensLatestSmall().fingerprint()


# --- MovieLens zips ---------------------------------------------------------------------------

GENRES_100K = (
    "".join(
        f"{name}|{index}\n"
        for index, name in enumerate(
            [
                "unknown",
                "Action",
                "Adventure",
                "Animation",
                "Children's",
                "Comedy",
                "Crime",
                "Documentary",
                "Drama",
                "Fantasy",
                "Film-Noir",
                "Horror",
                "Musical",
                "Mystery",
                "Romance",
                "Sci-Fi",
                "Thriller",
                "War",
                "Western",
            ]
        )
    )
    + "\n"
)


def fake_zip(root: Path, version: str) -> Path:
    """A zip with the member names and formats of the official release, a few rows each."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"ml-{version}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        prefix = f"ml-{version}/"
        if version == "100k":
            archive.writestr(
                prefix + "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881250950\n"
            )
            flags_toy = "|".join(["0", "0", "0", "1", "1", "1"] + ["0"] * 13)
            flags_unknown = "|".join(["1"] + ["0"] * 18)
            archive.writestr(
                prefix + "u.item",
                (
                    "242|Kolya (1996)|24-Jan-1997||http://x|" + flags_toy + "\n"
                    "302|Café Noir|01-Jan-1995||http://y|" + flags_unknown + "\n"
                ).encode("latin-1"),
            )
            archive.writestr(prefix + "u.genre", GENRES_100K)
        elif version == "1m":
            archive.writestr(
                prefix + "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
            )
            archive.writestr(
                prefix + "movies.dat",
                (
                    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
                    '661::Amélie: "Le" Film (2001)::Comedy|Romance\n'
                ).encode("latin-1"),
            )
        else:
            archive.writestr(
                prefix + "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n"
            )
            archive.writestr(
                prefix + "movies.csv",
                'movieId,title,genres\n2,"Jumanji, The (1995)",Adventure|Fantasy\n29,Bad,(no genres listed)\n',
            )
            archive.writestr(prefix + "tags.csv", "userId,movieId,tag,timestamp\n1,2,magic,1\n3,2,fun,2\n4,2,magic,3\n")
    return path


def test_movielens_100k_format(tmp_path):
    fake_zip(tmp_path, "100k")
    raw = MovieLens("100k", root=str(tmp_path), download=False).load()
    assert raw.name == "ml-100k"
    assert raw.interactions.values.tolist() == [
        [196, 242, 881250949, 3.0],
        [186, 302, 891717742, 3.0],
        [196, 302, 881250950, 5.0],
    ]
    items = raw.items.set_index("item")
    assert items.loc[242].tolist() == ["Kolya", 1996, "Animation, Children's, Comedy"]
    assert items.loc[302].tolist() == ["Café Noir", 1995, "unknown"]  # latin-1 title, year from release date


def test_movielens_1m_format(tmp_path):
    fake_zip(tmp_path, "1m")
    raw = MovieLens("1m", root=str(tmp_path), download=False).load()
    assert raw.interactions["item"].tolist() == [1193, 661, 1193]
    assert raw.interactions["timestamp"].dtype == "int64"
    items = raw.items.set_index("item")
    assert items.loc[661].tolist() == ['Amélie: "Le" Film', 2001, "Comedy, Romance"]


@pytest.mark.parametrize("version", ["20m", "25m"])
def test_movielens_csv_formats(tmp_path, version):
    fake_zip(tmp_path, version)
    raw = MovieLens(version, root=str(tmp_path), download=False).load()
    assert raw.interactions["rating"].tolist() == [3.5, 4.0]
    items = raw.items.set_index("item")
    assert items.loc[2].tolist() == ["Jumanji, The", 1995, "Adventure, Fantasy", "magic, fun"]
    assert items.loc[29, "genres"] == "" and items.loc[29, "tags"] == "" and pd.isna(items.loc[29, "year"])


def test_movielens_offline_error_says_what_to_put_where(tmp_path):
    root = tmp_path / "cache"
    with pytest.raises(DataError) as error:
        MovieLens("1m", root=str(root), download=False).load()
    message = str(error.value)
    assert str(root / "ml-1m.zip") in message and "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in message
    assert not root.exists()


def test_movielens_download_is_atomic(tmp_path):
    mirror = tmp_path / "mirror"
    fake_zip(mirror, "1m")
    root = tmp_path / "cache"
    source = MovieLens("1m", root=str(root), base_url=mirror.as_uri())
    assert len(source.load().interactions) == 3
    assert sorted(p.name for p in root.iterdir()) == ["ml-1m.zip"]


def test_movielens_failed_or_bad_download_leaves_nothing(tmp_path):
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="by hand"):
        MovieLens("100k", root=str(root), base_url=(tmp_path / "nowhere").as_uri()).load()
    assert list(root.iterdir()) == []
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "ml-100k.zip").write_text("<html>rate limited</html>")
    with pytest.raises(DataError, match="not a readable zip"):
        MovieLens("100k", root=str(root), base_url=mirror.as_uri()).load()
    assert list(root.iterdir()) == []


def test_movielens_unknown_version_and_missing_member(tmp_path):
    with pytest.raises(DataError, match="unknown version '10m'.*100k, 1m, 20m, 25m"):
        MovieLens("10m", root=str(tmp_path))
    shutil.copy(fake_zip(tmp_path / "a", "20m"), tmp_path / "ml-1m.zip")
    with pytest.raises(DataError, match=r"ml-1m\.zip: member 'ml-1m/ratings\.dat' not found"):
        MovieLens("1m", root=str(tmp_path), download=False).load()


def test_movielens_fingerprint(tmp_path):
    fake_zip(tmp_path / "a", "20m")
    fake_zip(tmp_path / "b", "20m")
    a = MovieLens("20m", root=str(tmp_path / "a"), download=False)
    assert a.fingerprint() == MovieLens("20m", root=str(tmp_path / "b"), download=False).fingerprint()
    shutil.copy(tmp_path / "a" / "ml-20m.zip", tmp_path / "a" / "ml-25m.zip")
    assert a.fingerprint() != MovieLens("25m", root=str(tmp_path / "a"), download=False).fingerprint()
    fake_zip(tmp_path / "a", "100k").rename(tmp_path / "a" / "ml-20m.zip")
    assert a.fingerprint() != MovieLens("20m", root=str(tmp_path / "b"), download=False).fingerprint()


# --- InteractionFile --------------------------------------------------------------------------


def test_interaction_file_csv_with_custom_columns_and_items(tmp_path):
    path = write(tmp_path / "clicks.csv", "uid;iid;ts;stars\n007;b;20;4\n007;a;10;5\n\nx;a;5;1.5\n")
    item_path = write(tmp_path / "meta.csv", 'iid,title,price\na,"Apple, red",1.5\nb,Banana,\n')
    raw = InteractionFile(
        path,
        item_path=item_path,
        user_col="uid",
        item_col="iid",
        timestamp_col="ts",
        rating_col="stars",
        item_id_col="iid",
    ).load()
    assert raw.name == "clicks"
    assert raw.interactions.values.tolist() == [["007", "b", 20, 4.0], ["007", "a", 10, 5.0], ["x", "a", 5, 1.5]]
    assert raw.items.columns.tolist() == ["item", "title", "price"]
    assert raw.items["title"].tolist() == ["Apple, red", "Banana"]


def test_interaction_file_tsv_iso_dates_and_file_order(tmp_path):
    path = write(tmp_path / "log.tsv", "user\titem\ttimestamp\nu\ti\t2024-01-01T00:00:01Z\nu\tj\t2024-01-01\n")
    raw = InteractionFile(path).load()
    assert raw.interactions["timestamp"].tolist() == [1704067201, 1704067200]
    raw = InteractionFile(path, timestamp_col=None).load()
    assert raw.interactions["timestamp"].tolist() == [0, 1]


def test_interaction_file_parquet_datetimes_and_id_alignment(tmp_path):
    frame = pd.DataFrame(
        {
            "user": [1, 1, 2],
            "item": [10, 11, 10],
            "timestamp": pd.to_datetime(
                ["1970-01-01 00:00:02", "1970-01-01 00:00:03", "1970-01-01 00:00:01.5"], format="ISO8601"
            ),
        }
    )
    frame.to_parquet(tmp_path / "events.parquet")
    item_path = write(tmp_path / "items.csv", "item,title\n10,Ten\n11,Eleven\n")
    raw = InteractionFile(str(tmp_path / "events.parquet"), item_path=item_path).load()
    assert raw.interactions["timestamp"].tolist() == [2.0, 3.0, 1.5]
    assert raw.interactions["item"].tolist() == ["10", "11", "10"]  # aligned with the item file's text ids
    assert set(raw.interactions["item"]) <= set(raw.items["item"])


def test_interaction_file_parquet_errors_name_the_row(tmp_path):
    pd.DataFrame({"user": [1, None], "item": [3, 4], "timestamp": [1, 2]}).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(DataError, match=r"e\.parquet: row 2, field 'user': value is missing"):
        InteractionFile(str(tmp_path / "e.parquet")).load()


@pytest.mark.parametrize(
    ("text", "kwargs", "pattern"),
    [
        ("", {}, r"bad\.csv: file is empty"),
        ("user,item,timestamp\n", {}, r"bad\.csv: no data rows"),
        ("user,item,timestamp\n1,2,3\n1,2,3,4\n", {"sep": ","}, r"bad\.csv: cannot parse .*line 3, saw 4$"),
        ("user,item\n1,2\n", {}, r"bad\.csv: missing column 'timestamp' \(columns found: 'user', 'item'\)"),
        (
            "user,item,timestamp\n1,2,3\n1,2,yesterday\n",
            {},
            r"bad\.csv: line 3, field 'timestamp': 'yesterday' is not a number",
        ),
        (
            "user,item,timestamp,r\n1,2,3,4\n\n1,2,4,five\n",
            {"rating_col": "r"},
            r"bad\.csv: line 4, field 'r': 'five' is not a number",
        ),
        ("user,item,timestamp\n1,,3\n", {}, r"bad\.csv: line 2, field 'item': value is missing"),
        (
            "user,item,timestamp\n1,2,2024-01-01\n1,2,2024-13-45\n1,2,2024-01-02\n",
            {},
            r"line 3, field 'timestamp': '2024-13-45' is not an ISO 8601",
        ),
    ],
)
def test_interaction_file_errors(tmp_path, text, kwargs, pattern):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=pattern):
        InteractionFile(path, **kwargs).load()


def test_interaction_file_missing_files_and_duplicate_items(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        InteractionFile(str(tmp_path / "nope.csv")).load()
    path = write(tmp_path / "a.csv", "user,item,timestamp\n1,2,3\n")
    items = write(tmp_path / "items.csv", "item,title\n2,x\n3,y\n2,z\n")
    with pytest.raises(DataError, match=r"items\.csv: field 'item': item '2' appears more than once \(lines 2, 4\)"):
        InteractionFile(path, item_path=items).load()


def test_interaction_file_fingerprint(tmp_path):
    path = write(tmp_path / "a.csv", "user,item,timestamp,rating\n1,2,3,4\n")
    same = write(tmp_path / "b.csv", "user,item,timestamp,rating\n1,2,3,4\n")
    base = InteractionFile(path).fingerprint()
    assert base == InteractionFile(path).fingerprint() == InteractionFile(same).fingerprint()
    assert base != InteractionFile(path, rating_col="rating").fingerprint()
    assert base != InteractionFile(path, item_path=write(tmp_path / "i.csv", "item,t\n2,x\n")).fingerprint()
    write(tmp_path / "a.csv", "user,item,timestamp,rating\n1,2,3,5\n")
    assert base != InteractionFile(path).fingerprint()


# --- UserPerLineFile --------------------------------------------------------------------------


def test_user_per_line_file(tmp_path):
    path = write(tmp_path / "Beauty.txt", "1 5 3 5\n\n2  7\t8\r\n")
    raw = UserPerLineFile(path).load()
    assert raw.name == "Beauty" and raw.items is None
    assert raw.interactions.values.tolist() == [
        ["1", "5", 0],
        ["1", "3", 1],
        ["1", "5", 2],
        ["2", "7", 0],
        ["2", "8", 1],
    ]
    assert raw.interactions["timestamp"].dtype == "int64"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("1 2 3\n\n4\n", r"u\.txt: line 3: only one token '4'"),
        ("1 2\n3 4\n1 5\n", r"u\.txt: user '1' starts more than one line \(lines 1, 3\)"),
        ("\n  \n", r"u\.txt: file has no non-blank lines"),
        ("", r"u\.txt: file is empty"),
    ],
)
def test_user_per_line_errors(tmp_path, text, pattern):
    with pytest.raises(DataError, match=pattern):
        UserPerLineFile(write(tmp_path / "u.txt", text)).load()


def test_user_per_line_fingerprint(tmp_path):
    path = write(tmp_path / "u.txt", "1 2 3\n")
    first = UserPerLineFile(path).fingerprint()
    assert first == UserPerLineFile(path).fingerprint()
    write(tmp_path / "u.txt", "1 3 2\n")
    assert first != UserPerLineFile(path).fingerprint()
    second = UserPerLineFile(path).fingerprint()
    attributes = write(tmp_path / "a.json", '{"2": [7, 2]}')
    with_attributes = UserPerLineFile(path, attributes).fingerprint()
    assert with_attributes != second
    write(tmp_path / "a.json", '{"2": [7, 2, 9]}')
    assert UserPerLineFile(path, attributes).fingerprint() != with_attributes


def test_user_per_line_file_with_s3rec_attributes(tmp_path):
    path = write(tmp_path / "Sports.txt", "1 5 3\n2 3 9\n")
    attributes = write(tmp_path / "Sports_item2attributes.json", '{"5": [7, 2, 8, 9], "3": [2], "4": []}')
    raw = UserPerLineFile(path, attributes).load()
    assert raw.items.values.tolist() == [["5", "7, 2, 8, 9"], ["3", "2"], ["4", ""]]
    assert raw.items["item"].tolist() == ["5", "3", "4"]  # the interactions' ids are strings too


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ('{"5": [7, 2],\n "3": [2,]}', r"a\.json: line 2, column 10: not valid JSON"),
        ("[[7, 2]]", r"a\.json: expected an object \{item: \[attribute ids\]\}, found a JSON list"),
        ('{"5": [7, 2], "3": "2"}', r"a\.json: item '3': '2' is not a list of integer attribute ids"),
        ('{"5": [7, 2.5]}', r"a\.json: item '5': \[7, 2\.5\] is not a list of integer attribute ids"),
        ("", r"a\.json: file is empty"),
    ],
)
def test_s3rec_attribute_errors(tmp_path, text, pattern):
    path = write(tmp_path / "u.txt", "1 5 3\n")
    with pytest.raises(DataError, match=pattern):
        UserPerLineFile(path, write(tmp_path / "a.json", text)).load()


# --- RecBoleAtomic ----------------------------------------------------------------------------

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t881250949\n1\t11\t3.5\t881250950\n"
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tprice:float\n"
    '10\tToy "Story"\t1995\t\n11\tHeat\t1995\t9.5\n'
)


def test_recbole_atomic(tmp_path):
    write(tmp_path / "ml.inter", INTER)
    write(tmp_path / "ml.item", ITEM)
    raw = RecBoleAtomic(str(tmp_path), "ml").load()
    assert raw.name == "ml"
    assert raw.interactions.values.tolist() == [["1", "10", 881250949, 4.0], ["1", "11", 881250950, 3.5]]
    assert raw.items.columns.tolist() == ["item", "movie_title", "release_year", "price"]
    assert raw.items["movie_title"].tolist() == ['Toy "Story"', "Heat"]
    assert raw.items["price"].isna().tolist() == [True, False] and raw.items["price"].dtype == "float64"


def test_recbole_atomic_without_item_file_or_timestamp(tmp_path):
    write(tmp_path / "d.inter", "uid:token\tiid:token\n1\tb\n1\ta\n")
    raw = RecBoleAtomic(str(tmp_path), "d", user_field="uid", item_field="iid", timestamp_field=None).load()
    assert raw.items is None
    assert raw.interactions.values.tolist() == [["1", "b", 0], ["1", "a", 1]]


@pytest.mark.parametrize(
    ("inter", "pattern"),
    [
        ("user_id:token\titem_id:str\n1\t2\n", r"d\.inter: line 1, field 'item_id:str': expected 'name:type'"),
        (
            "user_id:token\titem_id:token\n1\t2\n",
            r"d\.inter: missing column 'timestamp' \(columns found: 'user_id', 'item_id'\)",
        ),
        (
            "user_id:token\titem_id:token\ttimestamp:float\trating:float\n1\t2\t3\t4\n1\t2\t3\tgood\n",
            r"d\.inter: line 3, field 'rating': 'good' is not a number",
        ),
    ],
)
def test_recbole_atomic_errors(tmp_path, inter, pattern):
    write(tmp_path / "d.inter", inter)
    with pytest.raises(DataError, match=pattern):
        RecBoleAtomic(str(tmp_path), "d").load()
    with pytest.raises(DataError, match=r"other\.inter: file not found"):
        RecBoleAtomic(str(tmp_path), "other").load()


def test_recbole_fingerprint_sees_the_item_file(tmp_path):
    write(tmp_path / "ml.inter", INTER)
    source = RecBoleAtomic(str(tmp_path), "ml")
    without_items = source.fingerprint()
    assert without_items == RecBoleAtomic(str(tmp_path), "ml").fingerprint()
    write(tmp_path / "ml.item", ITEM)
    assert source.fingerprint() != without_items
    assert source.fingerprint() != RecBoleAtomic(str(tmp_path), "ml", rating_field="stars").fingerprint()


# --- KuaiRec ----------------------------------------------------------------------------------

KUAIREC_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"
KUAIREC_ROWS = (
    "14,148,4381,6067,2020-07-05 05:27:48.378,20200705,1593898068.378,0.722\n"
    "14,183,11635,6100,2020-07-05 05:28:00.057,20200705,1593898080.057,1.907\n"
    "19,148,6067,6067,,,,1.0\n"
)
CATEGORIES = 'video_id,feat\n148,[8]\n183,"[27, 9]"\n200,[]\n'


def test_kuairec_matrix_and_categories(tmp_path):
    write(tmp_path / "small_matrix.csv", KUAIREC_HEADER + KUAIREC_ROWS)
    write(tmp_path / "item_categories.csv", CATEGORIES)
    raw = KuaiRec(str(tmp_path), "small_matrix").load()
    assert raw.name == "kuairec-small_matrix"
    inter = raw.interactions
    assert inter[["user", "item"]].values.tolist() == [[14, 148], [14, 183], [19, 148]]
    assert inter["rating"].tolist() == [0.722, 1.907, 1.0]
    assert inter["timestamp"].iloc[0] == 1593898068.378 and pd.isna(inter["timestamp"].iloc[2])  # stage-2 row
    assert raw.items.values.tolist() == [[148, "8"], [183, "27, 9"], [200, ""]]


def test_kuairec_without_categories_and_fingerprint(tmp_path):
    write(tmp_path / "big_matrix.csv", KUAIREC_HEADER + KUAIREC_ROWS)
    source = KuaiRec(str(tmp_path))
    assert source.load().items is None
    first = source.fingerprint()
    write(tmp_path / "item_categories.csv", CATEGORIES)
    assert source.fingerprint() != first
    write(tmp_path / "small_matrix.csv", KUAIREC_HEADER + KUAIREC_ROWS)  # the same bytes, another matrix
    assert KuaiRec(str(tmp_path), "small_matrix").fingerprint() not in (first, source.fingerprint())


@pytest.mark.parametrize(
    ("rows", "categories", "pattern"),
    [
        ("14,1x8,1,1,,,1.0,0.5\n", None, r"big_matrix\.csv: line 2, field 'video_id': '1x8' is not an integer id"),
        ("14,148,1,1,,,1.0,0.5\n,183,1,1,,,2.0,0.5\n", None, r"line 3, field 'user_id': value is missing"),
        ("14,148,1,1,,,1.0,0.5\n14,183,1,1,,,2.0,lots\n", None, r"line 3, field 'watch_ratio': 'lots' is not a number"),
        ("14,148,1,1,,,yesterday,0.5\n", None, r"line 2, field 'timestamp': 'yesterday' is not a number"),
        (
            "14,148,1,1,,,1.0,0.5\n",
            'video_id,feat\n148,[8]\n183,"[27; 9]"\n',
            r"item_categories\.csv: line 3, field 'feat': '\[27; 9\]' is not a list of tag ids like \[27, 9\]",
        ),
        ("14,148,1,1,,,1.0,0.5\n", "video_id,tags\n148,[8]\n", r"item_categories\.csv: missing column 'feat'"),
        ("14,148,1,1,,,1.0,0.5\n14,183,1,1,,,2.0,0.5,9\n", None, r"big_matrix\.csv: cannot parse .*line 3, saw 9"),
        (
            "14,148,1,1,,,1.0,0.5\n",
            "video_id,feat\n148,[8]\nv183,[9]\n",
            r"item_categories\.csv: line 3, field 'video_id': 'v183' is not an integer id",
        ),
    ],
)
def test_kuairec_errors_name_file_line_and_field(tmp_path, rows, categories, pattern):
    write(tmp_path / "big_matrix.csv", KUAIREC_HEADER + rows)
    if categories is not None:
        write(tmp_path / "item_categories.csv", categories)
    with pytest.raises(DataError, match=pattern):
        KuaiRec(str(tmp_path)).load()


def test_kuairec_max_watch_ratio_clips_and_is_in_the_fingerprint(tmp_path):
    write(tmp_path / "small_matrix.csv", KUAIREC_HEADER + KUAIREC_ROWS + "19,183,1,1,,,,inf\n")
    clipped = KuaiRec(str(tmp_path), "small_matrix", max_watch_ratio=1.5)
    assert clipped.load().interactions["rating"].tolist() == [0.722, 1.5, 1.0, 1.5]
    assert KuaiRec(str(tmp_path), "small_matrix").load().interactions["rating"].iloc[-1] == float("inf")
    assert clipped.fingerprint() != KuaiRec(str(tmp_path), "small_matrix").fingerprint()
    with pytest.raises(DataError, match="max_watch_ratio must be > 0"):
        KuaiRec(str(tmp_path), max_watch_ratio=0)


def test_kuairec_missing_column_and_unknown_matrix(tmp_path):
    write(tmp_path / "big_matrix.csv", "user_id,video_id,timestamp\n1,2,3.0\n")
    with pytest.raises(DataError, match=r"big_matrix\.csv: missing column 'watch_ratio'"):
        KuaiRec(str(tmp_path)).load()
    with pytest.raises(DataError, match="unknown matrix 'medium_matrix'"):
        KuaiRec(str(tmp_path), "medium_matrix")


# --- KuaiRand ---------------------------------------------------------------------------------

KUAIRAND_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab\n"
)
VIDEO_HEADER = (
    "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
    "server_width,server_height,music_id,music_type,tag\n"
)


def kuairand_row(user, video, time_ms, click, play, duration) -> str:
    return f"{user},{video},20220421,400,{time_ms},{click},0,0,0,0,0,1,{play},{duration},0,0,0,0,1\n"


def write_kuairand(tmp_path, second_log: str | None = None, videos: str | None = None) -> None:
    first = kuairand_row(0, 3784, 1650485801301, 1, 15000, 10000) + kuairand_row(0, 17, 1650485801000, 0, 500, 0)
    write(tmp_path / "log_standard_4_08_to_4_21_pure.csv", KUAIRAND_HEADER + first)
    second = kuairand_row(1, 3784, 1650485900000, 1, 5000, 10000) if second_log is None else second_log
    write(tmp_path / "log_standard_4_22_to_5_08_pure.csv", KUAIRAND_HEADER + second)
    default_videos = (
        '3784,441,NORMAL,2020-07-08,ShortImport,1,17200.0,720,1280,989206467,4,"12,65"\n'
        "17,442,AD,2020-07-09,ShortImport,1,9000.0,720,1280,1,4,\n"
    )
    write(tmp_path / "video_features_basic_pure.csv", VIDEO_HEADER + (default_videos if videos is None else videos))


def test_kuairand_logs_ratings_and_tags(tmp_path):
    write_kuairand(tmp_path)
    raw = KuaiRand(str(tmp_path)).load()
    assert raw.interactions.values.tolist() == [
        [0, 3784, 1650485801301, 1.0],
        [0, 17, 1650485801000, 0.0],
        [1, 3784, 1650485900000, 1.0],
    ]
    assert raw.items.values.tolist() == [[3784, "12, 65"], [17, ""]]
    watch = KuaiRand(str(tmp_path), rating="watch_ratio", video_features=None).load()
    assert watch.interactions["rating"].tolist() == [1.5, 1.0, 0.5]  # 500 / 0 ms -> 1, as EasyRL4Rec
    assert watch.items is None
    second = KuaiRand(str(tmp_path), logs=["log_standard_4_22_to_5_08_pure.csv"]).load()
    assert second.interactions["user"].tolist() == [1]
    write(tmp_path / "log_random_4_22_to_5_08_pure.csv", KUAIRAND_HEADER + kuairand_row(2, 17, 1650485999000, 1, 0, 0))
    random = KuaiRand(str(tmp_path), logs=["log_random_4_22_to_5_08_pure.csv"], rating="watch_ratio").load()
    assert random.interactions.values.tolist() == [[2, 17, 1650485999000, 1.0]]  # the randomly exposed log


def test_kuairand_fingerprint_follows_logs_and_rating(tmp_path):
    write_kuairand(tmp_path)
    first = KuaiRand(str(tmp_path)).fingerprint()
    assert first == KuaiRand(str(tmp_path)).fingerprint()
    assert KuaiRand(str(tmp_path), rating="long_view").fingerprint() != first
    assert KuaiRand(str(tmp_path), logs=["log_standard_4_08_to_4_21_pure.csv"]).fingerprint() != first


@pytest.mark.parametrize(
    ("log", "videos", "rating", "pattern"),
    [
        (kuairand_row(1, 3784, "noon", 1, 1, 1), None, "is_click", r"4_22_to_5_08_pure\.csv: line 2, field 'time_ms'"),
        (
            kuairand_row(1, 3784, 1, 1, 1, 1) + kuairand_row(1, "", 2, 1, 1, 1),
            None,
            "is_click",
            r"4_22_to_5_08_pure\.csv: line 3, field 'video_id': value is missing",
        ),
        (kuairand_row(1, 3784, 1, "yes", 1, 1), None, "is_click", r"line 2, field 'is_click': 'yes' is not a number"),
        (kuairand_row(1, 3784, 1, 1, "?", 1), None, "watch_ratio", r"line 2, field 'play_time_ms': '\?' is not"),
        (kuairand_row(1, 3784, 1, 1, 1, 1), None, "is_happy", r"4_08_to_4_21_pure\.csv: missing column 'is_happy'"),
        (
            kuairand_row(1, 3784, 1, 1, 1, 1),
            '3784,441,NORMAL,2020-07-08,ShortImport,1,17200.0,720,1280,9,4,"12,sixty"\n',
            "is_click",
            r"video_features_basic_pure\.csv: line 2, field 'tag': '12,sixty' is not a list of tag ids like 27,9",
        ),
    ],
)
def test_kuairand_errors_name_file_line_and_field(tmp_path, log, videos, rating, pattern):
    write_kuairand(tmp_path, second_log=log, videos=videos)
    with pytest.raises(DataError, match=pattern):
        KuaiRand(str(tmp_path), rating=rating).load()


# --- Coat -------------------------------------------------------------------------------------

COAT_FEATURES = "gender:men\ngender:women\njackettype:bomber\njackettype:rain\ncolor:red\n"


def write_coat(tmp_path, train: str, features: str | None = None) -> str:
    write(tmp_path / "train.ascii", train)
    write(tmp_path / "test.ascii", "0 4 0\n1 0 0\n")
    if features is not None:
        (tmp_path / "user_item_features").mkdir()
        write(tmp_path / "user_item_features" / "item_features.ascii", features)
        write(tmp_path / "user_item_features" / "item_features_map.txt", COAT_FEATURES)
    return str(tmp_path)


def test_coat_parts_and_item_features(tmp_path):
    root = write_coat(tmp_path, "3 0 5\n0 0 2\n", "1 0 1 0 1\n0 1 0 1 1\n1 0 0 1 1\n")
    train = Coat(root).load()
    assert train.name == "coat-train"
    assert train.interactions.values.tolist() == [[0, 0, 0, 3.0], [0, 2, 2, 5.0], [1, 2, 2, 2.0]]
    assert train.items.values.tolist() == [
        [0, "men", "bomber", "red"],
        [1, "women", "rain", "red"],
        [2, "men", "rain", "red"],
    ]
    test = Coat(root, "test").load()
    assert test.interactions[["user", "item", "rating"]].values.tolist() == [[0, 1, 4.0], [1, 0, 1.0]]
    assert Coat(root).fingerprint() != Coat(root, "test").fingerprint()


@pytest.mark.parametrize(
    ("train", "features", "pattern"),
    [
        ("3 0 5\n0 2\n", None, r"train\.ascii: line 2: 2 fields, but line 1 has 3"),
        ("3 0 5\n0 x 2\n", None, r"train\.ascii: line 2, field 2: 'x' is not a number"),
        ("3 0 5\n0 7 2\n", None, r"train\.ascii: line 2, field 2: 7 is not a rating 0-5"),
        ("0 0 0\n0 0 0\n", None, r"train\.ascii: no ratings"),
        ("3 0 5\n", "1 0 1 0 1\n1 1 0 1 1\n1 0 0 1 1\n", r"item_features\.ascii: line 2: feature group 'gender'"),
        ("3 0 5\n", "1 0 1 0 1\n", r"item_features\.ascii: 1 rows x 5 columns, expected 3 items x 5 features"),
    ],
)
def test_coat_errors_name_file_line_and_field(tmp_path, train, features, pattern):
    with pytest.raises(DataError, match=pattern):
        Coat(write_coat(tmp_path, train, features)).load()
