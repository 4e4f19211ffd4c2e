"""Normalising single values: phones, emails, names, dates, money."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from cxm_cli.importing.values import (
    DateOrderVote,
    clean_cell,
    country_code,
    domain_typo,
    fold_name,
    is_variant_of,
    name_quality,
    normalise_email,
    normalise_phone,
    opt_out_flag,
    parse_date,
    parse_money,
    repair_mojibake,
    split_full_name,
)


@pytest.mark.parametrize(
    ("raw", "region", "e164", "extension"),
    [
        ("+1 312-555-0142", "US", "+13125550142", None),
        ("3125550142", "US", "+13125550142", None),
        ("(312) 555-0142 (cell)", "US", "+13125550142", None),
        ("'+13125550115", "US", "+13125550115", None),
        ("p:+17735550152", "US", "+17735550152", None),
        ("+1 (202) 555-0133 x204", "US", "+12025550133", "204"),
        ("(312) 555-0177 ext. 12", "US", "+13125550177", "12"),
        ("+1 919 555 0144 ext 3", "US", "+19195550144", "3"),
        ("0044 20 7946 0812", "US", "+442079460812", None),
        ("+44 (0)20 7946 0812", "US", "+442079460812", None),
        ("0049 30 901820", "DE", "+4930901820", None),
        ("030 901820", "DE", "+4930901820", None),
        ("61491570156", "US", "+61491570156", None),
    ],
)
def test_phones_normalise_to_e164(raw, region, e164, extension):
    result = normalise_phone(raw, region)
    assert (result.e164, result.extension) == (e164, extension)


def test_a_foreign_number_missing_its_plus_is_never_stored_as_plus_one():
    result = normalise_phone("61491570156", "US")
    assert result.e164 == "+61491570156" and "international" in result.note


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("1.31255E+10", "scientific notation"),
        ("4,42079E+11", "scientific notation"),
        ("000-000-0000", "placeholder"),
        ("n/a", "placeholder"),
        ("555-0142", "no area code"),
        ("12345", "no area code"),
        ("+1 999 555 0100", "not a valid phone number"),
    ],
)
def test_phones_that_are_not_identifiers(raw, problem):
    result = normalise_phone(raw, "US")
    assert result.e164 is None and problem in result.problem


def test_scientific_notation_is_marked_damaged():
    assert normalise_phone("1.5550123E+10", "US").damaged


@pytest.mark.parametrize(
    ("raw", "email"),
    [
        (" Renata.Okafor@Example.com ", "renata.okafor@example.com"),
        ("<ana@example.com>", "ana@example.com"),
        ("mailto:Ana@Example.com", "ana@example.com"),
        ("lena.vogel+offers@example.com", "lena.vogel+offers@example.com"),
    ],
)
def test_emails_fold_case_and_space_but_keep_tags_and_dots(raw, email):
    assert normalise_email(raw).email == email


@pytest.mark.parametrize(
    "raw",
    [
        "n/a",
        "test@test",
        "asdf@asdf",
        "x(at)y.com",
        "a@@b.org",
        "name@examplecom",
        "<test lead: dummy data for email>",
        "/o=ExchangeLabs/ou=Exchange Administrative Group/cn=Recipients/cn=x",
        "someone@example.test",
    ],
)
def test_junk_is_not_an_email(raw):
    result = normalise_email(raw)
    assert result.email is None and result.problem


def test_typo_domains_are_reported_not_changed():
    result = normalise_email("ava@gmial.com")
    assert result.email == "ava@gmial.com" and result.typo_hint == "gmail.com"
    assert domain_typo("hotmail.con") == "hotmail.com"
    assert domain_typo("example.com") is None


_local = st.text(
    alphabet=st.sampled_from(list("abcXYZ019._+-'!#")), min_size=1, max_size=12
)
_domain = st.sampled_from(
    [
        "example.com",
        "Example.ORG",
        "mail.example.net",
        "a-b.example.co.uk",
        "x.test",
        "localhost",
        "bad_domain.com",
        "-bad.com",
        "examplecom",
    ]
)


@settings(max_examples=300, deadline=None)
@given(_local, _domain)
def test_fast_email_path_agrees_with_email_validator(local, domain):
    """The cached fast path never accepts what email-validator rejects."""
    raw = f"{local}@{domain}"
    try:
        expected = validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        expected = None
    assert normalise_email(raw).email == expected


def test_clean_cell_strips_excel_guard_only_before_numbers_and_formulas():
    assert clean_cell("'60610") == "60610"
    assert clean_cell("'+13125550115") == "+13125550115"
    assert clean_cell("'=1+1") == "=1+1"
    assert clean_cell("'Tis the season") == "'Tis the season"


def test_name_variants_and_quality():
    assert is_variant_of("Renata Okafor", "RENATA OKAFOR")
    assert is_variant_of("Carlos Peña", "Carlos Pena")
    assert is_variant_of("Carlos Peña", "Carlos PeÃ±a")
    assert not is_variant_of("Keisha Moore", "Keisha Moore-Ali")
    assert name_quality("Renata Okafor") > name_quality("RENATA OKAFOR")
    assert name_quality("Carlos Peña") > name_quality("Carlos Pena")
    assert name_quality("Carlos Pena") > name_quality("Carlos PeÃ±a")
    assert repair_mojibake("Carlos PeÃ±a") == "Carlos Peña"
    assert repair_mojibake("Ägypten") == "Ägypten"
    assert fold_name("  Zoë  FERRAND ") == "zoe ferrand"


@pytest.mark.parametrize(
    ("full", "first", "last"),
    [
        ("Rosa Martinez", "Rosa", "Martinez"),
        ("Rosa M.", "Rosa", "M."),
        ("dave", "dave", ""),
        ("Okafor, Renata", "Renata", "Okafor"),
        ("Dr. Lee", "", "Lee"),
        ("Mary Ann Smith Jr.", "Mary Ann", "Smith Jr."),
        ("Bob, Jr", "Bob", "Jr"),
        ("Smith, John, Jr.", "John", "Smith Jr."),
        ("Smith, John Paul", "John Paul", "Smith"),
        ("Smith Jr., John", "John", "Smith Jr."),
        ("John Smith, MD, PhD", "John", "Smith MD PhD"),
        ("Dr. Jane Doe Ph.D.", "Jane", "Doe Ph.D."),
        ("John Smith III", "John", "Smith III"),
        ("Mary Ann Van Der Berg", "Mary Ann", "Van Der Berg"),
        ("Van Der Berg, Mary Ann", "Mary Ann", "Van Der Berg"),
        ("Ludwig van Beethoven", "Ludwig", "van Beethoven"),
        ("Juan de la Cruz", "Juan", "de la Cruz"),
        ("Ana del Río", "Ana", "del Río"),
        ("Leonardo da Vinci", "Leonardo", "da Vinci"),
        ("Anna di Marco Esq.", "Anna", "di Marco Esq."),
        ("Anne Le Blanc", "Anne", "Le Blanc"),
        ("Khalid bin Salman", "Khalid", "bin Salman"),
        ("Omar al Rashid", "Omar", "al Rashid"),
        ("Mary St. John", "Mary", "St. John"),
        ("La Toya Jackson", "La Toya", "Jackson"),
        ("Smith,", "Smith", ""),
    ],
)
def test_full_names_split(full, first, last):
    assert split_full_name(full) == (first, last)
    assert not first.endswith(",") and not last.endswith(",")


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("2024-03-05", "MDY", "2024-03-05"),
        ("--04-17", "MDY", "--04-17"),
        ("04/17", "MDY", "--04-17"),
        ("4/17/1990", "MDY", "1990-04-17"),
        ("17/4/1990", "DMY", "1990-04-17"),
        ("31.12.1980", "DMY", "1980-12-31"),
        ("December 2, 2020 9:00 am", "MDY", "2020-12-02T09:00:00"),
        ("Jul 22 2026 02:09 PM", "MDY", "2026-07-22T14:09:00"),
        ("2024-03-05T09:14:27-06:00", "MDY", "2024-03-05T09:14:27-06:00"),
        ("0/0/00", "MDY", None),
    ],
)
def test_dates_parse(text, order, expected):
    value = parse_date(text, order=order)
    assert value.problem is None and value.text() == expected


@pytest.mark.parametrize(
    ("text", "order", "problem"),
    [
        ("2024-02-30", "MDY", "not a real date"),
        ("31/02/1988", "DMY", "not a real date"),
        ("25/04/2024", "MDY", "does not fit the month/day order"),
        ("--02-30", "MDY", "not a real day"),
    ],
)
def test_impossible_or_contradicting_dates_are_problems(text, order, problem):
    assert problem in parse_date(text, order=order).problem


def test_date_order_vote():
    vote = DateOrderVote()
    for value in ("03/04/2024", "25/04/2024"):
        vote.feed(value)
    assert vote.decide("US") == ("DMY", None)
    unsettled = DateOrderVote()
    unsettled.feed("03/04/2024")
    order, note = unsettled.decide("GB")
    assert order == "DMY" and "day/month" in note


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("$1,204.50", 1204.5),
        ("1.204,50 €", 1204.5),
        ("€45", 45.0),
        ("1,5", 1.5),
        ("12,000", 12000.0),
        ("-$3.00", -3.0),
        ("free", None),
    ],
)
def test_money(text, amount):
    assert parse_money(text) == amount


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("United Kingdom", "GB"),
        ("U.K.", "GB"),
        ("uk", "GB"),
        ("Great Britain", "GB"),
        ("England", "GB"),
        ("Scotland", "GB"),
        ("Wales", "GB"),
        ("Northern Ireland", "GB"),
        ("South Korea", "KR"),
        ("Czechia", "CZ"),
        ("Czech Republic", "CZ"),
        ("Italia", "IT"),
        ("España", "ES"),
        ("Espana", "ES"),
        ("Österreich", "AT"),
        ("Deutschland", "DE"),
        ("U.S.A.", "US"),
        ("U.S.", "US"),
        ("United States", "US"),
        ("the Netherlands", "NL"),
        ("Nederland", "NL"),
        ("Schweiz", "CH"),
        ("Brasil", "BR"),
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Viet Nam", "VN"),
        ("DEU", "DE"),
        (" de ", "DE"),
        ("Ireland", "IE"),
    ],
)
def test_country_names_english_native_and_abbreviated(value, code):
    assert country_code(value) == code


@pytest.mark.parametrize("value", ["Narnia", "Atlantis", "XX", "", "EU"])
def test_unknown_countries_are_not_guessed(value):
    assert country_code(value) is None


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        ("Opted Out", True),
        ("Unsubscribed", True),
        ("unsubscribe", True),
        ("Opt-out", True),
        ("OPTED_OUT", True),
        ("STOP", True),
        ("true", True),
        ("1", True),
        ("x", True),
        ("Y", True),
        ("yes", True),
        ("no", False),
        ("false", False),
        ("0", False),
        ("Subscribed", False),
        ("opted in", False),
        ("Opt-In", False),
        ("", False),
        ("2024-01-02", None),  # a date: read as the time of the opt-out
        ("maybe later", None),  # unknown: the caller treats it as an opt-out
    ],
)
def test_opt_out_words(value, flag):
    assert opt_out_flag(value) is flag


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Ana\x00 Gómez", "Ana Gómez"),
        ("\u202eRalph", "Ralph"),  # a right-to-left override
        ("\ufeffFirst", "First"),  # a byte-order mark inside the file
        ("Nota\x1b[31m", "Nota[31m"),  # a terminal escape
        ("שלום", "שלום"),  # right-to-left text itself stays
        ("👨\u200d👩", "👨\u200d👩"),  # and so do zero-width joiners
        ("line one\nline two", "line one\nline two"),
    ],
)
def test_cells_lose_control_and_bidi_override_characters(raw, clean):
    assert clean_cell(raw) == clean


def test_an_import_stores_names_without_control_characters(cli, db):
    data = "first_name,last_name,email\nAna\x00,Gómez\u202e,ana.g@example.com\n"
    result = cli("leads", "import", "-", input=data)
    assert result.exit_code == 0, result.stderr
    [row] = db.query("SELECT first_name, last_name FROM contacts")
    assert (row["first_name"], row["last_name"]) == ("Ana", "Gómez")
