package main

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
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
func keepLookupIndexes(ctx context.Context, dir string, logger *slog.Logger) {
	dbs := map[string]*sql.DB{}
	defer func() {
		for _, db := range dbs {
			db.Close()
		}
	}()

	ticker := time.NewTicker(lookupInterval)
	defer ticker.Stop()

	for {
		files, _ := filepath.Glob(filepath.Join(dir, "*.sqlite"))
		for _, file := range files {
			db := dbs[file]
			if db == nil {
				var err error
				db, err = sql.Open("sqlite", "file:"+file+"?_pragma=busy_timeout(10000)")
				if err != nil {
					logger.Warn("lookup index: cannot open database", "file", file, "error", err)
					continue
				}
				db.SetMaxOpenConns(1)
				dbs[file] = db
			}
			if err := ensureLookupIndexes(ctx, db, logger); err != nil && ctx.Err() == nil {
				logger.Warn("lookup index: not ensured", "file", file, "error", err)
			}
		}

		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func ensureLookupIndexes(ctx context.Context, db *sql.DB, logger *slog.Logger) error {
	rows, err := db.QueryContext(ctx, `
		SELECT c.table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (
			SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || ?
		)`, lookupSuffix)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return nil // a database without collections yet
		}
		return err
	}

	var tables []string
	for rows.Next() {
		var table string
		if err := rows.Scan(&table); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, table)
	}
	rows.Close()

	for _, table := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (%s)`, table+lookupSuffix, table, lookupColumn)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped meanwhile
			}
			return err
		}
		logger.Info("lookup index created", "table", table)
	}
	return nil
}
