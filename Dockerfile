# healer's image: the daemon and nothing else. Configuration, policies and tokens come from
# outside (deploy/kustomize/base mounts them); the image holds no secret and no environment.
#
#   docker build -t healer:0.1.0 .
#   docker run -v $PWD/etc:/etc/healer:ro healer:0.1.0            # healer run --config ...
#   docker run healer:0.1.0 demo --duration 60                     # any other subcommand
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed non-root uid/gid, matched by the Deployment's securityContext.
RUN groupadd --system --gid 10001 healer \
    && useradd --system --uid 10001 --gid healer --home-dir /var/lib/healer \
       --shell /usr/sbin/nologin healer \
    && mkdir -p /etc/healer /var/lib/healer \
    && chown healer:healer /var/lib/healer

WORKDIR /src
COPY pyproject.toml README.md ./
COPY healer/ healer/
COPY policies/ policies/
RUN pip install . && rm -rf /src

WORKDIR /var/lib/healer
USER 10001:10001
EXPOSE 8080
VOLUME ["/var/lib/healer"]

# /healthz on the default listen port (http.listen in the configuration); the image has no
# curl, Python's standard library does the request.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["healer"]
CMD ["run", "--config", "/etc/healer/config.yaml"]
