package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	_ "modernc.org/sqlite" // the same pure-Go SQLite driver FerretDB uses ("sqlite")
)

// FerretDB v1.24's SQLite backend creates its unique `_id` index on the
// expression `_ferretdb_sjson->"_id"`, but its queries, updates and deletes
// filter on `_ferretdb_sjson->'$._id'`. SQLite matches expression indexes
// textually, so that index is never used and every update by `_id` scans the
// whole table: the sink connector's upserts slow down linearly with the size of
// the collection (measured: 440 replaces/s at 100 documents, 17/s at 20,000).
//
// An extra, non-unique index on the exact expression the queries use makes
// those lookups logarithmic. FerretDB does not know about it (it is not listed
// by listIndexes) and SQLite drops it with the table.
const (
	lookupColumn   = `_ferretdb_sjson->'$._id'`
	lookupSuffix   = "_cp_id_lookup"
	lookupInterval = 2 * time.Second
)

// keepLookupIndexes adds the lookup index to every collection table of every
// database file in dir, now and every lookupInterval (new collections appear
// on first write), until ctx is done.
//
// Each pass opens a database file, adds what is missing and closes it again,
// and skips a file whose database and WAL are unchanged since a pass that
// found nothing to do. It must not keep a connection open between passes:
// dropDatabase closes FerretDB's connections and removes the database file,
// but SQLite removes a WAL database's -wal and -shm files only when the last
// connection to it closes. A connection of ours, kept open, left them behind,
// and the next database of that name replayed the old WAL into its new file:
// "disk I/O error (522)", "database disk image is malformed (11)", "file is not
// a database (26)" on the tests' and the benchmark's databases, which are
// dropped and made again on every run. A connection held for a pass still
// overlaps a drop now and then; removeOrphanedWAL cleans up at the next start.
func keepLookupIndexes(ctx context.Context, dir string, logger *slog.Logger) {
	settled := map[string]signature{} // files found with every index in place, as they were then

	ticker := time.NewTicker(lookupInterval)
	defer ticker.Stop()

	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
		seen := map[string]bool{}
		for _, file := range files {
			seen[file] = true
			sig, ok := signatureOf(file)
			if !ok {
				continue // dropped meanwhile
			}
			if settled[file] == sig {
				continue
			}
			delete(settled, file)
			created, err := ensureFile(ctx, file, logger)
			if err != nil {
				if ctx.Err() == nil {
					logger.Warn("lookup index: not ensured", "file", file, "error", err)
				}
				continue
			}
			if created == 0 {
				settled[file] = sig
			}
		}
		for file := range settled {
			if !seen[file] {
				delete(settled, file)
			}
		}

		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// signature tells whether a database file may have changed: its inode (a
// dropped and re-created database is a new file) and the size and time of its
// main file and its WAL (writes go to the WAL first).
type signature struct {
	ino             uint64
	size, walSize   int64
	mtime, walMtime int64
}

func signatureOf(file string) (signature, bool) {
	info, err := os.Stat(file)
	if err != nil {
		return signature{}, false
	}
	sig := signature{size: info.Size(), mtime: info.ModTime().UnixNano()}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		sig.ino = st.Ino
	}
	if wal, err := os.Stat(file + "-wal"); err == nil {
		sig.walSize, sig.walMtime = wal.Size(), wal.ModTime().UnixNano()
	}
	return sig, true
}

// ensureFile opens one database file, adds the missing lookup indexes and
// closes it; it returns how many it created.
func ensureFile(ctx context.Context, file string, logger *slog.Logger) (int, error) {
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	return ensureLookupIndexes(ctx, db, logger)
}

// removeOrphanedWAL removes the -wal and -shm files of databases whose file is
// gone, before FerretDB opens anything: they belong to a dropped database (see
// keepLookupIndexes), and SQLite would replay such a WAL into the next
// database of that name.
func removeOrphanedWAL(dir string, logger *slog.Logger) {
	for _, suffix := range []string{"-wal", "-shm"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"+suffix))
		for _, file := range files {
			if _, err := os.Stat(strings.TrimSuffix(file, suffix)); !os.IsNotExist(err) {
				continue
			}
			if err := os.Remove(file); err != nil {
				logger.Warn("orphaned WAL file not removed", "file", file, "error", err)
				continue
			}
			logger.Warn("orphaned WAL file of a dropped database removed", "file", file)
		}
	}
}

func ensureLookupIndexes(ctx context.Context, db *sql.DB, logger *slog.Logger) (int, error) {
	rows, err := db.QueryContext(ctx, `
		SELECT c.table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (
			SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || ?
		)`, lookupSuffix)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return 0, nil // a database without collections yet
		}
		return 0, err
	}

	var tables []string
	for rows.Next() {
		var table string
		if err := rows.Scan(&table); err != nil {
			rows.Close()
			return 0, err
		}
		tables = append(tables, table)
	}
	rows.Close()

	created := 0
	for _, table := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (%s)`, table+lookupSuffix, table, lookupColumn)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped meanwhile
			}
			return created, err
		}
		created++
		logger.Info("lookup index created", "table", table)
	}
	return created, nil
}
