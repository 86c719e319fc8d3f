//go:build !linux

package hooks

import "context"

// StartKeeper is Linux only.
func StartKeeper(ctx context.Context, s *State) error { return nil }
