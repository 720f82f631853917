#!/bin/sh
# Runs once, on an empty data volume (docker-entrypoint-initdb.d): a second database for MLflow's
# basic-auth user store, so its migrations never share a schema with the tracking store.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "CREATE DATABASE mlflow_auth OWNER \"$POSTGRES_USER\";"
