// Package nbdserver is nbdroot's NBD server (`nbdroot serve`): listeners, exports, the
// file, block-device and copy-on-write backends, the exclusive-writer lock, allow-lists,
// limits, TLS, nbd-server's configuration format and systemd socket activation. The wire
// format comes from package nbd; the protocol rules cited in comments are those of
// NetworkBlockDevice/nbd doc/proto.md.
//
// What it must never do:
//   - acknowledge a FLUSH (or a FUA write) before the data it covers is on stable storage;
//   - let two clients write one image unless the export says "shared";
//   - write to the image of a copy-on-write export (it is opened read-only);
//   - trust a length from the wire without a bound (options 64 KiB, buffered payloads 32 MiB,
//     payload bytes in flight per connection 64 MiB; longer READs and WRITEs are streamed
//     through one 4 MiB buffer, see huge.go);
//   - hold unsent replies without a bound: per connection (4 MiB) and server-wide
//     (Config.ReplyMemory) a client that does not read its replies stops being read from;
//   - let one client address or identity hold more than its share of connection slots;
//   - crash or hang on bad input: a malformed request closes that connection, with a log line.
//
// In-process use (the QEMU tests do this):
//
//	srv, err := nbdserver.New(nbdserver.Config{
//		Exports: []nbdserver.Export{{Name: "root", Path: "/srv/root.img", Default: true}},
//		Logger:  log.New(os.Stderr, "", 0),
//	})
//	ln, _ := net.Listen("tcp", "127.0.0.1:0")
//	go srv.Serve(ctx, ln)          // returns when ctx ends or on Shutdown
//	...
//	srv.Shutdown(ctx)              // answer what was received, flush, close
//
// Run is the whole `nbdroot serve` command (configuration, listeners, signals) for callers
// that want the command's behaviour in a process of their own.
package nbdserver
