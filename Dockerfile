# bonsai-server and the bonsai Python client on Debian 12.
#
#   buildah bud --format docker -t bonsai .        (or: docker build -t bonsai .)
#   docker run -p 50051:50051 -p 9464:9464 bonsai
#
# The build stage uses the project's one install script; the runtime stage has
# only the shared libraries the server links, Python for the client and the
# health check, and no compiler. `make image-test` builds and exercises it.

# ---------------------------------------------------------------- build
FROM debian:bookworm AS build
COPY deploy/install-deps.sh /src/deploy/install-deps.sh
RUN bash /src/deploy/install-deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY CMakeLists.txt /src/
COPY proto /src/proto
COPY server /src/server
COPY client/python /src/client/python
WORKDIR /src
# The build context has no .git: the revision for bonsai_build_info comes in
# as a build argument (deploy/docker/image-test.sh passes git's).
ARG BONSAI_REVISION=unknown
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
      -DBONSAI_BUILD_TESTS=OFF -DBONSAI_BUILD_BENCH=OFF -DBONSAI_REVISION="$BONSAI_REVISION" \
 && cmake --build build -j "$(nproc)" --target bonsai-server \
 && strip build/bin/bonsai-server

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim
ARG BONSAI_UID=10001
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libre2-9 libssl3 libzstd1 \
      libopenblas0 liblapacke libonnx1 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
      python3 python3-grpcio python3-protobuf python3-tqdm python3-yaml \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid "$BONSAI_UID" bonsai \
 && useradd --uid "$BONSAI_UID" --gid "$BONSAI_UID" --no-create-home --home-dir /tmp \
      --shell /usr/sbin/nologin bonsai
COPY --from=build /src/build/bin/bonsai-server /usr/local/bin/bonsai-server
# The client with the stubs generated in the build stage, on Python's path.
COPY --from=build /src/client/python/bonsai /usr/local/lib/python3.11/dist-packages/bonsai
COPY deploy/docker/healthcheck.py /usr/local/bin/bonsai-healthcheck
RUN printf '#!/bin/sh\nexec python3 -m bonsai "$@"\n' > /usr/local/bin/bonsai \
 && chmod 0755 /usr/local/bin/bonsai /usr/local/bin/bonsai-healthcheck \
 && python3 -m compileall -q /usr/local/lib/python3.11/dist-packages/bonsai

# Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bonsai-healthcheck", "127.0.0.1:50051"]
ENTRYPOINT ["/usr/local/bin/bonsai-server"]
CMD ["--listen=0.0.0.0:50051", "--metrics_listen=0.0.0.0:9464"]
LABEL org.opencontainers.image.title="bonsai" \
      org.opencontainers.image.description="gRPC model-compression service: pruning, N:M sparsity, binarization of ONNX and safetensors models"
