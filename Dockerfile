# A static Haven binary on a minimal image. The data and the master key live
# in two volumes, so that a copy of the data alone opens nothing:
#   docker build -t haven .
#   docker run -p 8080:8080 -v haven-data:/data -v haven-keys:/keys haven
# Back up haven-data; keep haven-keys apart (see the README).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /haven ./cmd/haven && mkdir /data /keys

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /haven /haven
COPY --from=build --chown=65532:65532 /data /data
COPY --from=build --chown=65532:65532 /keys /keys
ENV HAVEN_DATA=/data HAVEN_LISTEN=0.0.0.0:8080 HAVEN_MASTER_KEY_FILE=/keys/master.key
VOLUME /data /keys
EXPOSE 8080
ENTRYPOINT ["/haven"]
CMD ["serve"]
