FROM python:3.11-slim
WORKDIR /srv/realname
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY alembic ./alembic
RUN pip install --no-cache-dir -e . && useradd --system realname
USER realname
EXPOSE 8000
CMD ["realname", "serve", "--host", "0.0.0.0", "--port", "8000"]
