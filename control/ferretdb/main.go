// Command ferretdb runs FerretDB v1 with its embedded SQLite storage.
//
// It embeds FerretDB's public `ferretdb` package instead of building
// FerretDB's own main package: `go install .../cmd/ferretdb` panics at start
// because the module zip lacks the generated build/version/version.txt,
// while an embedding program is an ordinary module build from the Go proxy.
//
// It also keeps an `_id` lookup index on every collection table (see
// lookupindex.go): FerretDB v1.24's own `_id` index is built on an expression
// that its queries do not use, so without it every update scans the table.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/FerretDB/FerretDB/build/version"
	"github.com/FerretDB/FerretDB/ferretdb"
)

// setVersion reports the FerretDB module version in buildInfo.ferretdbVersion;
// an embedding build has no version.txt, so it would say "unknown".
func setVersion() {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	for _, dep := range info.Deps {
		if dep.Path == "github.com/FerretDB/FerretDB" {
			version.Get().Version = dep.Version
		}
	}
}

func main() {
	listen := flag.String("listen-addr", "127.0.0.1:27017", "TCP address to listen on")
	dataDir := flag.String("sqlite-dir", "data", "existing directory for the SQLite files (one per database)")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	setVersion()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "ferretdb: bad --log-level %q: %v\n", *level, err)
		os.Exit(2)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	if err := os.MkdirAll(*dataDir, 0o755); err != nil {
		logger.Error("cannot create the data directory", "dir", *dataDir, "error", err)
		os.Exit(1)
	}

	removeOrphanedWAL(*dataDir, logger) // before FerretDB opens any database (lookupindex.go says why)

	db, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: *listen},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: "file:" + *dataDir + "/",
	})
	if err != nil {
		logger.Error("cannot start FerretDB", "error", err)
		os.Exit(1)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	go keepLookupIndexes(ctx, *dataDir, logger)

	logger.Info("FerretDB listening", "addr", *listen, "data", *dataDir)
	if err := db.Run(ctx); err != nil {
		logger.Error("FerretDB stopped with an error", "error", err)
		os.Exit(1)
	}
	logger.Info("FerretDB stopped")
}
