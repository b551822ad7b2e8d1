# svite in a container: Debian 12 with the release binary (Swift runtime and Foundation
# linked in, --static-swift-stdlib) and only the C libraries it links at run time, the
# same apt-get line as deploy/README.md. The deploy/k8s manifests run this image.
#
#   docker build -t svite .
#   docker run --rm svite --version
#   docker run --rm -u "$(id -u):$(id -g)" -v "$PWD/runs:/runs" svite train --out /runs/default   # Fashion-MNIST is in the image
#   docker run --rm -u "$(id -u):$(id -g)" -v /data/images:/data/images:ro -v "$PWD/runs:/runs" svite train \
#       --config imagefolder-tiny --set data.dir=/data/images --set model.num_classes=N --out /runs/mine
# (-u: the run directory belongs to you; the image's own user is uid 10001.)
#
# Build stage: Swift 6 on Debian 12 (SWIFT_IMAGE: any swift:6.x-bookworm image) with the
# -dev packages deploy/setup.sh installs.
ARG SWIFT_IMAGE=swift:6.3-bookworm
FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libzmq3-dev libopenblas-dev libdnnl-dev liblz4-dev \
        zlib1g-dev libcairo2-dev libcurl4-openssl-dev libturbojpeg0-dev libpng-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The manifest and sources first, so a change to docs does not rebuild; the test targets'
# folders must exist for the manifest to resolve.
COPY Package.swift ./
COPY Sources Sources
COPY Tests Tests
RUN swift build -c release --static-swift-stdlib \
 && install -D .build/release/svite /out/svite \
 && ! ldd /out/svite | grep -q "libswiftCore\|libFoundation"

# Run stage: the runtime libraries, the built-in data set, an unprivileged user whose
# uid/gid (10001) the deploy/k8s manifests name (runAsUser, runAsGroup, fsGroup).
FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libzmq5 libopenblas0-pthread libdnnl2 libgomp1 liblz4-1 zlib1g \
        libcairo2 libcurl4 libturbojpeg0 libpng16-16 fonts-dejavu-core dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 svite \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/svite svite \
 && mkdir -p /runs && chown svite:svite /runs
COPY --from=build /out/svite /usr/local/bin/svite
# Numeric, so Kubernetes' runAsNonRoot can check it without the image's /etc/passwd.
USER 10001:10001
WORKDIR /home/svite
# Workers (--bind), status (--status), Prometheus (--metrics): the ports the launchers use.
EXPOSE 5555 5556 9464
ENTRYPOINT ["svite"]
CMD ["--help"]
