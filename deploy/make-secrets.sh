#!/usr/bin/env bash
# Generate every secret docker-compose.yml mounts, into deploy/secrets/ (gitignored).
#
#   deploy/make-secrets.sh [--dir DIR] [--sensors "ste-01-01 ste-01-02"] [--force]
#
# Why a script and not committed files: no password, token, key or password hash
# ever enters git or an image. Each file becomes one compose secret, mounted at
# /run/secrets/<name> only in the containers that need it (see docs/deployment.md).
#
# Idempotent: existing secrets are kept (rotating a database password needs an
# ALTER ROLE too: re-run `sonopolis db-init`), unless --force (which also changes the
# superuser's password: set it in the server first, docs/deployment.md "Rotation"). The Mosquitto
# password files are always rebuilt from the plain password files, so adding a
# sensor to --sensors and re-running is how a sensor is enrolled.
#
# Needs: openssl, and mosquitto_passwd (package mosquitto) or docker to run it from
# the pinned eclipse-mosquitto image. Sensors: --sensors or $SONOPOLIS_SENSORS.
# Extra broker host names for the certificates (the names field devices use):
# $SONOPOLIS_SMART_BROKER_NAMES / $SONOPOLIS_SAFE_BROKER_NAMES (space separated).
set -euo pipefail
umask 077

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="$HERE/secrets"
SENSORS="${SONOPOLIS_SENSORS:-ste-01-01 ste-01-02 ste-02-01}"
FORCE=0
MOSQUITTO_IMAGE="eclipse-mosquitto:2.0.20"
SENSOR_RE='^[a-z0-9][a-z0-9_-]{0,62}$'

while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --sensors) SENSORS="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "make-secrets: unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v openssl >/dev/null || { echo "make-secrets: openssl is required" >&2; exit 1; }
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
# Permissions: the DIRECTORY (0700, the operator's) keeps other host users out; the
# files are 0644 because compose bind-mounts them into containers whose users
# (sonopolis 10001, mosquitto 1883, postgres 70, grafana 472) differ from the
# operator's uid. Each file is mounted only into the services that declare it.
chmod 700 "$DIR"

for s in $SENSORS; do
  [[ "$s" =~ $SENSOR_RE ]] || { echo "make-secrets: '$s' is not a valid sensor id ($SENSOR_RE)" >&2; exit 2; }
done

# A random secret of 32 characters from [A-Za-z0-9]: safe inside a libpq URI.
random_secret() { openssl rand -base64 48 | tr -dc 'A-Za-z0-9' | cut -c1-32; }

# put NAME VALUE: write a secret file unless it exists (or --force).
put() {
  local f="$DIR/$1"
  if [ -s "$f" ] && [ "$FORCE" = 0 ]; then return; fi
  printf '%s' "$2" > "$f"
  chmod 644 "$f"
  echo "make-secrets: wrote $1"
}
secret() { put "$1" "$(random_secret)"; }
value() { cat "$DIR/$1"; }

# ---------------------------------------------------------------- PostgreSQL
secret postgres-admin-password
secret db-smart-password
secret db-safe-password
secret db-smart-reader-password   # Grafana's read-only role: a password file, no DSN
put sonopolis-admin-dsn "postgresql://postgres:$(value postgres-admin-password)@db:5432/postgres"
put db-smart-dsn "postgresql://sonopolis_smart:$(value db-smart-password)@db:5432/sonopolis"
put db-safe-dsn "postgresql://sonopolis_safe:$(value db-safe-password)@db:5432/sonopolis"

# ---------------------------------------------------------------- HTTP services
secret api-admin-token
secret grafana-admin-password

# ---------------------------------------------------------------- MQTT accounts
secret mqtt-smart-ingest-password
secret mqtt-smart-health-password
secret mqtt-safe-bridge-password
secret mqtt-safe-health-password
for s in $SENSORS; do
  secret "mqtt-smart-$s-password"   # each side its own password: one leak opens one side
  secret "mqtt-safe-$s-password"
done

hash_passwords() {  # hash_passwords OUTFILE user:secretfile ...
  local out="$1"; shift
  local tmp
  tmp="$(mktemp "$DIR/.passwd.XXXXXX")"
  for pair in "$@"; do
    printf '%s:%s\n' "${pair%%:*}" "$(value "${pair#*:}")" >> "$tmp"
  done
  if command -v mosquitto_passwd >/dev/null; then
    mosquitto_passwd -U "$tmp"
  elif command -v docker >/dev/null; then
    docker run --rm -u "$(id -u):$(id -g)" -v "$DIR:/s" "$MOSQUITTO_IMAGE" mosquitto_passwd -U "/s/$(basename "$tmp")"
  else
    rm -f "$tmp"; echo "make-secrets: needs mosquitto_passwd (apt-get install mosquitto) or docker" >&2; exit 1
  fi
  mv "$tmp" "$DIR/$out"
  chmod 644 "$DIR/$out"
  echo "make-secrets: hashed $out ($# accounts)"
}

smart_accounts=(svc.ingest:mqtt-smart-ingest-password svc.health:mqtt-smart-health-password)
safe_accounts=(svc.bridge:mqtt-safe-bridge-password svc.health:mqtt-safe-health-password)
for s in $SENSORS; do
  smart_accounts+=("$s:mqtt-smart-$s-password")
  safe_accounts+=("$s:mqtt-safe-$s-password")
done
hash_passwords mosquitto-smart.passwd "${smart_accounts[@]}"
hash_passwords mosquitto-safe.passwd "${safe_accounts[@]}"

# ---------------------------------------------------------------- TLS for the brokers
# A private CA for the broker certificates. Move ca.key offline after this run.
if [ ! -s "$DIR/ca.crt" ] || [ "$FORCE" = 1 ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/ca.key" 2>/dev/null
  chmod 600 "$DIR/ca.key"   # never mounted anywhere
  openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days 3650 -subj "/O=Sonopolis/CN=Sonopolis broker CA" -out "$DIR/ca.crt"
  chmod 644 "$DIR/ca.crt"
  echo "make-secrets: wrote ca.crt (keep ca.key offline)"
fi

broker_cert() {  # broker_cert NAME "extra dns names"
  local name="$1" extra="$2" san="DNS:$1,DNS:localhost,IP:127.0.0.1"
  if [ -s "$DIR/$name.crt" ] && [ "$FORCE" = 0 ]; then return; fi
  [ -s "$DIR/ca.key" ] || { echo "make-secrets: ca.key is offline: bring it back to issue $name.crt" >&2; exit 1; }
  for n in $extra; do san="$san,DNS:$n"; done
  openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/$name.key" 2>/dev/null
  openssl req -new -key "$DIR/$name.key" -subj "/O=Sonopolis/CN=$name" -out "$DIR/$name.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > "$DIR/$name.ext"
  openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial \
    -days 825 -sha256 -extfile "$DIR/$name.ext" -out "$DIR/$name.crt" 2>/dev/null
  rm -f "$DIR/$name.csr" "$DIR/$name.ext"
  chmod 644 "$DIR/$name.key" "$DIR/$name.crt"
  echo "make-secrets: wrote $name.crt/.key ($san)"
}
broker_cert broker-smart "${SONOPOLIS_SMART_BROKER_NAMES:-}"
broker_cert broker-safe "${SONOPOLIS_SAFE_BROKER_NAMES:-}"

echo "make-secrets: secrets ready in $DIR (sensors: $SENSORS)"
