#!/usr/bin/env python3
"""Keeps docs/design.md honest (ctest docs.design).

Checks, against the source tree given as the only argument (default: this file's repository):
  - every repository path the document names in backticks exists: a span whose first component
    is a top-level folder or file of the project (`daemon/sched/plan.c`, `schemas/json/*.json`,
    `daemon/campaign/engine.{c,h}`, `learner/`), or a bare file name with a source extension
    (`intake.c`), which some file of the tree must carry;
  - every route of daemon/api/routes.c is a row of the document's route table
    (| METHOD | `PATH` | ...), and the table has no route the code lacks;
  - every MQTT topic of daemon/bus/topics.c is named in the document;
  - no line outside a table is wider than 100 columns.
Every problem is printed as `docs/design.md:LINE: reason`; the exit status is 1 if there is any.
"""
import glob
import os
import re
import sys

TOP = {"core", "protocols", "drivers", "planner", "learner", "daemon", "sim", "cli", "schemas",
       "tests", "deploy", "docs", "tools", "cmake"}
BARE_EXT = (".c", ".h", ".py", ".md", ".sql", ".json", ".jsonl")


def expand_braces(s):
    m = re.search(r"\{([^{}]*,[^{}]*)\}", s)
    if not m:
        return [s]
    out = []
    for alt in m.group(1).split(","):
        out += expand_braces(s[:m.start()] + alt + s[m.end():])
    return out


def spans(lines):
    """(line number, text) of every backtick span outside fenced blocks."""
    fenced = False
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            for m in re.finditer(r"`([^`]+)`", line):
                yield n, m.group(1)


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                           os.path.join(os.path.dirname(__file__), "..", ".."))
    doc = os.path.join(root, "docs", "design.md")
    with open(doc, encoding="utf-8") as f:
        lines = f.read().split("\n")
    tops = TOP | {e for e in os.listdir(root) if not e.startswith(".") and e != "build"}
    basenames = set()
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".") and not x.startswith("build")]
        basenames.update(files)
    problems = []

    def bad(n, msg):
        problems.append("docs/design.md:%d: %s" % (n, msg))

    paths = 0
    for n, text in spans(lines):
        if not re.fullmatch(r"[A-Za-z0-9_.{},*/+-]+", text):
            continue
        first = text.split("/", 1)[0]
        if "/" in text and first in tops:
            for p in expand_braces(text):
                paths += 1
                full = os.path.join(root, p)
                if "*" in p:
                    if not glob.glob(full):
                        bad(n, "`%s` names no file" % p)
                elif not os.path.exists(full) or (p.endswith("/") and not os.path.isdir(full)):
                    bad(n, "`%s` does not exist" % p)
        elif "/" not in text and "{" not in text and "*" not in text and text.endswith(BARE_EXT):
            paths += 1
            if text not in basenames and not os.path.exists(os.path.join(root, text)):
                bad(n, "no file of the tree is called `%s`" % text)

    with open(os.path.join(root, "daemon", "api", "routes.c"), encoding="utf-8") as f:
        code_routes = set(re.findall(r'^\s*\{"([A-Z]+)", "(/[^"]*)",', f.read(), re.M))
    if not code_routes:
        bad(0, "no route found in daemon/api/routes.c")
    doc_routes = {}
    for n, line in enumerate(lines, 1):
        m = re.match(r"\|\s*([A-Z]+)\s*\|\s*`(/[^`]*)`\s*\|", line)
        if m:
            doc_routes[(m.group(1), m.group(2))] = n
    for method, path in sorted(code_routes - set(doc_routes)):
        bad(0, "route %s %s (daemon/api/routes.c) is not in the route table" % (method, path))
    for r in sorted(set(doc_routes) - code_routes):
        bad(doc_routes[r], "route %s %s is not in daemon/api/routes.c" % r)

    with open(os.path.join(root, "daemon", "bus", "topics.c"), encoding="utf-8") as f:
        topics = re.findall(r'\{LAB_TOPIC_\w+,\s*"[^"]*",\s*"([^"]*)"', f.read())
    if not topics:
        bad(0, "no topic found in daemon/bus/topics.c")
    body = "\n".join(lines)
    for t in topics:
        if "`%s`" % t not in body:
            bad(0, "MQTT topic %s (daemon/bus/topics.c) is not named" % t)

    for n, line in enumerate(lines, 1):
        if not line.startswith("|") and len(line) > 100:
            bad(n, "%d columns (100 at most outside tables)" % len(line))

    for p in problems:
        print(p)
    print("docs.design: %d paths, %d routes, %d topics checked; %d problems" %
          (paths, len(code_routes), len(topics), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
