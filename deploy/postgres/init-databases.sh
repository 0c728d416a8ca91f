#!/usr/bin/env bash
# One database and one login role (same name) per stateful part of prewarm, on the first start
# of the PostgreSQL container (the official image runs /docker-entrypoint-initdb.d/ once, on an
# empty data volume). Each role owns only its database; PUBLIC may not connect to any of them.
#
#   airflow          Airflow metadata and Celery results   AIRFLOW_DB_PASSWORD
#   mlflow           MLflow tracking and model registry    MLFLOW_DB_PASSWORD
#   feast_registry   Feast SQL registry                    FEAST_DB_PASSWORD
#   prewarm_ledger   the reservation ledger                LEDGER_DB_PASSWORD
#
# Idempotent (roles and databases that exist are kept, passwords reset). DB_NAME_PREFIX, empty
# in production, lets a test create the same set under unique names on a shared server.
# Safe to source as well as to run: no `set -u`, and it only exits on an error.
set -eo pipefail

create_database() {
    local name="${DB_NAME_PREFIX:-}$1" password="$2"
    if [ -z "$password" ]; then
        echo "init-databases: no password given for database $1" >&2
        exit 1
    fi
    psql --no-psqlrc -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
        --dbname "${POSTGRES_DB:-postgres}" -v name="$name" -v password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'name')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'name', :'password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name') \gexec
SQL
    echo "init-databases: database ${name} ready"
}

create_database airflow "${AIRFLOW_DB_PASSWORD:-}"
create_database mlflow "${MLFLOW_DB_PASSWORD:-}"
create_database feast_registry "${FEAST_DB_PASSWORD:-}"
create_database prewarm_ledger "${LEDGER_DB_PASSWORD:-}"
