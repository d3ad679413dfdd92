# The scraper daemon (`scraper run`), with its archive and rules on volumes.
#
#   docker build -t scraper .
#   docker run -d --name scraper --env-file .env \
#     -v "$PWD/state:/data/state" -v "$PWD/rules:/data/rules" \
#     -v "$PWD/scraper.toml:/data/scraper.toml:ro" scraper
#
# or `docker compose up -d` (compose.yaml). Logs go to standard error as key=value lines
# (SCRAPER_LOG_FORMAT=json for JSON). `docker kill -s HUP scraper` reloads scraper.toml; rule
# files reload by themselves. `docker stop` ends it cleanly within 10 seconds.
#
# The container runs as the unprivileged user "scraper" (uid 10001). A bind-mounted state/
# must be writable by it: `chown 10001 state`, or run with --user "$(id -u):$(id -g)".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md* ./
COPY scraper/ ./scraper/
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home scraper \
    && mkdir -p /data/state /data/rules \
    && chown -R scraper:scraper /data
WORKDIR /data
COPY --chown=scraper:scraper scraper.toml /data/scraper.toml
COPY --chown=scraper:scraper rules/ /data/rules/

ENV SCRAPER_CONFIG=/data/scraper.toml \
    SCRAPER_LOG_FORMAT=kv \
    SCRAPER_HEARTBEAT=/data/state/heartbeat

USER scraper
VOLUME ["/data/state", "/data/rules"]

# Healthy = the daemon is alive and making progress: it touches state/heartbeat (next to the
# database) every 15 s while its scheduler runs, its writer writes and its polls finish. A news
# source that fails does not make the container unhealthy: that is a health alert instead.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, time; p = os.environ.get('SCRAPER_HEARTBEAT', '/data/state/heartbeat'); sys.exit(0 if os.path.exists(p) and time.time() - os.stat(p).st_mtime < 120 else 1)"]

STOPSIGNAL SIGTERM
CMD ["scraper", "run"]
