# The API, the worker, the migration and the staging helpers all run this one image; each
# container picks its `realname` subcommand. Dependencies are pinned by constraints.txt
# (refresh with `make constraints`); the base image by its exact tag.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/realname
COPY constraints.txt pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY alembic ./alembic
COPY realname_sdk ./realname_sdk
# Editable: `realname migrate` finds alembic.ini and alembic/ beside the package.
RUN pip install -c constraints.txt -e . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin realname

# A numeric user, so Kubernetes can check runAsNonRoot; the root filesystem can be read-only
# (nothing is written outside /tmp).
USER 10001
EXPOSE 8000
CMD ["realname", "serve", "--host", "0.0.0.0", "--port", "8000"]
