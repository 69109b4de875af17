"""Publishing a staged part to its offline key: copied byte for byte when nothing changes it, written
again when the spec sets a column (a model group's versions field) or the part is on another storage."""

from __future__ import annotations

import pandas as pd

from skyfeast.scheduler.run.executor import PartitionSpec, publish_offline


def _spec(tmp_path, **kw) -> PartitionSpec:
    opts = {"auto_mkdir": True}
    return PartitionSpec(window=None, target=None, out_url=f"file://{tmp_path}/offline/view/w",
                         stage_url=f"file://{tmp_path}/staging/view/w", storage_options=opts, user_fn=None,
                         user_fn_name="t", **kw)


def _staged(tmp_path) -> str:
    path = tmp_path / "staging" / "view" / "w-part00003.parquet"
    path.parent.mkdir(parents=True)
    pd.DataFrame({"user_id": [1, 2], "f": [0.5, 1.5]}).to_parquet(path, index=False, row_group_size=1)
    return f"file://{path}"


def test_staged_part_is_copied(tmp_path):
    staged = _staged(tmp_path)
    got = publish_offline(staged, {"auto_mkdir": True}, 3, _spec(tmp_path))
    out = tmp_path / "offline" / "view" / "w-part00003.parquet"
    assert got == {"file": f"file://{out}"}
    assert out.read_bytes() == (tmp_path / "staging" / "view" / "w-part00003.parquet").read_bytes()


def test_a_spec_that_sets_a_column_writes_it(tmp_path):
    staged = _staged(tmp_path)
    publish_offline(staged, {"auto_mkdir": True}, 3, _spec(tmp_path, assign=(("versions", "set-1"),)))
    out = pd.read_parquet(tmp_path / "offline" / "view" / "w-part00003.parquet")
    assert list(out["versions"]) == ["set-1", "set-1"] and list(out["f"]) == [0.5, 1.5]


def test_a_part_on_other_storage_options_is_read_and_written(tmp_path):
    staged = _staged(tmp_path)
    publish_offline(staged, {}, 3, _spec(tmp_path))  # other options: not assumed to be the same storage
    out = pd.read_parquet(tmp_path / "offline" / "view" / "w-part00003.parquet")
    assert out.to_dict("list") == {"user_id": [1, 2], "f": [0.5, 1.5]}
