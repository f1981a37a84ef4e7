#!/usr/bin/env bash
# Creates or updates, idempotently, what the Cloud Console shows and what runs the
# reminders: the log-based metrics (messagine/ops/metrics), the dashboard (messagine/ops/dashboard.json), the
# alert policies (messagine/ops/alerts), and the Cloud Scheduler job of the reminders function with
# its service account. cloudbuild.yaml runs it after the deploy; docs/operations.md says
# what each chart and alert means.
#
# Environment: PROJECT, REGION, FUNCTION (the webhook function's name; the reminders
# function is FUNCTION-reminders), JOB_SECRET (the header the job sends), ALERT_CHANNEL
# (a notification channel's full name, projects/P/notificationChannels/ID; empty: the
# alerts show in the console only) and SCHEDULE (cron, default every 10 minutes).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
schedule=${SCHEDULE:-"*/10 * * * *"}

g() { gcloud --project="$PROJECT" --quiet "$@"; }

# The definitions name the function as __FUNCTION__ and the channel as "__CHANNEL__".
render() {
  local out="$work/$(basename "$(dirname "$1")")-$(basename "$1")"
  if [ -n "${ALERT_CHANNEL:-}" ]; then
    sed -e "s/__FUNCTION__/$FUNCTION/g" -e "s#\"__CHANNEL__\"#\"$ALERT_CHANNEL\"#" "$1" > "$out"
  else
    sed -e "s/__FUNCTION__/$FUNCTION/g" -e 's#"__CHANNEL__"##' "$1" > "$out"
  fi
  echo "$out"
}

display_name() { sed -n 's/^  "displayName": "\(.*\)",$/\1/p' "$1" | head -n 1; }

echo "log-based metrics"
for file in "$here"/metrics/*.json; do
  name="$FUNCTION/$(basename "$file" .json)"
  config=$(render "$file")
  g logging metrics update "$name" --config-from-file="$config" >/dev/null 2>&1 ||
    g logging metrics create "$name" --config-from-file="$config"
done

echo "dashboard"
config=$(render "$here/dashboard.json")
dashboard=$(g monitoring dashboards list --filter="displayName=\"$(display_name "$config")\"" \
  --format='value(name)' | head -n 1)
if [ -n "$dashboard" ]; then
  g monitoring dashboards update "$dashboard" --config-from-file="$config"
else
  g monitoring dashboards create --config-from-file="$config"
fi

echo "alert policies"
for file in "$here"/alerts/*.json; do
  config=$(render "$file")
  policy=$(g alpha monitoring policies list \
    --filter="displayName=\"$(display_name "$config")\"" --format='value(name)' | head -n 1)
  if [ -n "$policy" ]; then
    g alpha monitoring policies update "$policy" --policy-from-file="$config"
  else
    g alpha monitoring policies create --policy-from-file="$config"
  fi
done

echo "the reminders job"
account="$FUNCTION-scheduler@$PROJECT.iam.gserviceaccount.com"
g iam service-accounts describe "$account" >/dev/null 2>&1 ||
  g iam service-accounts create "$FUNCTION-scheduler" \
    --display-name="Cloud Scheduler: calls $FUNCTION-reminders"
g functions add-invoker-policy-binding "$FUNCTION-reminders" --region="$REGION" \
  --member="serviceAccount:$account" >/dev/null
url=$(g functions describe "$FUNCTION-reminders" --gen2 --region="$REGION" \
  --format='value(serviceConfig.uri)')
job=(http "$FUNCTION-reminders" --location="$REGION" --schedule="$schedule"
     --http-method=POST --uri="$url" --oidc-service-account-email="$account"
     --attempt-deadline=320s)
if g scheduler jobs describe "$FUNCTION-reminders" --location="$REGION" >/dev/null 2>&1; then
  g scheduler jobs update "${job[@]}" --update-headers="X-Job-Secret=$JOB_SECRET"
else
  g scheduler jobs create "${job[@]}" --headers="X-Job-Secret=$JOB_SECRET"
fi
