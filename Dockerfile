# The one Trellis image: operator (manager), control plane and sidecar
# proxy, and the binaries later issues add. The reference build for real registries; on
# machines with no Docker engine `make images` assembles the same image from
# the same binaries with cmd/imagebuild (keep the two lists alike).
FROM golang:1.26 AS build
ARG VERSION=v0.1.0
ARG IMAGE=ghcr.io/trellis-mesh/trellis
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
      -ldflags "-s -w -X github.com/trellis-mesh/trellis/version.Version=${VERSION} -X github.com/trellis-mesh/trellis/version.Image=${IMAGE}" \
      -o /out/manager . && \
    CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
      -ldflags "-s -w -X github.com/trellis-mesh/trellis/version.Version=${VERSION} -X github.com/trellis-mesh/trellis/version.Image=${IMAGE}" \
      -o /out/controlplane ./cmd/controlplane && \
    CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
      -ldflags "-s -w -X github.com/trellis-mesh/trellis/version.Version=${VERSION} -X github.com/trellis-mesh/trellis/version.Image=${IMAGE}" \
      -o /out/proxy ./cmd/proxy

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/manager"]
