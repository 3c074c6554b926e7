#!/usr/bin/python3
"""Checks that the C files' names tell them apart (the ctest docs.file_names).

A reader should know from a file's name what it owns, and never mistake one file for another.
Over every .c and .h outside tests/ and build*/ (and hidden directories), it fails when:
  - two base names (the name without .c/.h) are at edit distance 1, wherever they are
    (plate vs plates, inst vs instr); the same base name in two directories is allowed
    (daemon/api/runs.c, daemon/store/runs.c: the directory says which);
  - in one directory a base name is the start of another (learn and learner, plate and
    plates), except NAME_int.h, the internal header of the module NAME;
  - in one directory NAME.c does not include its NAME.h (directly or through the tree's own
    headers, e.g. NAME_int.h): one name, two modules.
Usage: check_names.py [ROOT] (default: the tree this script is in), or check_names.py
--self-test (each rule on small trees of its own). Standard library only.
"""

import os
import re
import sys

SKIP_DIRS = re.compile(r"^(tests|build.*|\..*)$")


def c_files(root):
    """Every .c/.h as (directory relative to root, base name, extension)."""
    out = []
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        if rel == ".":
            rel = ""
        dirs[:] = sorted(x for x in dirs if not SKIP_DIRS.match(x))
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext in (".c", ".h"):
                out.append((rel, stem, ext))
    return out


def distance_is_one(a, b):
    """True when one substitution, insertion or deletion turns a into b."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]


INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def reaches(root, path, header):
    """Whether the file at path includes header, directly or through the tree's own headers."""
    seen, todo = set(), [path]
    while todo:
        p = todo.pop()
        if p in seen or not os.path.isfile(os.path.join(root, p)):
            continue
        seen.add(p)
        with open(os.path.join(root, p), encoding="utf-8", errors="replace") as f:
            found = INCLUDE.findall(f.read())
        if header in found:
            return True
        todo.extend(found)
    return False


def problems(root):
    files = c_files(root)
    where = {}  # base name -> directories
    for d, stem, _ in files:
        where.setdefault(stem, set()).add(d)
    out = []

    def paths(stem):
        return ", ".join(sorted(os.path.join(d, stem) + ".*" for d in where[stem]))

    stems = sorted(where)
    for i, a in enumerate(stems):
        for b in stems[i + 1 :]:
            if distance_is_one(a, b):
                out.append(f"names one letter apart: {paths(a)} and {paths(b)}")

    by_dir = {}
    for d, stem, ext in files:
        by_dir.setdefault(d, {}).setdefault(stem, set()).add(ext)
    for d, here in sorted(by_dir.items()):
        for a in sorted(here):
            for b in sorted(here):
                if a != b and b.startswith(a) and b != a + "_int":
                    out.append(
                        f"one name inside another in {d or '.'}/: {a} and {b} "
                        f"(only {a}_int.h may start with {a})"
                    )
            if here[a] == {".c", ".h"}:
                header = os.path.join(d, a + ".h").replace(os.sep, "/")
                if not reaches(root, os.path.join(d, a + ".c"), header):
                    out.append(
                        f"{header[:-2]}.c does not include {header}: one name, two modules"
                    )
    return out


def self_test():
    """Each rule on a small tree of its own: the trees that break one must fail, the rest pass."""
    import tempfile

    inc = '#include "{}"\n'.format
    trees = {  # name: ({path: text}, problems expected)
        "plate vs plates": ({"a/plate.c": "", "b/plates.c": ""}, True),
        "inst vs instr": ({"sim/inst.h": "", "d/instr/instr.c": ""}, True),
        "learn, learner": ({"loop/learn.h": "", "loop/learner.h": ""}, True),
        "x.c without x.h": ({"m/x.h": "", "m/x.c": inc("m/other.h"), "m/other.h": ""}, True),
        "runs twice": ({"api/runs.c": "", "store/runs.c": inc("store/runs.h"),
                        "store/runs.h": ""}, False),
        "x.c through x_int.h": ({"m/x.h": "", "m/x_int.h": inc("m/x.h"),
                                 "m/x.c": inc("m/x_int.h")}, False),
        "tests and build apart": ({"tests/plate.c": "", "build-asan/plates.c": "",
                                   "plate.c": ""}, False),
    }
    failed = 0
    for name, (files, want) in trees.items():
        with tempfile.TemporaryDirectory() as t:
            for p, text in files.items():
                os.makedirs(os.path.join(t, os.path.dirname(p)), exist_ok=True)
                with open(os.path.join(t, p), "w") as f:
                    f.write(text)
            got = len(problems(t))
        if (got > 0) != want:
            print(f"check_names: self-test {name!r}: {got} problem(s), expected "
                  f"{'some' if want else 'none'}", file=sys.stderr)
            failed += 1
    print(f"check_names: self-test, {len(trees) - failed} of {len(trees)} cases right")
    return 1 if failed else 0


def main():
    if sys.argv[1:2] == ["--self-test"]:
        return self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    root = os.path.abspath(root)
    found = problems(root)
    for p in found:
        print(f"check_names: {p}", file=sys.stderr)
    if found:
        print(f"check_names: {len(found)} problem(s) in {root}: rename so each name says "
              "what it owns", file=sys.stderr)
        return 1
    print(f"check_names: {len(c_files(root))} C files, every name distinct")
    return 0


if __name__ == "__main__":
    sys.exit(main())
