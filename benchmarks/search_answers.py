"""The answers (total, facets, first two pages) of 344 searches, as JSON, to compare two versions
of the search code on the same catalogue (e.g. bench_search.py's 10^6-dataset file):

    python benchmarks/search_answers.py benchmarks/work/search1m/catalogue.sqlite /tmp/new.json
    # the code before, as in results/search.md (run 8), on a copy made before this code opened it:
    python3 -c "import sys, runpy, domas.catalogue as c; c.__path__[:] = ['/tmp/old/catalogue']; \\
      sys.argv = ['search_answers.py', *sys.argv[1:]]; runpy.run_path('benchmarks/search_answers.py', \\
      run_name='__main__')" benchmarks/work/search1m-v2/catalogue.sqlite /tmp/old.json
    cmp /tmp/new.json /tmp/old.json && echo identical

Words from one letter to whole words and numbers, prefixes that begin 10^6 words of the index, and
two-word mixes; anonymous and a team member; plain, a beamline click, sort by title, a year click.
"""

from __future__ import annotations

import json
import sys

from domas.catalogue.search import SearchQuery
from domas.catalogue.sqlite import SQLiteCatalogue

NOW = 1_577_836_800.0 + 6 * 365 * 86400          # bench_search.py's clock
WORDS = ["s", "sc", "sca", "scan", "scan0", "scan00", "scan000", "scan0001", "l", "ly", "lys", "lyso", "lysoz",
         "lysozyme", "d", "da", "dat", "data", "r", "ra", "raw", "p", "pr", "pro", "proc", "bt", "bt0", "bt00", "bt001",
         "1", "12", "123", "1234", "12345", "0", "00", "zz", "é", "ins", "insulin tomo", "scan lyso", "sc di", "s s"]
VARIANTS = ({}, {"beamline": "B3"}, {"sort": "title"}, {"year": "2023"})


def answers(cat: SQLiteCatalogue) -> dict:
    found = {}
    for word in WORDS:
        for member in ((), ("BT01500",)):
            for extra in VARIANTS:
                cat._counts.clear()                       # cold, as after a write
                first = cat.search_datasets(SearchQuery(now=NOW, q=word, member_of=member, **extra))
                second = cat.search_datasets(SearchQuery(now=NOW, q=word, member_of=member, after=first.next,
                                                         **extra)) if first.next else None
                found[f"{word}|{member}|{extra}"] = [first.total, first.facets, [d.pid for d in first.datasets],
                                                     [d.pid for d in second.datasets] if second else None]
    return found


def main(argv: list[str]) -> int:
    catalogue, out = argv
    cat = SQLiteCatalogue(catalogue)
    try:
        with open(out, "w") as fh:
            json.dump(answers(cat), fh, sort_keys=True)
    finally:
        cat.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
