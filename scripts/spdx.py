#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Check (default) or add (--fix) the SPDX licence line in every source file the repository tracks.

A source file is C++ (.h, .cc), Go (.go), shell (.sh, .ci/run), Python (.py), CMake (CMakeLists.txt, .cmake,
.cmake.in, .pc.in), FlatBuffers schema (.fbs), Promela (.pml) or the Go module file. The line goes first, or right
after a shebang. Exit status 1 lists the files without it.
"""
import subprocess
import sys

LINE = "SPDX-License-Identifier: Apache-2.0"


def comment_for(path):
    name = path.rsplit("/", 1)[-1]
    if name.endswith((".h", ".cc", ".go", ".fbs", ".pml")) or name == "go.mod":
        return "// "
    if name.endswith((".sh", ".py", ".cmake", ".in")) or name in ("CMakeLists.txt", "run"):
        return "# "
    return None


def main():
    fix = "--fix" in sys.argv[1:]
    files = subprocess.run(["git", "ls-files"], capture_output=True, text=True, check=True).stdout.split()
    missing = []
    for path in files:
        if "/corpus/" in path:
            continue
        prefix = comment_for(path)
        if prefix is None:
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        head = text.split("\n", 3)[:3]
        if any(LINE in line for line in head):
            continue
        missing.append(path)
        if fix:
            lines = text.split("\n")
            at = 1 if lines and lines[0].startswith("#!") else 0
            lines.insert(at, prefix + LINE)
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines))
    if missing and not fix:
        print("files without the line '%s':" % LINE)
        for path in missing:
            print("  " + path)
        return 1
    if fix:
        print("added the licence line to %d files" % len(missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
