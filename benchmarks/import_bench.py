"""Benchmark: `cxm leads import` against a raw `sqlite-utils insert --csv`.

Generates a Google Contacts export with the mess real exports have (case and
space variants of earlier emails, household phones, `:::` multi-values,
multi-line notes, blank lines, rows with no identifier, broken emails, phones
in many formats, a few in scientific notation), then in one run times:

- the raw load: ``sqlite-utils insert fresh.db contacts FILE --csv`` (no
  normalising, no deduplication);
- ``cxm leads import FILE`` into a fresh workspace (with its shipped sequences
  and pipeline rules, so every new lead is also enrolled and staged);
- for the breakdown, the same import with event hooks switched off (only
  possible from Python), i.e. the importer's own work.

Peak memory of each child process is measured with
``resource.getrusage(RUSAGE_CHILDREN)`` in a wrapper process of its own.

Usage:
    python benchmarks/import_bench.py                 # 100,000 rows
    python benchmarks/import_bench.py --rows 1000000  # the memory figure
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = (
    "First Name,Middle Name,Last Name,Phonetic First Name,Phonetic Middle Name,"
    "Phonetic Last Name,Name Prefix,Name Suffix,Nickname,File As,Organization Name,"
    "Organization Title,Organization Department,Birthday,Notes,Photo,Labels,"
    "E-mail 1 - Label,E-mail 1 - Value,E-mail 2 - Label,E-mail 2 - Value,"
    "Phone 1 - Label,Phone 1 - Value,Phone 2 - Label,Phone 2 - Value,"
    "Address 1 - Label,Address 1 - Formatted,Address 1 - Street,Address 1 - City,"
    "Address 1 - PO Box,Address 1 - Region,Address 1 - Postal Code,"
    "Address 1 - Country,Address 1 - Extended Address,Website 1 - Label,"
    "Website 1 - Value"
).split(",")
FIRST = [
    "Maria",
    "James",
    "Aisha",
    "José",
    "Zoë",
    "Chloé",
    "Daniel",
    "Sofia",
    "Liam",
    "Noah",
    "Emma",
    "Olivia",
    "Mateo",
    "Renée",
    "Søren",
    "Mia",
    "Ava",
    "Lucas",
]
LAST = [
    "Lopez",
    "O'Connor",
    "Khan",
    "Álvarez",
    "Ferrand",
    "Kim",
    "Walsh",
    "Peña",
    "Müller",
    "Nakamura",
    "Rossi",
    "Dubois",
    "Novak",
    "García",
    "Brooks",
]
# 555 numbers in these area codes pass libphonenumber's checks; 40 codes give
# 400,000 distinct numbers, so only the intended households share one.
AREAS = [
    "201",
    "202",
    "203",
    "205",
    "206",
    "207",
    "208",
    "209",
    "210",
    "212",
    "213",
    "214",
    "215",
    "216",
    "217",
    "218",
    "219",
    "224",
    "225",
    "228",
    "229",
    "231",
    "234",
    "239",
    "240",
    "248",
    "251",
    "252",
    "253",
    "254",
    "256",
    "260",
    "262",
    "267",
    "269",
    "270",
    "276",
    "281",
    "301",
    "302",
]
LABELS = ["* myContacts", "* myContacts ::: Leads", "* myContacts ::: Customers"]


def _phone(rng: random.Random, serial: int) -> str:
    area = AREAS[serial % len(AREAS)]
    line = f"{serial // len(AREAS) % 10_000:04d}"
    exchange = f"555-{line}"
    national = f"{area}555{line}"
    style = rng.random()
    if style < 0.3:
        return f"({area}) {exchange}"
    if style < 0.5:
        return f"+1 {area}-{exchange}"
    if style < 0.65:
        return national
    if style < 0.75:
        return f"{area}.555.{line}"
    if style < 0.8:
        return f"+1 ({area}) {exchange} x{serial % 90 + 10}"
    if style < 0.81:
        return "1.31255E+10"
    if style < 0.82:
        return "555-0142"
    return f"1{national}"


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write ``rows`` records (plus a few blank lines) in the Google layout."""
    rng = random.Random(seed)
    index = {name: i for i, name in enumerate(HEADER)}
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for serial in range(rows):
            row = [""] * len(HEADER)
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"{first.lower()}.{last.lower()}.{serial}@example.com"
            dice = rng.random()
            if dice < 0.05 and serial > 10:  # a duplicate of an earlier row
                earlier = rng.randrange(serial)
                email = f"  {first.upper()}.{last}.{earlier}@Example.com "
                first, last = first.upper(), last.upper()
            elif dice < 0.06:
                email = email.replace("@", "(at)")
            elif dice < 0.08:
                email = ""
            row[index["First Name"]] = first
            row[index["Last Name"]] = last
            row[index["Labels"]] = rng.choice(LABELS)
            if email:
                row[index["E-mail 1 - Label"]] = "* Home"
                row[index["E-mail 1 - Value"]] = email
            if rng.random() < 0.9:
                row[index["Phone 1 - Label"]] = rng.choice(["Mobile", "Work", "Home"])
                phone = _phone(rng, serial if rng.random() > 0.03 else serial // 2)
                if rng.random() < 0.05:
                    phone += " ::: " + _phone(rng, serial + 1)
                row[index["Phone 1 - Value"]] = phone
            if rng.random() < 0.1:
                row[index["Notes"]] = (
                    "Called twice, prefers texts.\nAsk about insurance."
                )
            if rng.random() < 0.2:
                year, month, day = (
                    rng.randrange(50, 99),
                    rng.randrange(1, 9),
                    rng.randrange(10, 19),
                )
                row[index["Birthday"]] = f"19{year}-0{month}-{day}"
            if rng.random() < 0.1:
                row[index["Organization Name"]] = f"{last} & Partners, LLC"
            writer.writerow(row)
            if serial % 5000 == 4999:
                out.write("\r\n")


BARE_IMPORT = """
import sys
from pathlib import Path
from cxm_cli.clock import SystemClock
from cxm_cli.importing import ImportOptions, import_file
from cxm_cli.workspace import load_workspace
workspace = load_workspace(Path(sys.argv[1]))
options = ImportOptions(rejects_path=Path(sys.argv[1]) / "rejects.csv", run_hooks=False)
import_file(workspace, workspace.open_db(), sys.argv[2], clock=SystemClock(),
            options=options)
"""


def measure(command: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak MB) of ``command`` run in a wrapper of its own."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL,"
        " stderr=subprocess.DEVNULL).returncode\n"
        "elapsed = time.perf_counter() - start\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(code, elapsed, peak)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    code, elapsed, peak = result.stdout.split()
    if code != "0":
        raise SystemExit(f"{command[0]} failed with exit code {code}")
    return float(elapsed), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()

    bin_dir = Path(sys.executable).parent
    cxm = shutil.which("cxm", path=str(bin_dir)) or "cxm"
    sqlite_utils = shutil.which("sqlite-utils", path=str(bin_dir)) or "sqlite-utils"
    work = Path(tempfile.mkdtemp(prefix="cxm-bench-"))
    try:
        source = work / "google-contacts.csv"
        started = time.perf_counter()
        generate(source, args.rows)
        size_mb = source.stat().st_size / 1e6
        print(
            f"generated {args.rows:,} rows ({size_mb:.1f} MB) in "
            f"{time.perf_counter() - started:.1f}s"
        )

        raw_s, raw_mb = measure(
            [
                sqlite_utils,
                "insert",
                str(work / "raw.db"),
                "contacts",
                str(source),
                "--csv",
            ],
            work,
        )
        subprocess.run(
            [cxm, "init", str(work / "ws")],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        cxm_s, cxm_mb = measure(
            [
                cxm,
                "--workspace",
                str(work / "ws"),
                "leads",
                "import",
                str(source),
                "--rejects",
                str(work / "rejects.csv"),
            ],
            work,
        )
        # The same import without event hooks (no sequence enrolment, no
        # pipeline rules): what the importer itself costs, for the breakdown.
        subprocess.run(
            [cxm, "init", str(work / "bare")],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        bare_s, bare_mb = measure(
            [sys.executable, "-c", BARE_IMPORT, str(work / "bare"), str(source)], work
        )
        print(f"sqlite-utils insert --csv : {raw_s:7.2f} s  peak {raw_mb:6.1f} MB")
        print(f"cxm leads import          : {cxm_s:7.2f} s  peak {cxm_mb:6.1f} MB")
        print(f"  of which without hooks  : {bare_s:7.2f} s  peak {bare_mb:6.1f} MB")
        print(f"ratio cxm / raw load      : {cxm_s / raw_s:7.2f}x")
        print(f"ratio without hooks / raw : {bare_s / raw_s:7.2f}x")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
