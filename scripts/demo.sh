#!/usr/bin/env bash
# cxm's main job on shipped sample data, in a fresh throw-away workspace:
# import a messy Google Contacts export, send the follow-ups that are due
# (through the outbox channel: nothing leaves the machine), show what went out
# and one contact's timeline.
set -euo pipefail
cd "$(dirname "$0")/.."

workspace="$PWD/demo-workspace"
rm -rf "$workspace"
export CXM_WORKSPACE="$workspace"

if [ -t 1 ]; then
  heading() { printf '\n\033[1m== %s\033[0m\n' "$1"; }
else
  heading() { printf '\n== %s\n' "$1"; }
fi

heading "A new workspace"
cxm init "$workspace" --name "Bright Smile Dental" --timezone America/Chicago
mkdir -p "$workspace/imports"
cp data/sample-leads.csv "$workspace/imports/"

heading "Importing imports/sample-leads.csv (a Google Contacts export with messy rows)"
cxm leads import "$workspace/imports/sample-leads.csv" --source "google-contacts"

heading "Rows that could not be imported, with the reason"
cat "$workspace/imports/sample-leads.rejects.csv"

heading "The follow-up sequences they triggered"
cxm sequences list

heading "Running the due follow-up steps once (cxm run --once)"
cxm run --once || true

heading "Messages that went out (data/outbox/: an .eml per email, texts in texts.jsonl)"
sqlite-utils query "$workspace/data/cxm.db" --table \
  "select m.id, m.channel, m.address as sent_to, m.template,
          substr(replace(m.body, char(10), ' '), 1, 60) as body
     from messages m where m.direction = 'outbound' order by m.id"

heading "What is scheduled next (cxm due --within 4d, first lines)"
# Through a file rather than a pipe: under pipefail, a command that `head`
# stops reading early would fail the demo.
cxm due --within 4d > "$workspace/due.txt"
head -n 8 "$workspace/due.txt"

heading "One contact's timeline (cxm timeline maria.lopez@example.com)"
cxm timeline maria.lopez@example.com

heading "Done"
echo "Explore further with: CXM_WORKSPACE=$workspace .venv/bin/cxm --help"
