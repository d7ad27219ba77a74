# Dockerfile: builds the four services on Debian 12 (the libraries docs/architecture.md names,
# from Debian's packages) and gives each its own small runtime image: targets ingest, evaluator,
# notifier, report (docker-compose.yml uses them).
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config librdkafka-dev libpq-dev libcjson-dev libuv1-dev \
      libhttp-parser-dev libcurl4-openssl-dev libssl-dev libcmocka-dev libcsv-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Everything the top-level CMakeLists.txt configures: cmake/ and db/ (migrations embedded into
# the binaries), tests/ (add_subdirectory(tests), needs cmocka), tools/ (kpi-admin).
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY common common
COPY services services
COPY tools tools
COPY tests tests
COPY db db
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DKPI_WERROR=ON \
 && cmake --build /build -j"$(nproc)" --target kpi-ingest kpi-evaluator kpi-notifier kpi-report kpi-admin

FROM debian:bookworm-slim AS runtime
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librdkafka1 libpq5 libcjson1 libuv1 libhttp-parser2.9 libcsv3 libcurl4 libssl3 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home kpi
COPY config /etc/kpi
COPY --from=build /build/tools/kpi-admin /usr/local/bin/
ENV KPI_CATALOG=/etc/kpi/catalog.json
USER kpi

FROM runtime AS ingest
COPY --from=build /build/services/ingest/kpi-ingest /usr/local/bin/
EXPOSE 8080
CMD ["kpi-ingest"]

FROM runtime AS evaluator
COPY --from=build /build/services/evaluator/kpi-evaluator /usr/local/bin/
EXPOSE 8081
CMD ["kpi-evaluator"]

FROM runtime AS notifier
COPY --from=build /build/services/notifier/kpi-notifier /usr/local/bin/
EXPOSE 8082
CMD ["kpi-notifier"]

# The report reads PostgreSQL only (role kpi_reader); its templates and stylesheet are inside
# the binary.
FROM runtime AS report
COPY --from=build /build/services/report/kpi-report /usr/local/bin/
EXPOSE 8083
CMD ["kpi-report"]
