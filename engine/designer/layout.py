"""A layered layout for flows without a ``layout:`` block.

A step's row is its shortest distance from the start step, its place in the row follows the
file order, and rows are centred on the widest one: the picture admin/diagram.py draws.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence

COLUMN = 220
ROW = 120
LEFT = 120
TOP = 60


def layers(order: Sequence[str], start: str | None, successors: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, int]]:
    """(row, column) of every step in ``order``: rows by shortest distance from ``start``."""
    depth: dict[str, int] = {}
    if start in successors:
        depth[start] = 0
        queue = deque([start])
        while queue:
            step_id = queue.popleft()
            for target in successors.get(step_id, ()):
                if target in successors and target not in depth:
                    depth[target] = depth[step_id] + 1
                    queue.append(target)
    bottom = max(depth.values(), default=-1) + 1
    for step_id in order:  # steps the start cannot reach go below the others
        depth.setdefault(step_id, bottom)
    placed: dict[str, tuple[int, int]] = {}
    per_row: dict[int, int] = {}
    for step_id in order:  # file order within a row keeps the picture stable between versions
        row = depth[step_id]
        placed[step_id] = (row, per_row.get(row, 0))
        per_row[row] = per_row.get(row, 0) + 1
    return placed


def positions(placed: Mapping[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Canvas (x, y) of each placed step, every row centred on the widest."""
    widest = max((col for _row, col in placed.values()), default=0) + 1
    row_width: dict[int, int] = {}
    for row, _col in placed.values():
        row_width[row] = row_width.get(row, 0) + 1
    return {
        step_id: (LEFT + col * COLUMN + (widest - row_width[row]) * COLUMN // 2, TOP + row * ROW)
        for step_id, (row, col) in placed.items()
    }


def layered(order: Sequence[str], start: str | None, successors: Mapping[str, Sequence[str]]) -> dict[str, tuple[int, int]]:
    """Canvas (x, y) of every step in ``order``."""
    return positions(layers(order, start, successors))
