# tileserver in a container: pyvips-binary brings its own libvips, so a slim Python image is enough.
# Not built in this project's CI: its machines have no Docker engine (tests/test_deploy.py checks that the
# command and the health check agree with the CLI and the routes).
FROM python:3.11-slim
# libturbojpeg0: edge tiles cropped from the stored JPEG tiles losslessly (imaging/turbojpeg.py; optional)
RUN apt-get update && apt-get install -y --no-install-recommends libturbojpeg0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && mkdir -p /images /cache/derived && chown nobody /cache/derived
ENV TILESERVER_CORS="*" TILESERVER_DERIVE_DIR=/cache/derived
EXPOSE 8000
USER nobody
CMD ["tileserver", "serve", "/images", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
