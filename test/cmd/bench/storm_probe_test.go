package main

import (
	"context"
	"crypto/rand"
	"io"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	"github.com/nbdroot/nbdroot/nbdserver/objstore/weedtest"
)

func TestStormProbe(t *testing.T) {
	if os.Getenv("STORM_PROBE") == "" {
		t.Skip()
	}
	w := weedtest.Start(t)
	b := w.NewBucket(t)
	data := make([]byte, 512<<20)
	rand.Read(data)
	img := filepath.Join(t.TempDir(), "img")
	os.WriteFile(img, data, 0o600)
	cfg := w.Config()
	cfg.Timeout = 5 * time.Minute
	st, _ := objstore.Connect(context.Background(), cfg)
	if _, err := st.Bucket(b.Name()).Put(context.Background(), "img", data, objstore.Cond{}); err != nil {
		t.Fatal(err)
	}
	tr, err := loadTrace(stormTrace)
	if err != nil {
		t.Fatal(err)
	}
	for _, where := range []string{"file", "store"} {
		c := nbdserver.Config{StateDir: t.TempDir(), Logger: log.New(io.Discard, "", 0)}
		if os.Getenv("STORM_LOG") != "" {
			c.Logger = log.New(os.Stderr, where+" ", log.Lmicroseconds)
		}
		if where == "file" {
			c.Exports = []nbdserver.Export{{Name: "root", Path: img, Cow: true}}
		} else {
			c.Exports = []nbdserver.Export{{Name: "root", Path: "s3://" + b.Name() + "/img", Cow: true}}
			c.Store = nbdserver.StoreConfig{Config: w.Config()}
		}
		res, err := storm(context.Background(), c, tr, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s; write p99 %s flush p99 %s", where, res.summary(), ms(pct(res.writes, 99)), ms(pct(res.flushes, 99)))
	}
}
