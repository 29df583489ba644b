package protocol

import "errors"

// ErrVerification is matched (errors.Is) by every verification failure
// below: callers that only need "the train does not verify" test for it.
var ErrVerification = errors.New("verification failed")

// ErrInvalidConfig reports a train_config.json that cannot be a valid
// config (bad JSON, a hex field that is not hex, duplicate route indices…).
var ErrInvalidConfig = errors.New("invalid train config")

type verificationError struct{ msg string }

func (e *verificationError) Error() string        { return e.msg }
func (e *verificationError) Is(target error) bool { return target == ErrVerification }

func sentinel(msg string) error { return &verificationError{msg} }

// Verification failures; each also matches ErrVerification.
var (
	ErrImmutableChanged       = sentinel("immutable files changed")
	ErrUserSignature          = sentinel("user signature invalid")
	ErrBuilderSignature       = sentinel("builder signature invalid")
	ErrPreviousResultsChanged = sentinel("previous results changed")
	ErrResultSignature        = sentinel("results signature invalid")
	ErrChainSignature         = sentinel("chain signature invalid")
	ErrStationNotOnRoute      = sentinel("station not on route")
	ErrWrongPrivateKey        = sentinel("wrong private key")
	ErrUnsignedFile           = sentinel("unsigned train file")
	ErrDecryption             = sentinel("decryption failed")
)
