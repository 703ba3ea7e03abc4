# A static Haven binary on a minimal image.
#   docker build -t haven .
#   docker run -p 8080:8080 -v haven-data:/data haven
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /haven ./cmd/haven && mkdir /data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /haven /haven
COPY --from=build --chown=65532:65532 /data /data
ENV HAVEN_DATA=/data HAVEN_LISTEN=0.0.0.0:8080
VOLUME /data
EXPOSE 8080
ENTRYPOINT ["/haven"]
CMD ["serve"]
