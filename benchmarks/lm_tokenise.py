"""The data's length check: `datasets`' batched map (`aihf.lm.data.tokenize_columns`) against one tokenizer
call per row and answer (the code before), on synthetic preference rows, wall clock, best of `--repeats`.

Both give the same lengths (checked here; ids are checked in tests/lm/test_data.py). Run it on an otherwise
idle machine: `--num-proc` processes only help when as many cores are free.

    python benchmarks/lm_tokenise.py --model "$(aihf lm get-model smollm2-135m-instruct)" --rows 20000

The last lines are `name=value` ratios: map_vs_per_row and map_num_proc_vs_per_row (goal: > 1).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def _best(fn: Callable[[], list[int]], repeats: int) -> tuple[float, list[int]]:
    times, result = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    from aihf.lm.data import _token_lengths
    from aihf.lm.modeling import load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model directory or Hub name (its tokenizer)")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--num-proc", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model)
    answer = " warm and clever, a delight to watch."
    rows = [
        {"prompt": f"Review {i}: the film was", "chosen": answer * (1 + i % 5), "rejected": f" dull {i}."}
        for i in range(args.rows)
    ]

    def per_row() -> list[int]:
        return [
            max(len(tokenizer(r["prompt"] + r[a])["input_ids"]) for a in ("chosen", "rejected")) for r in rows
        ]

    old, expected = _best(per_row, args.repeats)
    mapped, lengths = _best(lambda: _token_lengths(tokenizer, rows, None), args.repeats)
    parallel, lengths_parallel = _best(lambda: _token_lengths(tokenizer, rows, args.num_proc), args.repeats)
    assert lengths == expected == lengths_parallel, "the datasets path gives other lengths"
    print(f"{args.rows} preference rows: per-row {old:.2f} s, map {mapped:.2f} s, ", end="")
    print(f"map num_proc={args.num_proc} {parallel:.2f} s")
    print(f"map_vs_per_row={old / mapped:.2f}")
    print(f"map_num_proc_vs_per_row={old / parallel:.2f}")


if __name__ == "__main__":
    main()
