# moq-relay in a container (docker or podman):
#   docker build -t moq-relay .
#   docker run --rm -p 4443:4443/udp -p 4443:4443/tcp moq-relay
# The relay runs as user moq (uid 10001) from the venv /opt/moq-relay, with the config
# /etc/moq-relay/relay.toml (configs/container.toml; mount your own over it). The internal
# listener (/health for the HEALTHCHECK, /metrics, /nodes) is on port 9090: unauthenticated,
# so publish it to a private address only, if at all.
#
# BASE: any Debian-like image with python3 (>= 3.11) and its venv module; the default is the
# official slim Python. For machines without a registry: an mmdebstrap'd bookworm with
# python3, python3-venv and ca-certificates, imported as an image (see README.md).
ARG BASE=python:3.12-slim

FROM ${BASE} AS install
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# Only what `pip install .` needs: the package and its metadata.
COPY pyproject.toml README.md /src/
COPY relay /src/relay
RUN python3 -m venv /opt/moq-relay \
    && /opt/moq-relay/bin/pip install /src \
    && rm -rf /src \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin moq
ENV PATH=/opt/moq-relay/bin:$PATH PYTHONUNBUFFERED=1

# The clock publisher of examples/ (moq-rs, the `examples` extra), for compose.yaml:
#   docker build --target examples -t moq-relay-examples .
FROM install AS examples
COPY pyproject.toml README.md /src/
COPY relay /src/relay
RUN pip install '/src[examples]' && rm -rf /src
COPY examples /opt/moq-relay/examples
WORKDIR /opt/moq-relay/examples
USER moq
# Python as PID 1 has no SIGTERM handler; SIGINT is its KeyboardInterrupt, which the script ends on.
STOPSIGNAL SIGINT
ENTRYPOINT ["python3", "clock_publish.py"]
CMD ["--url", "moql://localhost:4443/anon"]

# The relay (the default target).
FROM install AS relay
COPY configs/container.toml /etc/moq-relay/relay.toml
USER moq
# 4443: QUIC (raw moql:// and WebTransport) on UDP, HTTP on TCP; 9090: the internal listener.
EXPOSE 4443/udp 4443/tcp 9090/tcp
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9090/health', timeout=4).status != 200)"]
ENTRYPOINT ["moq-relay"]
CMD ["/etc/moq-relay/relay.toml"]
