package bootparam

import (
	"strconv"
	"strings"
)

// ParamError says which boot parameter is wrong, what it said, why it is wrong and which form
// was expected. Its message is always one line, so the init can print it on the console and
// `nbdroot cmdline` on stderr without reformatting:
//
//	nbd_server="10.0.0.1:99999": port must be 1-65535 (form: HOST[:PORT], [IPV6]:PORT)
//
// A parameter that is missing altogether has Missing set and an empty Value:
//
//	root= is missing: nothing names the root filesystem (form: root=/dev/nbdN[pM] | …)
type ParamError struct {
	// Param is the parameter name without "=", e.g. "nbd_server" or "ip".
	Param string
	// Value is the value as written on the command line.
	Value string
	// Reason says in a few words what is wrong with Value.
	Reason string
	// Expected is the accepted form, in the notation of docs/cmdline.md.
	Expected string
	// Missing is true when the parameter is absent but needed; Value is then empty.
	Missing bool
	// Err is the underlying error, if any (e.g. from strconv), for errors.Is/As.
	Err error
}

// maxShownValue bounds how much of a value an error message quotes: a fuzzed or pasted
// multi-kilobyte value must not turn a one-line error into a screenful.
const maxShownValue = 120

// Error returns the one-line message `PARAM="VALUE": REASON (form: EXPECTED)`.
func (e *ParamError) Error() string {
	var b strings.Builder
	b.WriteString(e.Param)
	if e.Missing {
		b.WriteString("= is missing")
	} else {
		v := e.Value
		if len(v) > maxShownValue {
			v = v[:maxShownValue] + "…"
		}
		b.WriteString("=")
		// strconv.Quote escapes newlines and control bytes, which keeps the message one line.
		b.WriteString(strconv.Quote(v))
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(oneLine(e.Reason))
	}
	if e.Expected != "" {
		b.WriteString(" (form: ")
		b.WriteString(oneLine(e.Expected))
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *ParamError) Unwrap() error { return e.Err }

// oneLine replaces line breaks so that texts built from user input stay on one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(s)
}

// perr builds a ParamError for a present parameter.
func perr(param, value, reason, expected string) *ParamError {
	return &ParamError{Param: param, Value: value, Reason: reason, Expected: expected}
}

// missing builds a ParamError for an absent parameter.
func missing(param, reason, expected string) *ParamError {
	return &ParamError{Param: param, Missing: true, Reason: reason, Expected: expected}
}
