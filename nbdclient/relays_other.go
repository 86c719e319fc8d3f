//go:build !unix

package nbdclient

import (
	"errors"
	"os"
)

func socketPair() (kernelEnd, relayEnd *os.File, err error) { return nil, nil, errors.ErrUnsupported }

func dupFD(fd int, name string) (*os.File, error) { return nil, errors.ErrUnsupported }
