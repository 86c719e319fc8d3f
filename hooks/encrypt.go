package hooks

import (
	"context"
	"errors"
)

// Encrypt unlocks the LUKS device named by cryptdevice= and maps it with dm-crypt.
type Encrypt struct{}

// Name implements Hook.
func (Encrypt) Name() string { return "encrypt" }

// Run implements Hook.
func (Encrypt) Run(ctx context.Context, s *State) error {
	if s.Plan.Crypt == nil {
		return nil
	}
	return fail("encrypt", "cryptdevice="+s.Plan.Crypt.Device+":"+s.Plan.Crypt.Name, "unlock", errors.New("LUKS unlock is not in this build yet"))
}

// Summary implements Summarizer.
func (Encrypt) Summary(s *State) string {
	if s.Plan.Crypt == nil {
		return "no cryptdevice= (nothing to unlock)"
	}
	return s.Plan.Crypt.Device + " → " + s.CryptDevice
}
