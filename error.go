package haven

import (
	"errors"
	"fmt"
)

// Error codes: what kind of failure an Error is. The server maps each to an
// HTTP status in one place (server/errors.go).
const (
	EINVALID      = "invalid"      // the input is malformed or breaks a rule
	EUNAUTHORIZED = "unauthorized" // no or wrong credentials
	EFORBIDDEN    = "forbidden"    // credentials fine, rights missing
	ENOTFOUND     = "not_found"
	ECONFLICT     = "conflict"  // clashes with what is stored (a closed form, an edit of an old version)
	EDUPLICATE    = "duplicate" // something with the same id or name already exists
	ETOOLARGE     = "too_large" // over a size limit
	ETOOMANY      = "too_many"  // too many attempts: wait (Details["retryAfterSeconds"])
	ETIMEOUT      = "timeout"   // the request did not arrive in time
	EUNAVAILABLE  = "unavailable"
	// ENOTIMPLEMENTED is a well-formed request for something Haven does
	// not offer (an OData feature ODK Central does not offer either).
	ENOTIMPLEMENTED = "not_implemented"
	EINTERNAL       = "internal"
)

// Error is an application error: a machine code, a message a person can act
// on, and optional details (for a refused submission, every offending path).
type Error struct {
	Code    string
	Message string
	Details map[string]any
	Err     error // the underlying cause, never shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("haven %s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("haven %s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other error and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the human message of the first *Error in err's chain,
// and a generic sentence for anything else (internal details are logged, not shown).
func ErrorMessage(err error) string {
	var e *Error
	if err == nil {
		return ""
	} else if errors.As(err, &e) {
		return e.Message
	}
	return "Something went wrong on the server. Nothing was changed; please try again later."
}
