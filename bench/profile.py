"""Where a process spent its time, from a py-spy collapsed-stack file.

python -m bench.profile bench/results/profiles/worker.txt [--top 40] [--match text]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def summarize(path: Path, top: int, match: str = "") -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + _where(f) + ")" for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{path.name}: {total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        shown = 0
        for frame, n in counter.most_common():
            if match and match not in frame:
                continue
            lines.append(f"{100 * n / max(total, 1):6.1f}%  {frame}")
            shown += 1
            if shown >= top:
                break
    return "\n".join(lines)


def _where(frame: str) -> str:
    inside = frame.partition(" (")[2].rstrip(")")
    path, _, _line = inside.rpartition(":")
    parts = path.split("/")
    for anchor in ("site-packages", "orchestrator", "participants", "bench", "lib"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + (anchor in ("site-packages", "lib")) :])
    return "/".join(parts[-2:])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default="")
    args = parser.parse_args()
    for path in args.files:
        print(summarize(path, args.top, args.match))


if __name__ == "__main__":
    main()
