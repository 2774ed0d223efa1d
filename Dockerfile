# terratiler service image: the API (`terratiler serve`) and, the same image, the Dask scheduler
# and workers (`dask scheduler`, `dask worker`): the workers run the engine (app.batch).
# rasterio's wheels bundle GDAL, so no system GDAL is needed.
#
#   docker build -t terratiler .
#   docker run --rm -v demo:/data/demo terratiler demo /data/demo      # the demo, explicitly
#   docker run --rm -p 127.0.0.1:8000:8000 -v demo:/data/demo:ro terratiler
#
# Runs as uid 10001 and works with a read-only root file system (writable: /tmp, /data).
# Behind a reverse proxy, trust its X-Forwarded-* headers with FORWARDED_ALLOW_IPS=<its address>.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    DASK_TEMPORARY_DIRECTORY=/tmp \
    TERRATILER_DATA_DIR=/data \
    TERRATILER_CATALOG=/data/demo

WORKDIR /srv/terratiler
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 terratiler \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home terratiler \
    && mkdir -p /data/demo && chown -R 10001:10001 /data

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["terratiler"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
