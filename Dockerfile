# The leadscore worker image: `leadscore worker` (scoring, sink, sweep and the HTTP API).
# Used by docker-compose.yml; any number of containers of it form one consumer group.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/leadscore

# Only what the package build needs (pyproject lists these packages).
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY store ./store
COPY tables ./tables
COPY web ./web
# the browser SDK, served by the dashboard at /app/static/leadscore.min.js (package data there)
COPY sdk/js/dist/leadscore.min.js ./web/dashboard/static/leadscore.min.js
COPY core ./core
COPY devstack ./devstack
RUN pip install .

RUN useradd --create-home --uid 10001 leadscore \
    && mkdir -p /var/lib/leadscore \
    && chown leadscore /var/lib/leadscore
USER leadscore

# Table state (RocksDB) of this container only: rebuilt from the changelog topics if lost.
ENV LEADSCORE_DATA_DIR=/var/lib/leadscore \
    WEB_PORT=6066
VOLUME ["/var/lib/leadscore"]
EXPOSE 6066

HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('WEB_PORT', '6066'), timeout=4)"

# Other workers proxy single-lead reads to this one at WEB_HOST: default it to the container's
# hostname, which Docker resolves on the Compose network.
CMD ["sh", "-c", "WEB_HOST=\"${WEB_HOST:-$(hostname)}\" exec leadscore worker"]
