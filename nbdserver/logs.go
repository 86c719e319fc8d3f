package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/nbdroot/nbdroot/nbdserver/objstore"
)

// LogFlags are the log.Logger flags of the server log: a date and time on every line, as
// nbd-server's own log has, unless journald is the reader (JOURNAL_STREAM is set, see
// systemd.exec(5)): it stamps every line itself, and a second time would be noise.
func LogFlags(journal bool) int {
	if journal {
		return 0
	}
	return log.LstdFlags
}

// openLog returns the server's logger: the configuration file's logfile (nbd-server(5)
// logfile, appended to, always with times) when it names one, else o.Log. The file, if any,
// is closed by the returned function.
func (p *Plan) openLog(o Options) (*log.Logger, func(), error) {
	w := o.Log
	if w == nil {
		w = io.Discard
	}
	if p.LogFile == "" {
		return log.New(w, "", LogFlags(o.Journal)), func() {}, nil
	}
	f, err := os.OpenFile(p.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("logfile: %w", err)
	}
	return log.New(f, "", LogFlags(false)), func() { f.Close() }, nil
}

// SkippedError says an export was left out because its image cannot be opened.
type SkippedError struct {
	Export string
	Err    error
}

func (e *SkippedError) Error() string {
	return fmt.Sprintf("export %q: %v", e.Export, e.Err)
}

func (e *SkippedError) Unwrap() error { return e.Err }

// skipBroken leaves out the exports whose image is missing or cannot be looked at, as
// nbd-server does: one broken export must not take the others down. Files are stat'ed;
// objects (s3://) are looked up in the store (HEAD), so a missing object, a missing
// bucket or a store unreachable at the start skips the export like a missing file. It
// returns them, each a *SkippedError. With strict, the first one is an error instead, and
// so is a configuration with no export left. A store that cannot even be configured
// (credentials file, region) is an error: it is no fact about one export.
func (p *Plan) skipBroken(strict bool) ([]error, error) {
	var skipped []error
	var objs *objState // for the first object export: one connection for them all
	kept := p.Config.Exports[:0:0]
	for _, e := range p.Config.Exports {
		var err error
		if objstore.IsURL(e.Path) {
			if objs == nil {
				objs = newObjState(p.Config.Store)
			}
			var oe *objstore.OpError
			if _, _, err = objs.headImage(e.Path); err != nil && !errors.As(err, &oe) {
				return nil, &ConfigError{fmt.Sprintf("export %q", e.Name), err}
			}
		} else if _, serr := os.Stat(e.Path); serr != nil && !(errors.Is(serr, os.ErrNotExist) && e.CreateSize > 0) {
			err = serr
		}
		if err != nil {
			serr := &SkippedError{e.Name, fmt.Errorf("image: %w", err)}
			if strict {
				return nil, fmt.Errorf("%w (--strict)", serr)
			}
			skipped = append(skipped, serr)
			continue
		}
		kept = append(kept, e)
	}
	if len(kept) == 0 && len(skipped) > 0 {
		return nil, fmt.Errorf("no export can be served: %w", errors.Join(skipped...))
	}
	p.Config.Exports = kept
	return skipped, nil
}
