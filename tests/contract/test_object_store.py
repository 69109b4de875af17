"""Contract suite for :class:`adapters.base.ObjectStore`.

Every backend must pass every test here. Backends are fixture params: to add
one (S3, GCS, ...), write a factory below that yields an *empty* store rooted
at a fresh prefix (servers: :func:`tests.conftest.need_service`, or an emulator
fixture from ``conftest.py``/``tests/emulators.py``) and register it in
``BACKENDS``. Bucket-backend specifics (errors, credentials) are in
``test_bucket_stores.py``. Tests use only the public interface plus
``fsspec``/``pandas`` through ``url()``/``storage_options``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import fsspec
import pandas as pd
import pytest

from skyfeast.adapters.base import AdapterError, NotFound, ObjectStore, PermissionDenied
from tests.emulators import S3_KEYS, make_gcs_bucket, make_s3_bucket, need_sdk


# --------------------------------------------------------------------------- backends
# A factory gets (request, tmp_path) and returns ``make(name) -> ObjectStore``: a
# store rooted at ``name`` inside one fresh, empty per-test namespace (a directory,
# or a bucket prefix); ``make("")`` is the namespace itself. Clean-up goes via
# request.addfinalizer.
def _local(request: pytest.FixtureRequest, tmp_path) -> Callable[[str], ObjectStore]:
    from skyfeast.adapters.storage.local import LocalStore

    # roots are not created up front: a store must work from an unused root
    return lambda name: LocalStore(tmp_path / "bucket" / name)


def _s3(request: pytest.FixtureRequest, tmp_path) -> Callable[[str], ObjectStore]:
    need_sdk("S3 backend", "s3", "boto3", "s3fs")
    from skyfeast.adapters.storage.s3 import S3Store

    endpoint = request.getfixturevalue("moto_server").endpoint
    bucket = make_s3_bucket(endpoint)  # a fresh bucket per test; make("") is its root
    return lambda name: S3Store(bucket, prefix=name, endpoint_url=endpoint, **S3_KEYS)


def _gcs(request: pytest.FixtureRequest, tmp_path) -> Callable[[str], ObjectStore]:
    need_sdk("GCS backend", "gcs", "google.cloud.storage", "gcsfs")
    from skyfeast.adapters.storage.gcs import GCSStore

    endpoint = request.getfixturevalue("gcs_emulator").endpoint
    bucket = make_gcs_bucket(endpoint)
    return lambda name: GCSStore(bucket, prefix=name, project="skyfeast-test", endpoint=endpoint)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, object], Callable[[str], ObjectStore]]] = {
    "local": _local,
    "s3": _s3,  # moto server (tests/emulators.py), real S3 REST protocol via boto3 and s3fs
    "gcs": _gcs,  # gcp-storage-emulator, real GCS JSON API via google-cloud-storage and gcsfs
}


@pytest.fixture(params=sorted(BACKENDS))
def make_store(request, tmp_path) -> Callable[[str], ObjectStore]:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def store(make_store) -> ObjectStore:
    return make_store("prefix")


@pytest.fixture
def filled(store) -> ObjectStore:
    for key, data in {
        "a.txt": b"a",
        "di.txt": b"di",
        "dir/x.txt": b"x",
        "dir/sub/y.txt": b"y",
        "dirx/z.txt": b"z",
        "events/events-2026-11-20.parquet": b"1",
        "events/events-2026-11-21.parquet": b"2",
        "events/events-2026-12-01.parquet": b"3",
        "events/notes.md": b"n",
    }.items():
        store.write_bytes(key, data)
    return store


ALL_KEYS = sorted([
    "a.txt", "di.txt", "dir/sub/y.txt", "dir/x.txt", "dirx/z.txt",
    "events/events-2026-11-20.parquet", "events/events-2026-11-21.parquet",
    "events/events-2026-12-01.parquet", "events/notes.md",
])


# --------------------------------------------------------------------------- basics
def test_is_an_object_store(store):
    assert isinstance(store, ObjectStore)
    assert isinstance(store.storage_options, dict)
    assert isinstance(store.url(), str) and isinstance(store.url("k"), str)


def test_empty_store(store):
    assert store.list() == []
    assert store.list("") == []
    assert store.list("anything/") == []
    assert store.glob("*") == []
    assert store.exists("nothing") is False
    store.check()


def test_check_passes_on_written_store(filled):
    filled.check()


# --------------------------------------------------------------------------- read / write
@pytest.mark.parametrize(
    "key,data",
    [
        ("k.bin", b"hello"),
        ("nested/deeper/still/k.bin", b"\x00\x01\xff" * 1000),
        ("empty.bin", b""),
        ("with space/and-ünïcödé.txt", "ünïcödé".encode()),
        ("big.bin", bytes(range(256)) * 8192),  # 2 MiB
    ],
)
def test_write_read_round_trip(store, key, data):
    store.write_bytes(key, data)
    assert store.read_bytes(key) == data
    assert store.exists(key)
    assert store.list() == [key]


def test_overwrite_replaces_whole_object(store):
    store.write_bytes("k", b"a much longer first version")
    store.write_bytes("k", b"short")
    assert store.read_bytes("k") == b"short"
    store.write_bytes("k", b"")
    assert store.read_bytes("k") == b""
    assert store.list() == ["k"]


def test_writes_leave_no_temporary_objects(store):
    for i in range(5):
        store.write_bytes("d/k", str(i).encode())
    store.write_bytes("d/other", b"o")
    assert store.list() == ["d/k", "d/other"]
    assert store.glob("d/*") == ["d/k", "d/other"]


def test_readers_never_see_a_partial_object(store):
    old, new = b"o" * (1 << 20), b"n" * (1 << 20)
    store.write_bytes("atomic.bin", old)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            i = 0
            while not stop.is_set():
                store.write_bytes("atomic.bin", new if i % 2 else old)
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(100):
            assert store.read_bytes("atomic.bin") in (old, new)
    finally:
        stop.set()
        t.join()
    assert not errors


@pytest.mark.parametrize("key", ["missing", "dir/missing", "no/such/dir/k"])
def test_read_missing_raises_not_found(filled, key):
    with pytest.raises(NotFound):
        filled.read_bytes(key)


def test_read_below_an_object_is_not_found(filled):
    with pytest.raises(NotFound):
        filled.read_bytes("a.txt/child")
    assert filled.exists("a.txt/child") is False


def test_prefix_is_not_an_object(filled):
    with pytest.raises(NotFound):
        filled.read_bytes("dir")
    assert filled.exists("dir") is False


def test_not_found_is_catchable_generically(store):
    with pytest.raises(LookupError):
        store.read_bytes("missing")
    with pytest.raises(AdapterError):
        store.read_bytes("missing")
    assert NotFound.infrastructure is False


# --------------------------------------------------------------------------- exists
def test_exists(filled):
    assert filled.exists("a.txt")
    assert filled.exists("dir/sub/y.txt")
    assert not filled.exists("dir/sub/nope.txt")
    assert not filled.exists("a")  # a prefix of a key is not a key


# --------------------------------------------------------------------------- list
def test_list_everything_sorted(filled):
    assert filled.list() == ALL_KEYS
    assert filled.list("") == ALL_KEYS


def test_list_directory_prefix(filled):
    assert filled.list("dir/") == ["dir/sub/y.txt", "dir/x.txt"]
    assert filled.list("dir/sub/") == ["dir/sub/y.txt"]
    assert filled.list("events/") == [k for k in ALL_KEYS if k.startswith("events/")]


def test_list_is_a_string_prefix(filled):
    # "dir" without a slash is a prefix of "dir/..." and of "dirx/..." alike
    assert filled.list("dir") == ["dir/sub/y.txt", "dir/x.txt", "dirx/z.txt"]
    assert filled.list("di") == ["di.txt", "dir/sub/y.txt", "dir/x.txt", "dirx/z.txt"]


def test_list_partial_name(filled):
    assert filled.list("events/events-2026-11") == [
        "events/events-2026-11-20.parquet",
        "events/events-2026-11-21.parquet",
    ]
    assert filled.list("events/events-2026-11-21.parquet") == ["events/events-2026-11-21.parquet"]
    assert filled.list("dir/s") == ["dir/sub/y.txt"]
    assert filled.list("dir/x") == ["dir/x.txt"]


def test_list_no_match_is_empty_not_error(filled):
    assert filled.list("nope") == []
    assert filled.list("nope/") == []
    assert filled.list("events/zzz") == []
    assert filled.list("a.txt/") == []


def test_list_window_parts_like_the_executor(store):
    tag = "20261128T060000-20261128T070000"
    for i in range(3):
        store.write_bytes(f"offline/fv/{tag}-part{i:05d}.parquet", b"p")
    store.write_bytes("offline/fv/20261128T070000-20261128T080000-part00000.parquet", b"q")
    keys = store.list(f"offline/fv/{tag}")
    assert keys == [f"offline/fv/{tag}-part{i:05d}.parquet" for i in range(3)]
    store.delete(keys)
    assert store.list("offline/fv/") == ["offline/fv/20261128T070000-20261128T080000-part00000.parquet"]


# --------------------------------------------------------------------------- glob
def test_glob(filled):
    assert filled.glob("*.txt") == ["a.txt", "di.txt"]  # '*' does not cross '/'
    assert filled.glob("dir/*") == ["dir/x.txt"]
    assert filled.glob("dir/*/*.txt") == ["dir/sub/y.txt"]
    assert filled.glob("events/events-2026-11-*.parquet") == [
        "events/events-2026-11-20.parquet",
        "events/events-2026-11-21.parquet",
    ]
    assert filled.glob("events/events-2026-1?-0?.parquet") == ["events/events-2026-12-01.parquet"]
    assert filled.glob("events/events-2026-11-2[1-9].parquet") == ["events/events-2026-11-21.parquet"]
    assert filled.glob("events/*.md") == ["events/notes.md"]


def test_glob_exact_key_and_no_match(filled):
    assert filled.glob("dir/x.txt") == ["dir/x.txt"]
    assert filled.glob("events/*.csv") == []
    assert filled.glob("missing/*") == []


def test_glob_returns_objects_not_prefixes(filled):
    assert filled.glob("di*") == ["di.txt"]


# --------------------------------------------------------------------------- delete
def test_delete(filled):
    filled.delete(["a.txt", "dir/x.txt"])
    assert not filled.exists("a.txt")
    assert not filled.exists("dir/x.txt")
    assert filled.list() == [k for k in ALL_KEYS if k not in ("a.txt", "dir/x.txt")]
    with pytest.raises(NotFound):
        filled.read_bytes("a.txt")


def test_delete_ignores_absent_keys(filled):
    filled.delete(["missing", "no/such/dir/k", "a.txt/child", "dir/x.txt", "dir/x.txt"])
    assert not filled.exists("dir/x.txt")
    filled.delete([])
    assert "a.txt" in filled.list()


def test_delete_a_prefix_deletes_nothing(filled):
    filled.delete(["dir", "dir/"])
    assert filled.list("dir/") == ["dir/sub/y.txt", "dir/x.txt"]


def test_rewrite_after_delete(store):
    store.write_bytes("k", b"1")
    store.delete(["k"])
    store.write_bytes("k", b"2")
    assert store.read_bytes("k") == b"2"


# --------------------------------------------------------------------------- root confinement
ESCAPES = ["../outside.txt", "../../etc/passwd", "dir/../../outside.txt", "/etc/passwd"]


@pytest.mark.parametrize("key", ESCAPES)
def test_keys_escaping_the_root_are_denied(store, key):
    store.write_bytes("inside.txt", b"i")
    with pytest.raises(PermissionDenied):
        store.read_bytes(key)
    with pytest.raises(PermissionDenied):
        store.write_bytes(key, b"x")
    with pytest.raises(PermissionDenied):
        store.delete([key])
    with pytest.raises(PermissionDenied):
        store.exists(key)
    with pytest.raises(PermissionDenied):
        store.list(key)


@pytest.mark.parametrize("pattern", ["../*", "../../*", "dir/../../*", "/etc/*"])
def test_glob_escaping_the_root_is_denied(store, pattern):
    store.write_bytes("inside.txt", b"i")
    with pytest.raises(PermissionDenied):
        store.glob(pattern)


def test_escape_leaves_neighbours_alone(store):
    # a sibling object just outside the root must stay invisible and untouched
    store.write_bytes("inside.txt", b"i")
    with pytest.raises(PermissionDenied):
        store.write_bytes("../neighbour.txt", b"x")
    with pytest.raises(PermissionDenied):
        store.delete(["../neighbour.txt"])
    assert store.list() == ["inside.txt"]


def test_neighbouring_roots_are_isolated(make_store):
    """A store never sees objects beside its root whose names merely start with the root's name."""
    outer = make_store("")  # the whole per-test namespace
    outer.write_bytes("prefix-neighbour.txt", b"other")
    outer.write_bytes("prefix-neighbour/k.txt", b"other")
    outer.write_bytes("prefixk.txt", b"other")
    mine = make_store("prefix")
    assert mine.list() == [] and mine.list("") == [] and mine.list("k") == []
    assert mine.glob("*") == []
    assert not mine.exists("k.txt")
    mine.write_bytes("k.txt", b"mine")
    assert mine.list() == ["k.txt"] and mine.read_bytes("k.txt") == b"mine"
    # the outer store sees the inner store's objects under its name
    assert outer.list("prefix/") == ["prefix/k.txt"]
    assert outer.read_bytes("prefix/k.txt") == b"mine"
    mine.delete(["k.txt"])
    assert outer.list() == ["prefix-neighbour.txt", "prefix-neighbour/k.txt", "prefixk.txt"]


def test_permission_denied_is_a_permission_error():
    assert issubclass(PermissionDenied, PermissionError)
    assert issubclass(PermissionDenied, AdapterError)


# --------------------------------------------------------------------------- url() for fsspec / pandas / dask
def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [1, 2, 3],
        "amount": [1.5, 2.5, None],
        "event_timestamp": pd.to_datetime(["2026-11-28T09:00:00Z", "2026-11-28T09:30:00Z", "2026-11-28T09:59:59Z"]),
    })


def test_url_fsspec_parquet_round_trip(store):
    key = "offline/fv/20261128T090000-20261128T100000-part00000.parquet"
    df = _frame()
    with fsspec.open(store.url(key), "wb", **store.storage_options) as fh:
        df.to_parquet(fh, index=False)
    # visible through the store API ...
    assert store.exists(key)
    assert store.list("offline/") == [key]
    assert pd.read_parquet(io.BytesIO(store.read_bytes(key))).equals(df)
    # ... and readable back through fsspec
    with fsspec.open(store.url(key), "rb", **store.storage_options) as fh:
        back = pd.read_parquet(fh)
    pd.testing.assert_frame_equal(back, df)


def test_objects_written_by_store_are_readable_through_url(store):
    buf = io.BytesIO()
    _frame().to_parquet(buf, index=False)
    store.write_bytes("events/events-2026-11-28.parquet", buf.getvalue())
    with fsspec.open(store.url("events/events-2026-11-28.parquet"), "rb", **store.storage_options) as fh:
        pd.testing.assert_frame_equal(pd.read_parquet(fh), _frame())


def test_url_glob_characters_pass_through(filled):
    files = fsspec.open_files(filled.url("events/events-2026-11-*.parquet"), "rb", **filled.storage_options)
    assert len(files) == len(filled.glob("events/events-2026-11-*.parquet")) == 2
    assert sorted(f.open().read() for f in files) == [b"1", b"2"]


def test_url_of_root_contains_key_urls(store):
    root = store.url().rstrip("/")
    assert store.url("a/b.txt").startswith(root)
    assert store.url("a/b.txt").endswith("a/b.txt")


def test_dask_reads_parquet_through_url(store):
    dd = pytest.importorskip("dask.dataframe")
    for i, part in enumerate((_frame().iloc[:2], _frame().iloc[2:])):
        with fsspec.open(store.url(f"src/part-{i}.parquet"), "wb", **store.storage_options) as fh:
            part.to_parquet(fh, index=False)
    urls = [store.url(k) for k in store.glob("src/*.parquet")]
    import dask

    with dask.config.set(scheduler="sync"):
        got = dd.read_parquet(urls, storage_options=store.storage_options or None).compute()
    assert sorted(got["user_id"].tolist()) == [1, 2, 3]


def test_pandas_reads_parquet_url_with_storage_options(store, request):
    if request.node.callspec.params["make_store"] == "local":
        # pandas refuses storage_options with a non-URL path, and LocalStore.url() returns a bare path
        request.applymarker(pytest.mark.xfail(raises=ValueError, strict=True,
                                              reason="LocalStore.url() is a plain path; pandas rejects storage_options for it"))
    key = "frames/frame.parquet"
    with fsspec.open(store.url(key), "wb", **store.storage_options) as fh:
        _frame().to_parquet(fh, index=False)
    got = pd.read_parquet(store.url(key), storage_options=store.storage_options)
    pd.testing.assert_frame_equal(got, _frame())


def test_dask_reads_a_glob_url(store):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    for i, part in enumerate((_frame().iloc[:1], _frame().iloc[1:])):
        with fsspec.open(store.url(f"src/part-{i}.parquet"), "wb", **store.storage_options) as fh:
            part.to_parquet(fh, index=False)
    store.write_bytes("src/notes.md", b"not parquet")
    with dask.config.set(scheduler="sync"):
        got = dd.read_parquet(store.url("src/*.parquet"), storage_options=store.storage_options or None).compute()
    assert sorted(got["user_id"].tolist()) == [1, 2, 3]
