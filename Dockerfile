# The image of licensing and licensing-collector: one image, both binaries, so that the service,
# its `helm test` pod and the collector sidecar always run the same build (one tag to pin, scan
# and roll back), and the collector's probes can run `licensing healthcheck`. The collector is
# 12 MB of the 29 MB, and the image is the binaries and nothing else: FROM scratch, no shell, no
# package manager, a numeric non-root user, nothing written outside its volumes (it runs with a
# read-only root filesystem).
#
# Two ways to build it, one result:
#   scripts/build-image       builds the static binaries on this machine, then this file's
#                             `prebuilt` path: needs no registry, only buildah or podman
#   docker build .            (or buildah/podman) builds them in a Rust image: needs a registry
#
# Run: podman run --rm localhost/licensing:VERSION --help
#      the collector: podman run --entrypoint /usr/local/bin/licensing-collector ...
#      its health:    ... --entrypoint /usr/local/bin/licensing IMAGE healthcheck --address ...

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
# Where the binaries come from: `build` (in the Rust image) or `prebuilt` (target/image/out).
ARG BINARIES=build

# The static binaries, built from the sources (the same script, the same flags).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN scripts/build-image --binaries-only /out

# The static binaries, built beforehand by scripts/build-image.
FROM scratch AS prebuilt
COPY target/image/out/ /out/

FROM ${BINARIES} AS binaries

FROM scratch
COPY --from=binaries /out/usr/ /usr/
COPY --from=binaries /out/etc/ /etc/
# The database's default home; a volume mounted here is given to the user by the runtime.
COPY --from=binaries --chown=65532:65532 /out/var/lib/licensing/ /var/lib/licensing/
# Its data outlives the container: a runtime that is given no volume here makes one.
VOLUME /var/lib/licensing
USER 65532:65532
WORKDIR /var/lib/licensing
EXPOSE 50051 8081 9464
ENTRYPOINT ["/usr/local/bin/licensing"]
LABEL org.opencontainers.image.title="licensing" \
      org.opencontainers.image.description="Licence-management gRPC service and its usage-event collector" \
      org.opencontainers.image.licenses="Apache-2.0"
