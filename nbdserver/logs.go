package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"

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
	objErrs := p.headObjects()
	var skipped []error
	kept := p.Config.Exports[:0:0]
	for i, e := range p.Config.Exports {
		var err error
		if objstore.IsURL(e.Path) {
			var oe *objstore.OpError
			if err = objErrs[i]; err != nil && !errors.As(err, &oe) {
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

// storeUnanswered returns the first of skipped whose image object could not be looked up
// for another reason than its absence: the store did not answer, or refused. A reload
// keeps the current configuration then — an outage of the store must not take away
// exports clients use — where the start, with nothing to keep, skips the export.
func storeUnanswered(skipped []error) error {
	for _, err := range skipped {
		var oe *objstore.OpError
		if errors.As(err, &oe) && !errors.Is(err, objstore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// headObjects looks up the image objects of the exports (HEAD), at once: a store that
// does not answer makes each lookup wait for its timeout, and the start should wait for
// one timeout, not one per export. The result holds an error, or nil, by export index.
func (p *Plan) headObjects() []error {
	errs := make([]error, len(p.Config.Exports))
	var objs *objState // one connection for all
	var wg sync.WaitGroup
	for i, e := range p.Config.Exports {
		if !objstore.IsURL(e.Path) {
			continue
		}
		if objs == nil {
			objs = newObjState(p.Config.Store)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = objs.headImage(e.Path)
		}()
	}
	wg.Wait()
	return errs
}
