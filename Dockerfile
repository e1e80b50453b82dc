# rtcore server image: compiled hot paths, non-root, with a health check.
#
#   docker build -t rtcore .
#   docker run -p 8000:8000 -v $PWD/rtcore.toml:/etc/rtcore/rtcore.toml:ro rtcore
#
# Without a mounted config the image serves the starter config that
# `rtcore genconfig` wrote at build time (memory engine; its token secret and
# API key are baked into the image: mount your own config in production, or
# set RTCORE_CLIENT__TOKEN__HMAC_SECRET_KEY and RTCORE_API__KEY).

# -- build: compile the wheel (a failed compile is an error, never the slow twins)
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir "setuptools>=70" "Cython>=3.1,<3.4" wheel \
 && RTCORE_REQUIRE_EXTENSIONS=1 pip wheel --no-cache-dir --no-build-isolation \
      --wheel-dir /wheels ".[msgspec]"

# -- run: the wheel and its dependencies only, no compiler
FROM python:3.11-slim
RUN groupadd --system rtcore && useradd --system --gid rtcore --home-dir /nonexistent rtcore \
 && mkdir -p /etc/rtcore
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "rtcore[msgspec]" && rm -rf /wheels \
 && RTCORE_REQUIRE_EXTENSIONS=1 python -c "import rtcore.frames, rtcore.fanout" \
 && rtcore genconfig -o /etc/rtcore/rtcore.toml \
 && chown -R rtcore:rtcore /etc/rtcore
USER rtcore
EXPOSE 8000
# Listen on every interface of the container (a config file's http.address loses to this).
ENV RTCORE_REQUIRE_EXTENSIONS=1 RTCORE_HTTP__ADDRESS=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2).status != 200)"
ENTRYPOINT ["rtcore"]
CMD ["serve", "--config", "/etc/rtcore/rtcore.toml"]
