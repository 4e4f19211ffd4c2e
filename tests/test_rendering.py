"""Templates: fallbacks, strict variables, the sandbox, overrides, SMS length."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxm_cli.errors import NotFound, TemplateError
from cxm_cli.rendering import (
    list_templates,
    load_template,
    render_message,
    render_text,
    template_names,
)
from cxm_cli.sms_encoding import GSM_BASIC, GSM_EXTENSION, sms_segments
from tests.support.fixtures import make_contact, update_settings

SHIPPED = {
    "new-lead-text",
    "new-lead-email",
    "nudge-text",
    "nudge-email",
    "still-interested",
    "appointment-reminder",
    "no-show-recovery",
}


def contact(**fields):
    base = {"id": 1, "first_name": "Ana", "custom": {}}
    return {**base, **fields}


def write_template(workspace, name: str, text: str) -> None:
    workspace.templates_dir.mkdir(exist_ok=True)
    (workspace.templates_dir / f"{name}.j2").write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- shipped


def test_every_shipped_template_is_listed(workspace):
    assert SHIPPED <= template_names(workspace)
    infos = {info.name: info for info in list_templates(workspace)}
    assert all(infos[name].error is None for name in SHIPPED)
    assert infos["new-lead-text"].channels == ["sms"]
    assert infos["new-lead-email"].subject
    assert infos["still-interested"].channels == ["sms", "email"]
    assert {infos[name].source for name in SHIPPED} == {"shipped"}


@pytest.mark.parametrize("first_name", [None, "", "   "])
def test_shipped_templates_read_well_without_a_first_name(workspace, db, first_name):
    person = contact(first_name=first_name)
    for name in sorted(SHIPPED):
        for channel in load_template(workspace, name).channels:
            rendered = render_message(workspace, db, name, person, channel=channel)
            assert rendered.body.startswith("Hi there"), (name, channel)
            assert "{{" not in rendered.body and " ," not in rendered.body
            if channel == "sms":
                assert rendered.sms.encoding == "GSM-7", name
                assert rendered.sms.segments == 1, name
            else:
                assert rendered.subject and "{" not in rendered.subject


def test_appointment_reminder_shows_the_time_in_the_contacts_zone(workspace, db):
    person = contact(timezone="America/Chicago")
    rendered = render_message(
        workspace,
        db,
        "appointment-reminder",
        person,
        channel="sms",
        extra={"starts_at": "2026-03-03T20:30:00Z"},
    )
    assert "on Tue, Mar 3 at 2:30 PM." in rendered.body

    without = render_message(
        workspace, db, "appointment-reminder", person, channel="sms"
    )
    assert "coming up soon." in without.body


def test_still_interested_differs_by_channel(workspace, db):
    sms = render_message(workspace, db, "still-interested", contact(), channel="sms")
    email = render_message(
        workspace, db, "still-interested", contact(), channel="email"
    )
    assert sms.subject is None and email.subject == "Are you still interested?"
    assert "The team at Bright Smile Dental" in email.body
    assert "The team" not in sms.body


# ---------------------------------------------------------------- fallbacks


def test_fallbacks_fill_missing_and_blank_values_only(workspace, db):
    write_template(
        workspace,
        "hello",
        "---\nchannels: [sms]\nfallbacks:\n  first_name: friend\n"
        "  company: your team\n  business.phone: our front desk\n---\n"
        "Hi {{ first_name }} at {{ company }}, call {{ business.phone }}.\n",
    )

    blank = render_message(
        workspace, db, "hello", contact(first_name=" "), channel="sms"
    )
    named = render_message(
        workspace, db, "hello", contact(first_name="Ana", company="Acme"), channel="sms"
    )

    assert blank.body == "Hi friend at your team, call our front desk."
    assert set(blank.fallbacks_used) == {"first_name", "company", "business.phone"}
    assert named.body == "Hi Ana at Acme, call our front desk."


def test_workspace_wide_fallbacks_apply_under_the_templates_own(workspace, db):
    workspace = update_settings(workspace, {"templates.fallbacks": {"pet": "your pet"}})
    write_template(
        workspace, "vet", "---\nchannels: [sms]\n---\n{{ pet }} is due a check-up.\n"
    )
    rendered = render_message(workspace, db, "vet", contact(), channel="sms")
    assert rendered.body == "your pet is due a check-up."


def test_missing_variable_without_fallback_names_template_and_variable(workspace, db):
    write_template(
        workspace, "survey", "---\nchannels: [sms]\n---\nHow was {{ service }}?\n"
    )

    with pytest.raises(TemplateError) as error:
        render_message(workspace, db, "survey", contact(id=12), channel="sms")

    assert "'survey'" in error.value.message
    assert "{{ service }}" in error.value.message
    assert "contact 12" in error.value.message
    assert "fallbacks" in (error.value.hint or "")


def test_missing_values_may_be_tested_in_conditions(workspace, db):
    write_template(
        workspace,
        "cond",
        "---\nchannels: [sms]\n---\n"
        "Hi {{ first_name }}{% if company %} from {{ company }}{% endif %}!"
        "{{ nickname | default('') }}\n",
    )
    assert render_message(workspace, db, "cond", contact(), channel="sms").body == (
        "Hi Ana!"
    )


def test_custom_fields_tags_and_event_data_are_available(workspace, db, clock):
    contact_id = make_contact(db, clock, custom={"service": "whitening", "pet": "Rex"})
    db["contact_tags"].insert(
        {"contact_id": contact_id, "tag": "vip", "created_at": "2026-01-01T00:00:00Z"}
    )
    write_template(
        workspace,
        "fields",
        "---\nchannels: [sms]\n---\n"
        "{{ service }} {{ custom.pet }} {{ tags | join(',') }} {{ extra.room }} "
        "{{ room }} {{ first_name }}\n",
    )
    from cxm_cli.contacts import get_contact

    rendered = render_message(
        workspace,
        db,
        "fields",
        get_contact(db, contact_id),
        channel="sms",
        extra={"room": "3", "service": "cleaning", "first_name": "Mallory"},
    )
    assert rendered.body == "cleaning Rex vip 3 3 Ana"


def test_render_text_uses_the_same_rules(workspace):
    assert render_text(workspace, "Hi {{ first_name }}!", contact(first_name="")) == (
        "Hi there!"
    )
    with pytest.raises(TemplateError, match="unit_number"):
        render_text(workspace, "Unit {{ unit_number }}", contact())


# ---------------------------------------------------------------- files


def test_workspace_template_overrides_shipped_one(workspace, db):
    before = render_message(workspace, db, "nudge-text", contact(), channel="sms")
    write_template(
        workspace,
        "nudge-text",
        "---\nchannels: [sms]\n---\nOur own nudge, {{ first_name }}.\n",
    )

    after = render_message(workspace, db, "nudge-text", contact(), channel="sms")

    assert before.body != after.body
    assert after.body == "Our own nudge, Ana."
    info = next(i for i in list_templates(workspace) if i.name == "nudge-text")
    assert info.source == "workspace"


def test_unknown_template_lists_the_folders_searched(workspace):
    with pytest.raises(NotFound) as error:
        load_template(workspace, "welcome-bak")
    assert "welcome-bak.j2" in error.value.message
    assert str(workspace.templates_dir) in error.value.message
    assert "templates/messages" in error.value.message


def test_syntax_error_names_file_and_line(workspace, db):
    write_template(
        workspace,
        "broken",
        "---\nchannels: [sms]\nfallbacks: {first_name: there}\n---\n"
        "Hi {{ first_name }},\nThanks {{ oops( }}\nBye\n",
    )

    with pytest.raises(TemplateError) as error:
        render_message(workspace, db, "broken", contact(), channel="sms")

    assert "broken.j2" in error.value.message
    assert "line 6" in error.value.message
    info = next(i for i in list_templates(workspace) if i.name == "broken")
    assert info.error is None  # the front matter is fine; the body fails on render


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("---\nchannels: [sms]\nfallback: {a: b}\n---\nHi\n", "unknown front matter"),
        ("---\nchannels: [fax]\n---\nHi\n", "unknown channel"),
        ("---\nchannels: [email]\n---\nHi\n", "needs a subject"),
        ("---\nchannels: [sms\n---\nHi\n", "line 2"),
        ("---\nchannels: [sms]\nHi\n", "never ends"),
    ],
)
def test_bad_front_matter_is_reported_with_the_file(workspace, text, problem):
    write_template(workspace, "bad", text)
    with pytest.raises(TemplateError, match=problem) as error:
        load_template(workspace, "bad")
    assert "bad.j2" in error.value.message
    info = next(i for i in list_templates(workspace) if i.name == "bad")
    assert problem in info.error


def test_template_used_on_a_channel_it_does_not_declare(workspace, db):
    with pytest.raises(TemplateError, match="is for sms, not email"):
        render_message(workspace, db, "nudge-text", contact(), channel="email")


def test_html_part_is_rendered_with_escaping(workspace, db):
    write_template(
        workspace,
        "promo",
        "---\nchannels: [email]\nsubject: Hello {{ first_name }}\n---\nPlain part\n",
    )
    (workspace.templates_dir / "promo.html.j2").write_text(
        "<p>Hi {{ first_name }}</p>", encoding="utf-8"
    )

    rendered = render_message(
        workspace, db, "promo", contact(first_name="<Ana & Co>"), channel="email"
    )

    assert rendered.body == "Plain part"
    assert rendered.subject == "Hello <Ana & Co>"
    assert rendered.html_body == "<p>Hi &lt;Ana &amp; Co&gt;</p>"


# ---------------------------------------------------------------- sandbox


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ business.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ tags.append.__self__.__class__ }}",
        "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
        "{{ first_name.format.__globals__ }}",
    ],
)
def test_sandbox_blocks_attribute_tricks(workspace, payload):
    with pytest.raises(TemplateError):
        render_text(workspace, payload, contact())


def test_sandbox_refuses_to_change_the_context(workspace):
    with pytest.raises(TemplateError, match="unsafe"):
        render_text(workspace, "{{ tags.append('x') }}{{ tags }}", contact())


# ---------------------------------------------------------------- SMS length


def test_gsm7_single_and_concatenated_sizes():
    assert sms_segments("a" * 160) == sms_segments("a" * 160)
    assert (sms_segments("a" * 160).encoding, sms_segments("a" * 160).segments) == (
        "GSM-7",
        1,
    )
    assert sms_segments("a" * 161).segments == 2
    assert sms_segments("a" * 306).segments == 2
    assert sms_segments("a" * 307).segments == 3
    assert sms_segments("").segments == 0


def test_extension_characters_count_twice_and_are_never_split():
    euros = sms_segments("€" * 80)
    assert (euros.encoding, euros.characters, euros.segments) == ("GSM-7", 160, 1)
    assert sms_segments("€" * 81).characters == 162
    assert sms_segments("[]{}^~|\\").characters == 16

    # 306 septets would fit two segments, but the escape pair cannot straddle.
    straddling = sms_segments("a" * 152 + "€" + "a" * 152)
    assert straddling.characters == 306
    assert straddling.segments == 3


def test_whole_basic_table_is_gsm7():
    text = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà\n\r"
    info = sms_segments(text)
    assert info.encoding == "GSM-7"
    assert info.characters == len(text)
    # Lower-case ç is not in GSM 03.38 (only Ç is), nor is the curly apostrophe.
    assert sms_segments("garçon").encoding == "UCS-2"
    assert sms_segments("we’ll").non_gsm == ("’",)


def test_ucs2_sizes_and_emoji():
    assert sms_segments("Hi 😀").encoding == "UCS-2"
    assert sms_segments("Hi 😀").characters == 5
    assert sms_segments("é" * 69 + "ç").segments == 1  # 70 units
    assert sms_segments("ç" * 71).segments == 2
    assert sms_segments("ç" * 134).segments == 2
    assert sms_segments("ç" * 135).segments == 3
    # A surrogate pair does not straddle: 66 + 2 fits 67? No, it moves over.
    assert sms_segments("ç" * 66 + "😀" + "ç" * 66).segments == 3


@given(st.text(alphabet=sorted(GSM_BASIC | GSM_EXTENSION), max_size=700))
def test_gsm7_counts_match_the_tables(text):
    info = sms_segments(text)
    assert info.encoding == "GSM-7"
    assert info.characters == len(text) + sum(c in GSM_EXTENSION for c in text)
    if info.characters <= 160:
        assert info.segments == (1 if text else 0)
    else:
        assert info.segments >= -(-info.characters // 153)
        assert info.segments <= -(-info.characters // 152)


def test_missing_key_of_a_mapping_is_named_with_its_parent(workspace, db):
    write_template(
        workspace, "call-us", "---\nchannels: [sms]\n---\nCall {{ business.phone }}.\n"
    )
    with pytest.raises(TemplateError, match=r"\{\{ business\.phone \}\}"):
        render_message(workspace, db, "call-us", contact(), channel="sms")

    workspace = update_settings(workspace, {"business.phone": "+15125550100"})
    rendered = render_message(workspace, db, "call-us", contact(), channel="sms")
    assert rendered.body == "Call +15125550100."


# ---------------------------------------------------------------- commands


def test_cli_lists_templates_as_json(cli, workspace):
    write_template(workspace, "nudge-text", "---\nchannels: [sms]\n---\nMine.\n")

    result = cli("templates", "list", "--json")

    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in result.json()}
    assert SHIPPED <= set(rows)
    assert rows["nudge-text"]["source"] == "workspace"
    assert rows["new-lead-email"]["channels"] == ["email"]
    assert rows["new-lead-email"]["subject"].startswith("Thanks for getting in touch")


def test_cli_renders_a_text_with_its_encoding(cli, db, clock):
    make_contact(db, clock, first_name="Gus", email="gus@example.com")

    result = cli("templates", "render", "new-lead-text", "--contact", "gus@example.com")

    assert result.exit_code == 0, result.stderr
    assert "To: +15125550101" in result.stdout
    assert "Encoding: GSM-7" in result.stdout and "1 segment" in result.stdout
    assert "Hi Gus, thanks for reaching out to Bright Smile Dental!" in result.stdout


def test_cli_renders_an_email_as_json(cli, db, clock):
    contact_id = make_contact(db, clock, first_name=None, email="hal@example.com")

    result = cli(
        "templates",
        "render",
        "still-interested",
        "--contact",
        str(contact_id),
        "--channel",
        "email",
        "--json",
    )

    assert result.exit_code == 0, result.stderr
    preview = result.json()
    assert preview["to"] == "hal@example.com"
    assert preview["subject"] == "Are you still interested?"
    assert preview["body"].startswith("Hi there,")
    assert preview["sms"] is None
    assert any("fallback used for first_name" in w for w in preview["warnings"])


def test_cli_warns_about_long_or_ucs2_texts(cli, workspace, db, clock):
    write_template(
        workspace, "long", "---\nchannels: [sms]\n---\n" + "Smile 😀 " * 40 + "\n"
    )
    make_contact(db, clock)

    result = cli("templates", "render", "long", "--contact", "ana@example.com")

    assert result.exit_code == 0, result.stderr
    assert "Encoding: UCS-2" in result.stdout
    assert "sms_segment_warning" in result.stderr
    assert "UCS-2" in result.stderr


def test_cli_warns_when_the_contact_would_be_refused(cli, db, clock):
    from cxm_cli.contacts import set_consent

    contact_id = make_contact(db, clock)
    set_consent(db, contact_id, "sms", "opted_out", clock=clock, source="test")

    result = cli("templates", "render", "nudge-text", "--contact", str(contact_id))

    assert result.exit_code == 0
    assert "would not be sent" in result.stderr and "opted out" in result.stderr


def test_cli_missing_variable_exits_non_zero_naming_it(cli, workspace, db, clock):
    write_template(
        workspace, "survey", "---\nchannels: [sms]\n---\nHow was {{ service }}?\n"
    )
    make_contact(db, clock)

    failed = cli("templates", "render", "survey", "--contact", "ana@example.com")
    passed = cli(
        "templates",
        "render",
        "survey",
        "--contact",
        "ana@example.com",
        "--data",
        "service=your cleaning",
    )

    assert failed.exit_code == 1
    assert "survey" in failed.stderr and "service" in failed.stderr
    assert failed.stdout == ""
    assert passed.exit_code == 0 and "How was your cleaning?" in passed.stdout


def test_cli_copy_puts_an_editable_override_in_the_workspace(cli, workspace):
    result = cli("templates", "copy", "nudge-text")

    assert result.exit_code == 0, result.stderr
    copied = workspace.templates_dir / "nudge-text.j2"
    assert copied.is_file()
    assert cli("templates", "copy", "nudge-text").exit_code == 1
    assert cli("templates", "copy", "no-such").exit_code == 1


def test_partials_can_be_included_but_not_escaped_from(workspace, db):
    write_template(
        workspace,
        "signed",
        '---\nchannels: [sms]\n---\nSee you soon.\n{% include "_signature.j2" %}\n',
    )
    (workspace.templates_dir / "_signature.j2").write_text("-- {{ business.name }}")
    write_template(
        workspace,
        "sneaky",
        '---\nchannels: [sms]\n---\n{% include "_../../cxm.toml" %}\n',
    )

    rendered = render_message(workspace, db, "signed", contact(), channel="sms")

    assert rendered.body == "See you soon.\n-- Bright Smile Dental"
    assert "_signature" not in template_names(workspace)
    with pytest.raises(TemplateError, match="does not exist"):
        render_message(workspace, db, "sneaky", contact(), channel="sms")


def test_a_fallback_the_template_does_not_read_is_not_reported(
    cli, workspace, db, clock
):
    # The workspace's fallbacks fill every context; a template that never
    # reads first_name has not "used" its fallback.
    write_template(
        workspace,
        "no-name",
        "---\nchannels: [sms]\n---\nOur office is open until 6 today.\n",
    )
    contact_id = make_contact(db, clock, first_name=None)

    result = cli(
        "templates", "render", "no-name", "--contact", str(contact_id), "--json"
    )

    assert result.exit_code == 0, result.stderr
    assert not any("fallback used" in w for w in result.json()["warnings"])
