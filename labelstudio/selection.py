"""Which tasks of a project a job takes: task-id lists (``--tasks 1,2,5-9``) and shards (``--shard K/N``).

A shard is a stable split by task id: shard ``K`` of ``N`` holds the tasks whose ``id % N == K - 1``, so the N
shards never overlap, together hold every task, and a task keeps its shard however the project grows or whichever
process, machine or Kubernetes pod (an Indexed Job's ``JOB_COMPLETION_INDEX + 1``) runs it. Parsing errors are
ValueErrors whose message shows the expected form.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_TASK_IDS = 10_000_000  # a range such as 1-10**12 would be a typo, not a selection


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int = 1
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: K must lie in 1..N (e.g. --shard 2/4)")

    def holds(self, task_id: int) -> bool:
        return task_id % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``."""
    index, slash, count = str(text).strip().partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise ValueError(f"--shard must look like K/N (shard K of N, 1 <= K <= N), e.g. 2/4; got {text!r}")
    return Shard(int(index), int(count))


def parse_task_ids(text: str) -> frozenset[int]:
    """``"1,2,5-9"`` -> ``{1, 2, 5, 6, 7, 8, 9}`` (ranges inclusive; spaces allowed)."""
    ids: set[int] = set()
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        first, dash, last = part.partition("-")
        if not first.strip().isdigit() or (dash and not last.strip().isdigit()):
            raise ValueError(f"--tasks takes task ids and ranges such as 1,2,5-9; {part!r} is neither")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise ValueError(f"--tasks range {part!r} runs backwards: write {high}-{low}")
        if len(ids) + high - low + 1 > MAX_TASK_IDS:
            raise ValueError(f"--tasks names more than {MAX_TASK_IDS} tasks: leave --tasks out to take every task")
        ids.update(range(low, high + 1))
    if not ids:
        raise ValueError("--tasks names no task: give ids and ranges such as 1,2,5-9")
    return frozenset(ids)
