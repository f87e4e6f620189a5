"""Part files in one process: shares, naming, the rank-0 merge (order, idempotence after a crash inside it), and
ShardedOutput behaving like ResumableOutput while folding parts a killed launch left behind."""
from __future__ import annotations

import json

import pytest

from thinklens.distributed import ShardedOutput, World, fold_parts, launched, part_files, part_path, sharded_files
from thinklens.errors import ThinklensError
from thinklens.jsonl import ResumableOutput, read_jsonl


def _ids(path) -> list[str]:
    return [line.record["id"] for line in read_jsonl(path) if line.record]


def _write(path, records, tail: bytes = b"") -> None:
    with open(path, "ab") as f:
        for r in records:
            f.write((json.dumps(r) + "\n").encode())
        f.write(tail)


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_shares_are_disjoint_cover_everything_and_do_not_depend_on_the_run(size):
    items = list(range(23))
    shares = [World(rank=r, size=size).share(items) for r in range(size)]
    assert sorted(x for s in shares for x in s) == items
    assert all(len(s) in (23 // size, 23 // size + 1) for s in shares)
    assert shares == [World(rank=r, size=size).share(items) for r in range(size)]  # the same share on a rerun


def test_the_launch_is_read_from_torchruns_environment():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.1"}
    assert launched(env) == World(rank=5, size=8, local_rank=1, local_size=4)
    assert launched({"RANK": "0"}) == World()  # no WORLD_SIZE: not a launch
    with pytest.raises(ThinklensError, match="must be integers"):
        launched({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ThinklensError, match="inconsistent"):
        launched({"RANK": "2", "WORLD_SIZE": "2"})


def test_part_files_are_found_for_every_world_size_and_nothing_else(tmp_path):
    out = tmp_path / "with.jsonl"
    names = ["with.jsonl.rank1-of-2", "with.jsonl.rank0-of-2", "with.jsonl.rank2-of-3", "with.jsonl.rank0-of-2.torn",
             "with.jsonl.torn", "with.jsonl.rank1-of-2x", "without.jsonl.rank0-of-2"]
    for n in names:
        (tmp_path / n).write_text("")
    assert [p.name for p in part_files(out)] == ["with.jsonl.rank0-of-2", "with.jsonl.rank1-of-2",
                                                 "with.jsonl.rank2-of-3"]
    assert part_path(out, World(rank=2, size=3)) == tmp_path / "with.jsonl.rank2-of-3"


def test_fold_merges_in_the_given_order_and_a_crash_inside_it_adds_nothing_twice(tmp_path):
    out = tmp_path / "o.jsonl"
    order = {k: i for i, k in enumerate("abcdefgh")}
    _write(out, [{"id": "a"}])
    _write(part_path(out, World(0, 2)), [{"id": "c"}, {"id": "e"}])
    _write(part_path(out, World(1, 2)), [{"id": "b"}, {"id": "d"}], tail=b'{"id": "f", "x')  # torn by a kill
    # a first merge that died after appending "b" and half of "c"
    _write(out, [{"id": "b"}], tail=b'{"id": "c"')
    assert fold_parts(out, lambda r: order.get(r["id"])) == 3
    assert _ids(out) == ["a", "b", "c", "d", "e"]
    assert part_files(out) == []
    assert b'{"id": "f", "x' in (tmp_path / "o.jsonl.torn").read_bytes()  # kept, as one process keeps its own
    assert fold_parts(out) == 0  # nothing left: idempotent


def test_fold_refuses_a_launch_whose_parts_rank0_cannot_see(tmp_path):
    out = tmp_path / "o.jsonl"
    _write(part_path(out, World(0, 2)), [{"id": "a"}])
    with pytest.raises(ThinklensError, match="rank1-of-2 is missing.*shares"):
        fold_parts(out, expect=2)


def test_sharded_output_in_one_process_is_resumable_output(tmp_path):
    problems = [{"id": i} for i in ["p1", "p2", "p1", "p3", "p4"]]
    got = {}
    for cls in (ResumableOutput, ShardedOutput):
        out = tmp_path / f"{cls.__name__}.jsonl"
        _write(out, [{"id": "p2"}], tail=b'{"id": "p3"')  # a torn last record: redone
        with cls(out) as o:
            todo = [p["id"] for p in o.pending_items(problems, key=lambda p: p["id"], where="problems")]
            for p in todo:
                o.write({"id": p})
        got[cls] = (todo, _ids(out), o.report.to_dict(), o.report.torn is not None, o.n_written)
    assert got[ResumableOutput] == got[ShardedOutput]
    assert got[ShardedOutput][0] == ["p1", "p3", "p4"]


def test_sharded_output_folds_what_a_killed_launch_left_and_skips_it(tmp_path):
    out = tmp_path / "traces.jsonl"
    _write(out, [{"id": "p0"}])
    _write(part_path(out, World(0, 2)), [{"id": "p2"}])
    _write(part_path(out, World(1, 2)), [{"id": "p1"}, {"id": "p5"}], tail=b'{"id": "p3", "completion": "4')
    items = [{"id": f"p{i}"} for i in range(6)]
    with ShardedOutput(out) as o:  # a rerun with another world size (one process)
        todo = [p["id"] for p in o.pending_items(items, key=lambda p: p["id"])]
        for p in todo:
            o.write({"id": p})
    assert todo == ["p3", "p4"]
    assert sorted(_ids(out)) == [f"p{i}" for i in range(6)] and len(_ids(out)) == 6
    assert _ids(out)[:4] == ["p0", "p1", "p2", "p5"]  # the parts in the input order
    assert part_files(out) == []


def test_sharded_output_sorts_by_the_given_order_and_merges_in_it(tmp_path):
    out = tmp_path / "o.jsonl"
    items = [{"id": "long", "n": 9}, {"id": "short", "n": 1}, {"id": "mid", "n": 5}]
    with ShardedOutput(out) as o:
        todo = [p["id"] for p in o.pending_items(items, key=lambda p: p["id"], order=lambda p: p["n"])]
        for p in todo:
            o.write({"id": p})
    assert todo == _ids(out) == ["short", "mid", "long"]


def test_writing_before_pending_is_refused(tmp_path):
    with pytest.raises(ThinklensError, match="before pending"):
        ShardedOutput(tmp_path / "o.jsonl").write({"id": "x"})


def test_sharded_files_in_one_process_are_the_files_themselves_after_folding_old_parts(tmp_path):
    a, b = tmp_path / "scores.jsonl", tmp_path / "skipped.jsonl"
    _write(part_path(a, World(1, 3)), [{"id": "t1"}])
    with sharded_files(a, b) as (mine_a, mine_b):
        assert (mine_a, mine_b) == (a, b)
        assert _ids(a) == ["t1"]  # folded before the caller reads what is done
    assert part_files(a) == [] and not b.exists()
