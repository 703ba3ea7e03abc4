package main

import (
	"fmt"
	"io"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/storage"
)

// keyCmd runs `haven key move-out [--data DIR] [--to PATH]`: an older
// Haven kept the master key inside the data directory (master.key), so a
// copy of the directory opened every project. This moves it out, to PATH
// or to the default key file in the configuration folder, and overwrites
// the old file. Haven refuses to start on a directory that still holds it.
func keyCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "move-out" {
		return haven.Errorf(haven.EINVALID, "usage: haven key move-out [--data DIR] [--to PATH]")
	}
	fs, data := flags("key move-out", stderr)
	to := fs.String("to", "", "where to keep the master key: a path outside the data directory (default: your configuration folder)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	path, err := storage.MoveKeyOut(*data.dir, *to)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "The master key of %s is now in %s, and no longer in the data directory.\n", *data.dir, path)
	if *to != "" {
		fmt.Fprintf(stdout, "Start Haven with --master-key-file %s (or HAVEN_MASTER_KEY_FILE).\n", path)
	}
	fmt.Fprintln(stdout, "Keep it apart from the data directory and its backups, and keep a copy somewhere safe.")
	return nil
}
