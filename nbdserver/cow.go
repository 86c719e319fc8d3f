package nbdserver

import "errors"

// overlay is a client's copy-on-write layer over a read-only image.
type overlay struct{ Backend }

func (o *overlay) describe() string { return "overlay" }

func (s *Server) overlayLocked(e *export, c client) (*overlay, error) {
	return nil, errors.New("copy-on-write exports are not available yet")
}

func (s *Server) releaseOverlayLocked(e *export, o *overlay) {}
