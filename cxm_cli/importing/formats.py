"""Known export layouts and how their columns map to contact fields.

Each layout is recognised from marker columns in its header row, so real
exports import without a mapping session. Header matching ignores case,
spacing and punctuation (``E-mail Address`` = ``EMAIL ADDRESS`` =
``email_address``), which also covers Salesforce's upper-cased headers.
A column no layout or alias knows is kept as a custom field, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cxm_cli.errors import InputError
from cxm_cli.importing.consent_columns import consent_role
from cxm_cli.importing.values import phone_kind

# A role says what a column holds: (field, argument). Fields are documented in
# ``FIELDS``; the argument is a slot number, a phone kind or a style.
Role = tuple[str, object]

FIELDS = {
    "first_name": "given name",
    "middle_name": "middle name(s)",
    "last_name": "family name",
    "full_name": "whole name, split into first and last",
    "company": "company or organisation",
    "email": "email address(es)",
    "phone": "phone number(s); kind from the column (mobile, home, work, fax)",
    "tags": "tags / labels / groups",
    "source": "where the lead came from",
    "created": "when the lead was created or submitted",
    "birthday": "birthday",
    "notes": "notes",
    "region": "state or province",
    "country": "country (helps read national phone numbers)",
    "timezone": "IANA time zone",
    "email_opt_out": "yes or a date = opted out of email",
    "sms_opt_out": "yes or a date = opted out of SMS (and voicemail drops)",
    "opt_out": "yes or a date = opted out of email and SMS",
    "email_opt_in": "yes = agreed to email marketing; no = opted out of email",
    "sms_opt_in": "yes = agreed to SMS marketing; no = opted out of SMS",
    "opt_in": "yes = agreed to email and SMS marketing; no = opted out of both",
    "custom": "kept as a custom field (the default for unknown columns)",
    "ignore": "not imported",
}

# Fields a user may name in --map COLUMN=FIELD.
MAPPABLE_FIELDS = sorted(FIELDS)


def compact(header: str) -> str:
    """The comparison key of a header: letters and digits only, lower case."""
    text = header.replace("\ufeff", "").replace("\x00", "").strip().lower()
    key = "".join(ch for ch in text if ch.isalnum())
    return key or text


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    markers: tuple[str, ...]
    min_markers: int
    # How many markers no ordinary contact list has (see ``distinctive_keys``)
    # the header must hold as well, so plain name/email/phone columns never
    # pick a vendor's layout (its source name and date zone).
    min_distinctive: int = 2
    # A column the header must have, whatever else matches.
    required: str | None = None
    columns: dict[str, Role] = field(default_factory=dict)
    patterns: tuple[tuple[re.Pattern, str], ...] = ()
    # "form.submitted" / "appointment.booked": one timeline event per record.
    event: str | None = None
    # Zone of date-times written without an offset; None = the workspace's.
    naive_zone: str | None = None
    # Map question-like headers ("What's your email?") by the words they hold.
    questions: bool = False
    note: str = ""

    def marker_keys(self) -> set[str]:
        return {compact(m) for m in self.markers}

    def distinctive_keys(self) -> set[str]:
        """Markers that say this vendor: not a header any contact list may have."""
        return self.marker_keys() - set(GENERIC) - PLAIN_HEADERS


def _columns(spec: dict[str, Role]) -> dict[str, Role]:
    return {compact(header): role for header, role in spec.items()}


def _event_fields(names: str, sep: str = " ") -> dict[str, Role]:
    """Columns describing one record (an ad, a booking), kept on its event."""
    return {name.strip(): ("event_field", None) for name in names.split(sep)}


def _patterns(*pairs: tuple[str, str]) -> tuple[tuple[re.Pattern, str], ...]:
    return tuple((re.compile(f"^{regex}$"), field_name) for regex, field_name in pairs)


# Aliases any layout understands (compared with ``compact``).
GENERIC = _columns(
    {
        "Email": ("email", None),
        "E-mail": ("email", None),
        "Email Address": ("email", None),
        "Mail": ("email", None),
        "Primary Email": ("email", None),
        "Work Email": ("email", None),
        "Personal Email": ("email", None),
        "Emails": ("email", None),
        "Phone": ("phone", None),
        "Phones": ("phone", None),
        "Phone Number": ("phone", None),
        "Telephone": ("phone", None),
        "Tel": ("phone", None),
        "Primary Phone": ("phone", None),
        "Mobile": ("phone", "mobile"),
        "Mobile Phone": ("phone", "mobile"),
        "Mobile Number": ("phone", "mobile"),
        "Cell": ("phone", "mobile"),
        "Cell Phone": ("phone", "mobile"),
        "WhatsApp": ("phone", "mobile"),
        "Home Phone": ("phone", "home"),
        "Work Phone": ("phone", "work"),
        "Business Phone": ("phone", "work"),
        "Office Phone": ("phone", "work"),
        "Fax": ("phone", "fax"),
        "Telefon": ("phone", None),
        "Telefonnummer": ("phone", None),
        "Handy": ("phone", "mobile"),
        "Mobil": ("phone", "mobile"),
        "Téléphone": ("phone", None),
        "Portable": ("phone", "mobile"),
        "Teléfono": ("phone", None),
        "Telefono": ("phone", None),
        "Cellulare": ("phone", "mobile"),
        "Móvil": ("phone", "mobile"),
        "Courriel": ("email", None),
        "Correo": ("email", None),
        "Correo electrónico": ("email", None),
        "First Name": ("first_name", None),
        "Firstname": ("first_name", None),
        "First": ("first_name", None),
        "Given Name": ("first_name", None),
        "Forename": ("first_name", None),
        "Vorname": ("first_name", None),
        "Prénom": ("first_name", None),
        "Middle Name": ("middle_name", None),
        "Last Name": ("last_name", None),
        "Lastname": ("last_name", None),
        "Last": ("last_name", None),
        "Surname": ("last_name", None),
        "Family Name": ("last_name", None),
        "Nachname": ("last_name", None),
        "Nom": ("last_name", None),
        "Name": ("full_name", None),
        "Full Name": ("full_name", None),
        "Contact Name": ("full_name", None),
        "Customer Name": ("full_name", None),
        "Client Name": ("full_name", None),
        "Your Name": ("full_name", None),
        "Company": ("company", None),
        "Company Name": ("company", None),
        "Organization": ("company", None),
        "Organisation": ("company", None),
        "Organization Name": ("company", None),
        "Business Name": ("company", None),
        "Firma": ("company", None),
        "Source": ("source", None),
        "Lead Source": ("source", None),
        "Tags": ("tags", "auto"),
        "Tag": ("tags", "auto"),
        "Labels": ("tags", "auto"),
        "Groups": ("tags", "auto"),
        "Categories": ("tags", "auto"),
        "Created": ("created", None),
        "Created At": ("created", None),
        "Created Time": ("created", None),
        "Created Date": ("created", None),
        "Create Date": ("created", None),
        "Date Created": ("created", None),
        "Created On": ("created", None),
        "Date Added": ("created", None),
        "Signup Date": ("created", None),
        "Submitted At": ("created", None),
        "Submission Date": ("created", None),
        "Birthday": ("birthday", None),
        "Date of Birth": ("birthday", None),
        "DOB": ("birthday", None),
        "Birth Date": ("birthday", None),
        "Geburtstag": ("birthday", None),
        "Geburtsdatum": ("birthday", None),
        "Date de naissance": ("birthday", None),
        "Fecha de nacimiento": ("birthday", None),
        "Notes": ("notes", None),
        "Note": ("notes", None),
        "Comments": ("notes", None),
        "Memo": ("notes", None),
        "State": ("region", None),
        "Province": ("region", None),
        "State/Province": ("region", None),
        "Region": ("region", None),
        "Country": ("country", None),
        "Country Code": ("country", None),
        "Timezone": ("timezone", None),
        "Time Zone": ("timezone", None),
        "Email Opt Out": ("email_opt_out", None),
        "Email Opted Out": ("email_opt_out", None),
        "Unsubscribed": ("email_opt_out", None),
        "Email Unsubscribed": ("email_opt_out", None),
        "Do Not Email": ("email_opt_out", None),
        "SMS Opt Out": ("sms_opt_out", None),
        "SMS Opted Out": ("sms_opt_out", None),
        "Text Opt Out": ("sms_opt_out", None),
        "Texting Opt Out": ("sms_opt_out", None),
        "Do Not Text": ("sms_opt_out", None),
        "Do Not SMS": ("sms_opt_out", None),
        # Calls: cxm places none, but a voicemail drop is one and is governed
        # by SMS consent (texts count as calls under do-not-call rules too).
        "Do Not Call": ("sms_opt_out", None),
        "Opt Out": ("opt_out", None),
        "Opted Out": ("opt_out", None),
        "Do Not Contact": ("opt_out", None),
    }
)

# Headers found in all sorts of lists besides those GENERIC maps; as markers
# they never decide a layout on their own.
PLAIN_HEADERS = {
    compact(header)
    for header in (
        "ID",
        "Status",
        "Type",
        "Title",
        "Address",
        "Address1",
        "Street",
        "City",
        "Zip",
        "Zip Code",
        "Postal Code",
        "Website",
        "Custom",
    )
}

GOOGLE_PATTERNS = _patterns(
    (r"email(\d+)value", "email"),
    (r"email(\d+)(?:label|type)", "email_label"),
    (r"phone(\d+)value", "phone"),
    (r"phone(\d+)(?:label|type)", "phone_label"),
)

OUTLOOK_COLUMNS = _columns(
    {
        "First Name": ("first_name", None),
        "Middle Name": ("middle_name", None),
        "Last Name": ("last_name", None),
        "Company": ("company", None),
        "E-mail Address": ("email", None),
        "E-mail 2 Address": ("email", None),
        "E-mail 3 Address": ("email", None),
        "Primary Phone": ("phone", None),
        "Mobile Phone": ("phone", "mobile"),
        "Car Phone": ("phone", "mobile"),
        "Home Phone": ("phone", "home"),
        "Home Phone 2": ("phone", "home"),
        "Business Phone": ("phone", "work"),
        "Business Phone 2": ("phone", "work"),
        "Company Main Phone": ("phone", "work"),
        "Assistant's Phone": ("phone", "work"),
        "Other Phone": ("phone", "other"),
        "Callback": ("phone", "other"),
        "Radio Phone": ("phone", "other"),
        "ISDN": ("phone", "other"),
        "Pager": ("phone", "other"),
        "TTY/TDD Phone": ("phone", "other"),
        "Telex": ("phone", "other"),
        "Business Fax": ("phone", "fax"),
        "Home Fax": ("phone", "fax"),
        "Other Fax": ("phone", "fax"),
        "Birthday": ("birthday", None),
        "Notes": ("notes", None),
        "Categories": ("tags", "semicolon"),
        "Business State": ("region", None),
        "Home State": ("region", None),
        "Business Country/Region": ("country", None),
        "Home Country/Region": ("country", None),
        "E-mail Type": ("ignore", None),
        # Outlook writes these defaults on every contact; only others are kept.
        "Gender": ("custom_unless", "Unspecified"),
        "Priority": ("custom_unless", "Normal"),
        "Sensitivity": ("custom_unless", "Normal"),
        "Private": ("custom_unless", "False"),
        # German Outlook
        "Vorname": ("first_name", None),
        "Weitere Vornamen": ("middle_name", None),
        "Nachname": ("last_name", None),
        "Firma": ("company", None),
        "E-Mail-Adresse": ("email", None),
        "E-Mail 2: Adresse": ("email", None),
        "E-Mail 3: Adresse": ("email", None),
        "Mobiltelefon": ("phone", "mobile"),
        "Telefon geschäftlich": ("phone", "work"),
        "Telefon privat": ("phone", "home"),
        "Fax geschäftlich": ("phone", "fax"),
        "Geburtstag": ("birthday", None),
        "Kategorien": ("tags", "semicolon"),
        "Notizen": ("notes", None),
    }
)

LAYOUTS: list[Layout] = [
    Layout(
        name="google",
        title="Google Contacts (Google CSV, 2023+)",
        markers=(
            "File As",
            "Organization Name",
            "Labels",
            "E-mail 1 - Label",
            "E-mail 1 - Value",
            "Phone 1 - Label",
            "Phone 1 - Value",
            "Phonetic First Name",
            "Name Prefix",
        ),
        min_markers=3,
        columns=_columns(
            {
                "Labels": ("tags", "google"),
                "Organization Name": ("company", None),
                "Address 1 - Region": ("region", None),
                "Address 1 - Country": ("country", None),
            }
        ),
        patterns=GOOGLE_PATTERNS,
    ),
    Layout(
        name="google-legacy",
        title="Google Contacts (legacy Gmail CSV, often UTF-16)",
        markers=(
            "Given Name",
            "Family Name",
            "Additional Name",
            "Yomi Name",
            "Group Membership",
            "E-mail 1 - Type",
            "E-mail 1 - Value",
            "Organization 1 - Name",
        ),
        min_markers=3,
        columns=_columns(
            {
                "Name": ("full_name", None),
                "Given Name": ("first_name", None),
                "Additional Name": ("middle_name", None),
                "Family Name": ("last_name", None),
                "Group Membership": ("tags", "google"),
                "Organization 1 - Name": ("company", None),
            }
        ),
        patterns=GOOGLE_PATTERNS,
    ),
    Layout(
        name="outlook",
        title="Outlook desktop (Import/Export wizard, Windows-1252)",
        markers=(
            "Business Street",
            "Home Street",
            "E-mail Type",
            "E-mail Display Name",
            "Assistant's Phone",
            "Business Fax",
            "Mobile Phone",
            "E-mail Address",
            "Company Main Phone",
            "Business Street 2",
        ),
        min_markers=4,
        columns=OUTLOOK_COLUMNS,
    ),
    Layout(
        name="outlook-com",
        title="Outlook on the web / outlook.com",
        markers=(
            "Given Yomi",
            "Surname Yomi",
            "IMAddress",
            "Personal Web Page",
            "Company Yomi",
            "E-mail Address",
            "Mobile Phone",
            "Business Fax",
        ),
        min_markers=4,
        columns=OUTLOOK_COLUMNS,
    ),
    Layout(
        name="outlook-google",
        title="Google's 'Outlook CSV' export option",
        markers=(
            "E-mail Address",
            "E-mail 2 Address",
            "Primary Phone",
            "Categories",
            "Web Page",
            "Anniversary",
        ),
        min_markers=5,
        columns=OUTLOOK_COLUMNS,
    ),
    Layout(
        name="outlook-de",
        title="Outlook desktop, German labels",
        markers=(
            "Vorname",
            "Nachname",
            "E-Mail-Adresse",
            "Mobiltelefon",
            "Telefon geschäftlich",
            "Kategorien",
        ),
        min_markers=3,
        columns=OUTLOOK_COLUMNS,
    ),
    Layout(
        name="mailchimp",
        title="Mailchimp audience (subscribed / unsubscribed / cleaned)",
        markers=(
            "Email Address",
            "MEMBER_RATING",
            "OPTIN_TIME",
            "CONFIRM_TIME",
            "LEID",
            "EUID",
            "LAST_CHANGED",
            "GMTOFF",
        ),
        min_markers=4,
        columns=_columns(
            {
                "Email Address": ("email", None),
                "Phone Number": ("phone", None),
                "TAGS": ("tags", "quoted"),
                "TIMEZONE": ("timezone", None),
                "CC": ("country", None),
                "REGION": ("region", None),
                "OPTIN_TIME": ("optin_time", None),
                "CONFIRM_TIME": ("optin_time", None),
                "UNSUB_TIME": ("unsub_time", None),
                "CLEAN_TIME": ("clean_time", None),
                "NOTES": ("notes", None),
            }
        ),
        # Limitation: Mailchimp writes times without an offset; they are read
        # as UTC, which is what its exports are believed to use.
        naive_zone="UTC",
        note="unsubscribed file: every row opted out of email; cleaned: bouncing",
    ),
    Layout(
        name="hubspot",
        title="HubSpot contacts export",
        markers=(
            "Record ID",
            "Contact owner",
            "Primary Associated Company ID",
            "Last Activity Date",
            "Lead Status",
            "Marketing contact status",
            "Create Date",
            "Associated Company",
        ),
        min_markers=3,
        columns=_columns(
            {
                "Record ID": ("external_id", None),
                "Create Date": ("created", None),
                "Associated Company": ("company", None),
                "Mobile Phone Number": ("phone", "mobile"),
            }
        ),
    ),
    Layout(
        name="gohighlevel",
        title="GoHighLevel / LeadConnector contacts export",
        markers=("Contact Id", "Created", "Last Activity", "Tags", "Opportunities"),
        min_markers=4,
        columns=_columns(
            {
                "Contact Id": ("external_id", None),
                "Created": ("created", None),
                "Tags": ("tags", "comma"),
            }
        ),
    ),
    Layout(
        name="meta-lead-ads",
        title="Facebook/Instagram Lead Ads download (UTF-16, tab)",
        markers=(
            "id",
            "created_time",
            "ad_id",
            "ad_name",
            "adset_id",
            "adset_name",
            "campaign_id",
            "campaign_name",
            "form_id",
            "form_name",
            "is_organic",
            "platform",
        ),
        min_markers=5,
        columns=_columns(
            {
                "id": ("external_id", None),
                "created_time": ("created", None),
                "full_name": ("full_name", None),
                "first_name": ("first_name", None),
                "last_name": ("last_name", None),
                "phone_number": ("phone", None),
                "email": ("email", None),
                "form_name": ("form", None),
                **_event_fields(
                    "ad_id ad_name adset_id adset_name campaign_id campaign_name"
                    " form_id is_organic platform lead_status"
                ),
            }
        ),
        event="form.submitted",
    ),
    Layout(
        name="square",
        title="Square Customer Directory export",
        markers=(
            "Reference ID",
            "Square Customer ID",
            "Creation Source",
            "First Visit",
            "Last Visit",
            "Transaction Count",
            "Lifetime Spend",
            "Email Subscription Status",
            "Instant Profile",
        ),
        min_markers=4,
        columns=_columns(
            {
                "Square Customer ID": ("external_id", None),
                "Email Address": ("email", None),
                "Phone Number": ("phone", None),
                "Surname": ("last_name", None),
                "Company Name": ("company", None),
                "Memo": ("notes", None),
                "Lifetime Spend": ("money", None),
                "Email Subscription Status": ("email_status", None),
            }
        ),
    ),
    Layout(
        name="shopify",
        title="Shopify customers export (2023+)",
        markers=(
            "Customer ID",
            "Accepts Email Marketing",
            "Default Address Company",
            "Default Address Address1",
            "Default Address Phone",
            "Accepts SMS Marketing",
            "Total Spent",
            "Total Orders",
            "Tax Exempt",
        ),
        min_markers=4,
        columns=_columns(
            {
                "Customer ID": ("external_id", None),
                "Accepts Email Marketing": ("email_opt_in", None),
                "Accepts SMS Marketing": ("sms_opt_in", None),
                "Default Address Company": ("company", None),
                "Default Address Phone": ("phone", None),
                "Default Address Province Code": ("region", None),
                "Default Address Country Code": ("country", None),
                "Total Spent": ("money", None),
                "Tags": ("tags", "comma"),
            }
        ),
    ),
    Layout(
        name="shopify-legacy",
        title="Shopify customers export (before 2023)",
        markers=(
            "Accepts Marketing",
            "Total Spent",
            "Total Orders",
            "Tax Exempt",
            "Province Code",
            "Country Code",
            "Address1",
        ),
        min_markers=4,
        columns=_columns(
            {
                "Accepts Marketing": ("email_opt_in", None),
                "Province Code": ("region", None),
                "Country Code": ("country", None),
                "Province": ("custom", None),
                "Country": ("custom", None),
                "Total Spent": ("money", None),
                "Tags": ("tags", "comma"),
            }
        ),
    ),
    Layout(
        name="calendly",
        title="Calendly scheduled events export",
        markers=(
            "Invitee Name",
            "Invitee Email",
            "Invitee First Name",
            "Invitee Time Zone",
            "Event Type Name",
            "Start Date & Time",
            "Event Created Date & Time",
            "Invitee UUID",
            "Text Reminder Number",
        ),
        min_markers=3,
        columns=_columns(
            {
                "Invitee Name": ("full_name", None),
                "Invitee First Name": ("first_name", None),
                "Invitee Last Name": ("last_name", None),
                "Invitee Email": ("email", None),
                "Invitee Time Zone": ("timezone", None),
                "Invitee accepted marketing emails": ("email_opt_in", None),
                "Text Reminder Number": ("phone", "mobile"),
                "Event Type Name": ("service", None),
                # Limitation: Calendly's export does not say which zone its times are in
                # (unverified); they are read in the invitee's time zone.
                "Start Date & Time": ("starts_at", None),
                "Event Created Date & Time": ("created", None),
                "Canceled": ("cancelled", None),
                "Invitee UUID": ("external_id", None),
                "UTM Source": ("source", None),
                **_event_fields(
                    "User Name|Team|End Date & Time|Location|Canceled By|"
                    "Cancellation reason|UTM Campaign|UTM Medium|UTM Term|UTM Content|"
                    "Salesforce UUID|Event Price|Payment Currency|Guest Email(s)|"
                    "Invitee Reconfirmed|Marked as No-Show|Meeting Notes|Group|"
                    "User Email|Event UUID|Invitee scheduled by|Scheduling method",
                    sep="|",
                ),
            }
        ),
        patterns=_patterns(
            (r"question(\d+)", "question"), (r"response(\d+)", "response")
        ),
        event="appointment.booked",
    ),
    Layout(
        name="acuity",
        title="Acuity Scheduling appointments export",
        markers=(
            "Start Time",
            "End Time",
            "Calendar",
            "Appointment Price",
            "Date Scheduled",
            "Appointment ID",
            "Amount Paid Online",
            "Certificate Code",
            "Scheduled By",
            "Paid?",
        ),
        min_markers=3,
        columns=_columns(
            {
                "Start Time": ("starts_at", None),
                "Type": ("service", None),
                "Date Scheduled": ("created", None),
                "Appointment ID": ("external_id", None),
                "Timezone": ("timezone", None),
                **_event_fields(
                    "End Time|Calendar|Appointment Price|Paid?|Amount Paid Online|"
                    "Certificate Code|Label|Scheduled By",
                    sep="|",
                ),
            }
        ),
        event="appointment.booked",
    ),
    Layout(
        name="typeform",
        title="Typeform responses",
        markers=(
            "#",
            "Response Type",
            "Start Date (UTC)",
            "Stage Date (UTC)",
            "Submit Date (UTC)",
            "Network ID",
        ),
        min_markers=3,
        columns=_columns(
            {
                "#": ("external_id", None),
                "Submit Date (UTC)": ("created", None),
                "Response Type": ("response_type", None),
                **_event_fields(
                    "Start Date (UTC)|Stage Date (UTC)|Network ID", sep="|"
                ),
                "Tags": ("tags", "comma"),
            }
        ),
        event="form.submitted",
        naive_zone="UTC",
        questions=True,
    ),
    Layout(
        name="google-forms",
        title="Google Forms responses",
        markers=("Timestamp", "Email Address", "Score"),
        min_markers=2,
        # Limitation: "Timestamp" is the one header every Google Forms file
        # has, so any list with Timestamp and Email Address columns reads as
        # form responses; --format generic reads it as a plain list.
        min_distinctive=1,
        columns=_columns(
            {"Timestamp": ("created", None), "Score": ("event_field", None)}
        ),
        event="form.submitted",
        questions=True,
    ),
    Layout(
        name="zoho",
        title="Zoho CRM leads export",
        markers=(
            "Record Id",
            "Lead Owner",
            "Lead Source",
            "Lead Status",
            "Email Opt Out",
            "Created Time",
            "Modified Time",
            "Zip Code",
        ),
        min_markers=4,
        columns=_columns(
            {
                "Record Id": ("external_id", None),
                "Mobile": ("phone", "mobile"),
                "Phone": ("phone", None),
                "Email Opt Out": ("email_opt_out", None),
                "Created Time": ("created", None),
                "Description": ("notes", None),
            }
        ),
    ),
    Layout(
        name="salesforce",
        title="Salesforce leads (Data Loader, upper-case headers)",
        markers=(
            "ID",
            "FIRSTNAME",
            "LASTNAME",
            "EMAIL",
            "LEADSOURCE",
            "HASOPTEDOUTOFEMAIL",
            "CREATEDDATE",
            "MOBILEPHONE",
            "ISCONVERTED",
            "OWNERID",
            "DONOTCALL",
        ),
        min_markers=4,
        columns=_columns(
            {
                "ID": ("external_id", None),
                "FIRSTNAME": ("first_name", None),
                "LASTNAME": ("last_name", None),
                "NAME": ("full_name", None),
                "COMPANY": ("company", None),
                "EMAIL": ("email", None),
                "PHONE": ("phone", None),
                "MOBILEPHONE": ("phone", "mobile"),
                "FAX": ("phone", "fax"),
                "LEADSOURCE": ("source", None),
                "HASOPTEDOUTOFEMAIL": ("email_opt_out", None),
                "CREATEDDATE": ("created", None),
                "DESCRIPTION": ("notes", None),
                "STATE": ("region", None),
                "COUNTRY": ("country", None),
            }
        ),
        naive_zone="UTC",
    ),
    # Limitation: built from Salesforce's documented report column labels; no
    # real report export is in the corpus. Its dates are in the exporting
    # user's zone and are read in the workspace's.
    Layout(
        name="salesforce-report",
        title="Salesforce lead or contact report (Export Details)",
        markers=(
            "Lead ID",
            "Contact ID",
            "Lead Owner",
            "Contact Owner",
            "Lead Status",
            "Account Name",
            "Company / Account",
            "Mailing Street",
            "Mailing City",
            "Mailing State/Province",
        ),
        min_markers=3,
        columns=_columns(
            {
                "Lead ID": ("external_id", None),
                "Contact ID": ("external_id", None),
                "Account Name": ("company", None),
                "Company / Account": ("company", None),
                "Mailing State/Province": ("region", None),
                "Mailing Country": ("country", None),
            }
        ),
    ),
    Layout(
        name="cxm",
        title="cxm's own export (cxm contacts export)",
        markers=(
            "cxm_id",
            "emails",
            "phones",
            "email_consent",
            "sms_consent",
            "custom",
        ),
        # cxm_id is cxm's own; its JSON Lines export leaves empty keys out, so
        # a contact with only an email has just cxm_id and emails.
        min_markers=2,
        min_distinctive=1,
        # Consent columns alone are any list's: only cxm writes cxm_id.
        required="cxm_id",
        columns=_columns(
            {
                # A row with a cxm id is a contact a workspace already had:
                # imported as an existing contact, never as a new lead
                # (--map cxm_id=ignore imports the file as new leads).
                "cxm_id": ("cxm_id", None),
                "emails": ("email", None),
                "phones": ("phone", "tagged"),
                "tags": ("tags", "multi"),
                "email_consent": ("consent", "email"),
                "sms_consent": ("consent", "sms"),
                # A date in an opt-out column is the time of the opt-out.
                "email_opted_out_at": ("email_opt_out", None),
                "sms_opted_out_at": ("sms_opt_out", None),
                # Limitation: a consent's source is exported for the record
                # but not imported; the new workspace's is the import.
                "email_consent_source": ("ignore", None),
                "sms_consent_source": ("ignore", None),
                # Limitation: a row with any bouncing address imports all of
                # its addresses as bouncing (the importer marks whole rows).
                "bouncing_emails": ("bouncing", None),
                "sms_number_opted_out": ("number_opt_out", None),
                "created_at": ("created", None),
                "custom": ("custom_json", None),
            }
        ),
    ),
    Layout(
        name="vcard",
        title="vCard (.vcf) from Apple/iCloud, Google, Outlook",
        markers=(),
        min_markers=99,
        columns=_columns(
            {
                "Phone": ("phone", None),
                "Phone (mobile)": ("phone", "mobile"),
                "Phone (home)": ("phone", "home"),
                "Phone (work)": ("phone", "work"),
                "Phone (fax)": ("phone", "fax"),
                "Categories": ("tags", "comma"),
            }
        ),
    ),
    Layout(
        name="jsonl",
        title="JSON Lines (one object per line, keys like CSV headers)",
        markers=(),
        min_markers=99,
        questions=True,
    ),
    Layout(
        name="generic",
        title="Any CSV: columns matched by common names",
        markers=(),
        min_markers=99,
        questions=True,
    ),
]

LAYOUTS_BY_NAME = {layout.name: layout for layout in LAYOUTS}


def get_layout(name: str) -> Layout:
    try:
        return LAYOUTS_BY_NAME[name.strip().lower()]
    except KeyError:
        known = ", ".join(LAYOUTS_BY_NAME)
        raise InputError(
            f"unknown format {name!r}", hint=f"known formats: {known}"
        ) from None


def detect_layout(headers: list[str]) -> Layout:
    """The layout with the most evidence peculiar to it in the header, else
    generic.

    Only distinctive markers count as evidence: a plain 'First Name,Last
    Name,Email,Mobile Phone' list matches several of Salesforce's markers, yet
    nothing in it says Salesforce. Ties go to the layout whose markers the
    header holds best.
    """
    keys = {compact(h) for h in headers}
    best: tuple[int, float, int] = (0, 0.0, 0)
    chosen = LAYOUTS_BY_NAME["generic"]
    for layout in LAYOUTS:
        markers = layout.marker_keys()
        distinctive = layout.distinctive_keys()
        if not distinctive:
            continue
        if layout.required and compact(layout.required) not in keys:
            continue
        found = len(markers & keys)
        if found < min(layout.min_markers, len(markers)):
            continue
        evidence = len(distinctive & keys)
        if evidence < min(layout.min_distinctive, len(distinctive)):
            continue
        score = (evidence, found / len(markers), found)
        if score > best:
            best, chosen = score, layout
    return chosen


_QUESTION_EXCLUDE = ("opt", "status", "subscri", "consent", "marketing", "verif")

# Layouts that know no vendor's columns: their consent columns are recognised
# by the words in the header (``consent_role``), whatever the wording.
# Limitation: a vendor layout's or a form export's (Typeform, Google Forms)
# unknown columns are not read by their words: "Can we text you?" in a form,
# or an "SMS Unsubscribed" column in a HubSpot file, stays a custom field.
HEADER_RULE_LAYOUTS = {"generic", "jsonl"}


def question_role(key: str) -> Role | None:
    """A role for a question-like header ("What's your email address?")."""
    if any(word in key for word in _QUESTION_EXCLUDE):
        return None
    if "email" in key:
        return ("email", None)
    if "phone" in key or "mobile" in key or "cellnumber" in key:
        return ("phone", phone_kind(key))
    if "firstname" in key:
        return ("first_name", None)
    if "lastname" in key or "surname" in key:
        return ("last_name", None)
    if key.endswith("name") and ("your" in key or "full" in key):
        return ("full_name", None)
    return None


def role_for(layout: Layout, header: str, overrides: dict[str, Role]) -> Role:
    """What a column holds in this layout, with ``--map`` overrides first."""
    key = compact(header)
    if key in overrides:
        return overrides[key]
    if key in layout.columns:
        return layout.columns[key]
    for pattern, field_name in layout.patterns:
        match = pattern.match(key)
        if match:
            return (field_name, int(match.group(1)))
    if key in GENERIC:
        role = GENERIC[key]
        if role[0] == "phone" and role[1] is None:
            return ("phone", phone_kind(header))
        return role
    if layout.name in HEADER_RULE_LAYOUTS:
        role = consent_role(header)
        if role is not None:
            return role
    if layout.questions:
        role = question_role(key)
        if role is not None:
            return role
    return ("custom", None)


def parse_map_options(values: list[str] | None) -> dict[str, Role]:
    """``--map COLUMN=FIELD`` options as overrides keyed like headers."""
    overrides: dict[str, Role] = {}
    for value in values or []:
        column, sep, target = value.partition("=")
        target = target.strip().lower().replace("-", "_")
        if not sep or not column.strip():
            raise InputError(f"--map {value!r} is not COLUMN=FIELD")
        if target not in FIELDS:
            raise InputError(
                f"--map {value!r}: unknown field {target!r}",
                hint="fields: " + ", ".join(MAPPABLE_FIELDS),
            )
        argument: object = None
        if target == "tags":
            argument = "auto"
        elif target == "phone":
            argument = phone_kind(column)
        elif target in ("email_opt_in", "sms_opt_in", "opt_in"):
            argument = "strict"  # the user says it is a consent column: "no" counts
        overrides[compact(column)] = (target, argument)
    return overrides


def layout_rows() -> list[dict[str, str]]:
    """The layouts for ``cxm leads formats``."""
    return [
        {"name": layout.name, "title": layout.title, "events": layout.event or ""}
        for layout in LAYOUTS
    ]
