# terratiler service image. rasterio's wheels bundle GDAL, so no system GDAL is needed.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TERRATILER_DATA_DIR=/data \
    TERRATILER_CATALOG=/data/demo

WORKDIR /srv/terratiler
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir . && useradd --system --home /data terratiler \
    && mkdir -p /data && chown terratiler /data

USER terratiler
EXPOSE 8000
# Generate the demo catalog on first start when the catalog is the default folder.
CMD ["sh", "-c", "if [ \"$TERRATILER_CATALOG\" = /data/demo ] && [ ! -f /data/demo/collection.json ]; then terratiler demo /data/demo; fi; exec terratiler serve --host 0.0.0.0 --port 8000 --forwarded-allow-ips '*'"]
