# The everyday targets (test, lint, fuzz), then the benchmarks: each bench
# target reproduces one figure of BENCHMARKS.md on this machine. The load
# targets start a throwaway server (--spawn) on a fresh temporary data
# directory and report throughput, latency and peak RSS. Setup is in the
# README; nothing here is needed for it.

HAVEN := ./haven
LOADGEN := $(HAVEN) loadgen --spawn --duration 15s
FUZZTIME ?= 30s

.PHONY: haven test lint fuzz bench bench-small-32 bench-small-256 bench-small-256-nopause bench-photo \
	bench-formlist bench-flaky bench-micro bench-convert bench-convert-cli bench-export \
	bench-aggregate bench-large-object crash-test soak

haven:
	go build -o $(HAVEN) ./cmd/haven

# The whole suite, as the README and CI run it.
test:
	go test -count=1 -timeout 30m ./...

# gofmt, go vet and staticcheck (installed into Go's bin folder on first use).
lint:
	@test -z "$$(gofmt -l .)" || (gofmt -l . && echo "gofmt would change the files above" && exit 1)
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Every fuzz target for FUZZTIME each (their seeds run with the ordinary tests).
fuzz:
	for t in formspec:FuzzParseInstance formspec:FuzzFastTree formspec:FuzzParseForm formspec:FuzzExprRefs \
		formspec/xlsform:FuzzConvertMarkdown formspec/xlsform:FuzzReadSheetXML formspec/xlsform:FuzzReadXLSX app:FuzzSubmit export:FuzzODataFilter formspec:FuzzParseXPath; do \
		go test ./$${t%%:*} -run '^$$' -fuzz "^$${t##*:}$$" -fuzztime $(FUZZTIME) || exit 1; \
	done

# Every device-load figure, one after the other (about two minutes).
bench: bench-small-32 bench-small-256 bench-small-256-nopause bench-photo bench-formlist bench-flaky

bench-small-32: haven
	$(LOADGEN) --devices 32

bench-small-256: haven
	$(LOADGEN) --devices 256 --think 60ms

bench-small-256-nopause: haven
	$(LOADGEN) --devices 256

bench-photo: haven
	$(LOADGEN) --devices 32 --photo 100000

bench-formlist: haven
	$(LOADGEN) --devices 256 --mode formlist --think 100ms

bench-flaky: haven
	$(LOADGEN) --devices 32 --flaky 0.1

# Hot paths: parse and validate, encryption, blob writes, database insert.
# Compare two builds with: go run golang.org/x/perf/cmd/benchstat@latest old.txt new.txt
bench-micro:
	go test ./formspec ./storage -run '^$$' -bench . -benchtime 2s -count 6 | tee bench-micro.txt

bench-convert:
	go test ./formspec/xlsform -run '^$$' -bench Convert -benchtime 3s -count 4

# The whole `haven form convert` process; needs perf (Debian: linux-perf).
bench-convert-cli: haven
	perf stat -r 60 $(HAVEN) form convert --no-check formspec/xlsform/testdata/bench300.xlsx -o /tmp/haven-bench300.xml

bench-export:
	go test ./app -run '^$$' -bench BenchmarkExportCSV -benchtime 1x

bench-aggregate:
	go test ./app -run '^$$' -bench BenchmarkAggregate -benchtime 1x

# Streams a 500 MB file through encryption into a real MinIO server.
bench-large-object:
	HAVEN_LARGE_OBJECT_MB=500 go test ./storage -run TestS3LargeObjectStreams -count 1 -v

# Kills the server with SIGKILL under load and checks nothing acknowledged was lost.
crash-test:
	go test ./cmd/haven -run TestCrash -count 1 -v

# Thirty minutes of mixed load against a fresh Haven, recording what must
# stay flat (not in CI): docs/soak.csv and docs/soak.svg.
soak: haven
	./haven soak --duration 30m --out docs/soak.csv --plot docs/soak.svg
