# OneWindow hub image: `hubctl run` by default; docker-compose.yml also runs the
# dashboard from it (`hubctl dashboard ...`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
# Runtime dependencies only (no dev extra: the test database is not shipped).
RUN pip install . \
 && useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin onewindow

USER onewindow
# No ENTRYPOINT: the command is the whole command line (compose overrides it).
CMD ["hubctl", "run"]
