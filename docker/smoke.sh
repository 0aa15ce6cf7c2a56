#!/bin/sh
# Smoke test of the runtime image against PGEMBED_DATABASE_URL: migrate, ingest, search.
set -eu
pgembed db upgrade
printf '%s\n' \
    'PostgreSQL is a relational database.' \
    'pgvector adds vector similarity search to PostgreSQL.' \
    'The cat sat on the mat.' \
    | pgembed ingest smoke - --no-progress
pgembed search smoke 'vector search in a database' -k 2
