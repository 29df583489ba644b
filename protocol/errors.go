package protocol

import (
	"errors"
	"fmt"
)

// AlsoVerification returns an error with err's message that matches err
// and also ErrVerification (errors.Is); nil stays nil. Other packages
// declare their verification failures with it:
//
//	var ErrUntrusted = protocol.AlsoVerification(errors.New("not trusted"))
func AlsoVerification(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w%.0w", err, ErrVerification)
}

func sentinel(msg string) error { return AlsoVerification(errors.New(msg)) }

// The protocol's errors, for errors.Is.
var (
	// ErrVerification is matched by every verification failure below:
	// callers that only need "the train does not verify" test for it.
	ErrVerification = errors.New("verification failed")
	// ErrInvalidConfig reports a train_config.json that cannot be a valid
	// config (bad JSON, a hex field that is not hex, duplicate route
	// indices…).
	ErrInvalidConfig = errors.New("invalid train config")
	// ErrBuild reports options that cannot make a train.
	ErrBuild = errors.New("cannot build train")
	// ErrNothingToDecrypt: the researcher decrypts a train that no station
	// has run yet, so it holds no results. Not tampering: a caller's
	// mistake (the CLI's usage class).
	ErrNothingToDecrypt = errors.New("nothing to decrypt yet")
	// ErrPostRunOrder reports a PostRun step called out of order: a
	// mistake of the caller, not of the train.
	ErrPostRunOrder = errors.New("post-run steps out of order")

	// Verification failures; each also matches ErrVerification.
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
	// ErrRouteCommitment: the route differs from the one the builder
	// signed in the route commitment (a station added, removed, moved or
	// re-keyed since the build), or the commitment does not verify.
	ErrRouteCommitment = sentinel("route differs from the builder's route commitment")
	// ErrIntegrity is every failure to decrypt or validate the train files
	// or the previous results with a station's or the creator's key: bad
	// padding, a bad length and a hash mismatch give one message and one
	// set of sentinels, so that a padding check cannot be told apart from
	// a hash check (AES-CBC has no MAC; a padding oracle would decrypt).
	ErrIntegrity = sentinel("decryption or integrity check failed")
	// ErrAlreadySigned: this station has signed the train already (its
	// route entry has a chain signature); there is nothing to do. Route
	// state, not tampering.
	ErrAlreadySigned = sentinel("already signed by this station")
	// ErrNotYourTurn: an earlier station on the route has not signed yet.
	// Route state, not tampering.
	ErrNotYourTurn = sentinel("not this station's turn")
)

// integrityError is ErrIntegrity for one tree (pht_train or pht_results).
// It also matches ErrDecryption and the tree's own sentinel (also), both
// for a padding and for a hash failure.
type integrityError struct {
	tree string
	also error
}

func (e *integrityError) Error() string {
	return "/opt/" + e.tree + ": " + ErrIntegrity.Error()
}

func (e *integrityError) Is(target error) bool {
	return target == ErrIntegrity || target == ErrVerification || target == ErrDecryption || target == e.also
}

var (
	errTrainIntegrity   error = &integrityError{tree: "pht_train", also: ErrImmutableChanged}
	errResultsIntegrity error = &integrityError{tree: "pht_results", also: ErrPreviousResultsChanged}
)

// integrity turns a decryption failure into the tree's integrity error and
// leaves other errors (I/O, a sink's failure) as they are.
func integrity(err, tree error) error {
	if errors.Is(err, ErrDecryption) {
		return tree
	}
	return err
}
