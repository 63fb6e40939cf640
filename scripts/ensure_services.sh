#!/usr/bin/env bash
# Make sure the machine's PostgreSQL and Mosquitto are running; start them the way
# this machine kind starts them, or fail loudly. Never lets tests skip silently.
set -uo pipefail
pg_up() { pg_isready -q -h 127.0.0.1 -p "${SONOPOLIS_TEST_PG_PORT:-5432}" 2>/dev/null; }
if ! command -v pg_isready >/dev/null; then
  echo "[sonopolis] FATAL: PostgreSQL client tools not installed (apt-get install postgresql)" >&2; exit 1
fi
if ! pg_up; then
  echo "[sonopolis] PostgreSQL is down: starting it"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "[sonopolis] FATAL: PostgreSQL is not reachable on 127.0.0.1 and could not be started" >&2; exit 1; }
fi
if ! command -v mosquitto >/dev/null; then
  echo "[sonopolis] FATAL: mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  echo "[sonopolis] Mosquitto is down: starting it"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf || true
  sleep 1
  (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null || { echo "[sonopolis] FATAL: Mosquitto could not be started" >&2; exit 1; }
fi
echo "[sonopolis] services: PostgreSQL and Mosquitto are up"
