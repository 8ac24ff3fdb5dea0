"""Row blocks of a pairwise matrix, for the elementwise passes that follow its matrix product.

A pairwise distance is one matrix product followed by a few elementwise passes over the ``(n, m)``
result (a clamp, a square root, a logarithm, a scale). On the CPU each pass over a matrix larger
than the core's L2 cache streams it from the L3 cache or memory; done block by block, every pass
after the first finds its block (and the scratch beside it) in L2. On accelerators each pass is one
kernel over the whole matrix: there a single block is best (blocks only add kernel launches).
"""

from __future__ import annotations

from typing import Iterator

import torch

#: Elements per block on the CPU: float32 blocks of 256 KiB, so that a block and a scratch block of
#: the same size fit a 512 KiB L2 cache, and more than torch's grain size (32768 elements), so that
#: each pass over a block still runs on all threads. Measured in ``benchmarks.geometry_speed``.
CPU_BLOCK_ELEMENTS = 65536


def rows_per_block(matrix: torch.Tensor) -> int:
    """Rows of ``matrix`` ``(n, m)`` per block: about :data:`CPU_BLOCK_ELEMENTS` elements on the
    CPU, all rows elsewhere; at least 1."""
    rows, columns = matrix.shape
    if matrix.device.type != "cpu":
        return max(1, rows)
    return max(1, CPU_BLOCK_ELEMENTS // max(1, columns))


def row_blocks(matrix: torch.Tensor) -> Iterator[slice]:
    """Row slices of consecutive blocks covering ``matrix`` ``(n, m)`` (none when ``n = 0``)."""
    rows = rows_per_block(matrix)
    return (slice(start, start + rows) for start in range(0, matrix.shape[0], rows))
