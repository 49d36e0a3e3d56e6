# Builds the manager image from source with `docker buildx build` (it pulls golang and
# distroless). `make image` builds the equivalent image without any container engine or
# registry (hack/image), and is what CI, the e2e suite and `make release` use; this file is
# not built here (no Docker engine, no registry).
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
WORKDIR /workspace
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY api/ api/
COPY controllers/ controllers/
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w" -o manager ./cmd

# The manager is a Linux pod with no shell, running as a non-root user.
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager .
USER 65532:65532
ENTRYPOINT ["/manager"]
