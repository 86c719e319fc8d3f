package bootparam

import (
	"encoding/json"
	"fmt"
	"time"
)

// The JSON form of a Plan is what `nbdroot cmdline --json` prints and what tools may store;
// docs/cmdline.md documents its keys. Durations are written as Go duration strings ("30s")
// rather than time.Duration's nanosecond integers, which nobody reads correctly.

type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = jsonDuration(v)
	return nil
}

// nbdAlias has NBD's fields without its methods, so that the wrappers below can embed it
// without recursing.
type nbdAlias NBD

type nbdJSON struct {
	nbdAlias
	Timeout         jsonDuration `json:"timeout,omitempty"`
	DeadConnTimeout jsonDuration `json:"dead_conn_timeout,omitempty"`
	ConnectTimeout  jsonDuration `json:"connect_timeout,omitempty"`
}

// MarshalJSON writes the NBD connection with durations as strings ("30s").
func (n NBD) MarshalJSON() ([]byte, error) {
	return json.Marshal(nbdJSON{nbdAlias(n), jsonDuration(n.Timeout), jsonDuration(n.DeadConnTimeout), jsonDuration(n.ConnectTimeout)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (n *NBD) UnmarshalJSON(b []byte) error {
	var v nbdJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*n = NBD(v.nbdAlias)
	n.Timeout, n.DeadConnTimeout = time.Duration(v.Timeout), time.Duration(v.DeadConnTimeout)
	n.ConnectTimeout = time.Duration(v.ConnectTimeout)
	return nil
}

type planAlias Plan

type planJSON struct {
	planAlias
	RootDelay jsonDuration `json:"rootdelay,omitempty"`
}

// MarshalJSON writes the Plan with durations as strings ("5s").
func (p Plan) MarshalJSON() ([]byte, error) {
	return json.Marshal(planJSON{planAlias(p), jsonDuration(p.RootDelay)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *Plan) UnmarshalJSON(b []byte) error {
	var v planJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Plan(v.planAlias)
	p.RootDelay = time.Duration(v.RootDelay)
	return nil
}
