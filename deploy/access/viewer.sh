#!/usr/bin/env sh
# The viewers' webserver: the same instance and code, but read-only. Dagster refuses every
# mutation through it (launching runs or backfills, re-executing, toggling schedules and
# sensors, wiping assets, cancelling runs): its GraphQL answers UnauthorizedError.
# Readers see runs, assets, metadata (redacted by convsync) and logs. Put it behind your SSO
# too: read-only is not private (see README "Privacy and access").
set -eu
exec dagster-webserver -w "${DAGSTER_WORKSPACE:-deploy/workspace.yaml}" \
  -h "${VIEWER_HOST:-127.0.0.1}" -p "${VIEWER_PORT:-3001}" --read-only
