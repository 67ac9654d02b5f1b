"""Write examples/contacts.csv: 3000 contacts, about one row in twelve bad on purpose.

Run ``python examples/make_contacts.py`` to rebuild the file; the same seed always gives
the same bytes. The bad rows are the kinds real exports have: malformed emails, empty
names, out-of-range ages, unknown countries, impossible dates, a company name with an
unquoted comma (one field too many), a row saved as Latin-1 (not UTF-8), a blank line,
and disposable email domains that the example processor refuses.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

ROWS = 3000
SEED = 42
HEADER = [
    "email",
    "first_name",
    "last_name",
    "company",
    "country",
    "age",
    "signup_date",
    "newsletter",
]
FIRST = [
    "Ana",
    "Ben",
    "Chloé",
    "Dmitri",
    "Eva",
    "Farid",
    "Grace",
    "Hiro",
    "Inès",
    "Jonas",
    "Kwame",
    "Lena",
    "Mateo",
    "Nora",
    "Olu",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Zoë",
]
LAST = [
    "Smith",
    "García",
    "Müller",
    "Nakamura",
    "O'Brien",
    "Kowalski",
    "Dubois",
    "Rossi",
    "Novak",
    "Okafor",
    "Larsen",
    "Silva",
    "Chen",
    "Haddad",
    "Ivanova",
    "Brown",
]
COMPANIES = [
    "",
    "",
    "Acme",
    "Globex",
    "Initech",
    "Umbrella Corp",
    "Stark Industries",
    "Wayne Enterprises",
    "Hooli",
    "Vandelay Industries",
    '"Quotes" Ltd',
    "Smith, Jones & Partners",
]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "JP", "BR", "IN", "NG", "CA"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "gmail.com", "proton.me"]


def contact(rng: random.Random, n: int) -> list[str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = f"{first}.{last}{n}".lower().replace("'", "")
    return [
        f"{local}@{rng.choice(DOMAINS)}",
        first,
        last,
        rng.choice(COMPANIES),
        rng.choice(COUNTRIES),
        rng.choice(["", str(rng.randint(16, 90))]),
        f"20{rng.randint(18, 24)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        rng.choice(["yes", "no", "true", "false"]),
    ]


def spoil(rng: random.Random, row: list[str]) -> list[str] | bytes:
    """Make one row bad in one of the ways real files are."""
    kind = rng.randrange(10)
    if kind == 0:
        row[0] = row[0].replace("@", " at ")
    elif kind == 1:
        row[1] = ""
    elif kind == 2:
        row[5] = rng.choice(["7", "212", "thirty"])
    elif kind == 3:
        row[4] = rng.choice(["USA", "uk", "Germany"])
    elif kind == 4:
        row[6] = rng.choice(["2023-02-30", "31/12/2022", "yesterday"])
    elif kind == 5:
        row[7] = "maybe"
    elif kind == 6:
        row[0] = row[0].split("@")[0] + "@" + rng.choice(["mailinator.com", "trashmail.com"])
    elif kind == 7:
        return (",".join(row[:3]) + ",Acme, Inc," + ",".join(row[4:])).encode() + b"\n"
    elif kind == 8:
        row[1] = "José"
        return _line(row).encode("latin-1", "replace")
    else:
        row[2] = ""
        row[0] = ""
    return row


def _line(row: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(row)
    return out.getvalue()


def build() -> bytes:
    rng = random.Random(SEED)
    chunks = [_line(HEADER).encode()]
    for n in range(1, ROWS + 1):
        good = contact(rng, n)
        row = spoil(rng, good) if rng.random() < 0.08 else good
        chunks.append(row if isinstance(row, bytes) else _line(row).encode())
        if n == ROWS // 2:
            chunks.append(b"\n")  # a blank line: skipped, not a record
    return b"".join(chunks)


if __name__ == "__main__":
    target = Path(__file__).with_name("contacts.csv")
    target.write_bytes(build())
    print(f"wrote {target}")
